//! Owned copies of `tracing` field values, for the places that keep or resend them after the callsite's borrow
//! has ended: a span's values kept for the lines logged inside it, and an ERROR event handed to the span exporter
//! again under another parent.

use std::error::Error;
use std::fmt;

use tracing::Value;
use tracing::field::{DebugValue, Field, FieldSet, ValueSet, Visit};

/// An error copied with its chain of causes, each with its own text, so whoever walks `source()` writes what
/// the original would have.
#[derive(Debug)]
pub(crate) struct CapturedError {
    message: String,
    source: Option<Box<CapturedError>>,
}

impl CapturedError {
    /// A copy of `error` and its causes.
    pub(crate) fn of(error: &(dyn Error + 'static)) -> Self {
        CapturedError {
            message: error.to_string(),
            source: error
                .source()
                .map(|cause| Box::new(CapturedError::of(cause))),
        }
    }
}

impl fmt::Display for CapturedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for CapturedError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|cause| cause as &(dyn Error + 'static))
    }
}

/// Text that a `Debug` value formatted to, shown again through `Debug` as it was (no quotes added).
pub(crate) struct Verbatim(pub(crate) String);

impl fmt::Debug for Verbatim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One value as a [`Visit`] saw it.
enum OwnedValue {
    F64(f64),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    Bool(bool),
    Str(String),
    Debug(DebugValue<Verbatim>),
    Error(CapturedError),
}

/// The values of an event (or of any field set), copied by position, to be recorded again as a new
/// [`ValueSet`] that makes the same `Visit` calls.
pub(crate) struct OwnedValues(Vec<Option<OwnedValue>>);

impl OwnedValues {
    /// Copies what `record` records for the fields of `fields`.
    pub(crate) fn of(fields: &FieldSet, record: impl FnOnce(&mut dyn Visit)) -> Self {
        let mut values = OwnedValues(std::iter::repeat_with(|| None).take(fields.len()).collect());
        record(&mut values);
        values
    }

    /// Calls `with` with a value set of `fields` (the field set the values were copied from) holding the values.
    pub(crate) fn with_value_set<R>(
        &self,
        fields: &FieldSet,
        with: impl FnOnce(&ValueSet<'_>) -> R,
    ) -> R {
        // `&dyn Error` is the `Value` that records an error; it needs a place to live while the set does.
        let errors: Vec<Option<&(dyn Error + 'static)>> = self
            .0
            .iter()
            .map(|value| match value {
                Some(OwnedValue::Error(error)) => Some(error as &(dyn Error + 'static)),
                _ => None,
            })
            .collect();
        let values: Vec<Option<&dyn Value>> = self
            .0
            .iter()
            .zip(&errors)
            .map(|(value, error)| -> Option<&dyn Value> {
                Some(match value.as_ref()? {
                    OwnedValue::F64(v) => v,
                    OwnedValue::I64(v) => v,
                    OwnedValue::U64(v) => v,
                    OwnedValue::I128(v) => v,
                    OwnedValue::U128(v) => v,
                    OwnedValue::Bool(v) => v,
                    OwnedValue::Str(v) => v,
                    OwnedValue::Debug(v) => v,
                    OwnedValue::Error(_) => error.as_ref()?,
                })
            })
            .collect();
        with(&fields.value_set_all(&values))
    }

    fn set(&mut self, field: &Field, value: OwnedValue) {
        if let Some(slot) = self.0.get_mut(field.index()) {
            *slot = Some(value);
        }
    }
}

impl Visit for OwnedValues {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, OwnedValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, OwnedValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field, OwnedValue::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.set(field, OwnedValue::I128(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.set(field, OwnedValue::U128(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, OwnedValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, OwnedValue::Str(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        self.set(field, OwnedValue::Error(CapturedError::of(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(
            field,
            OwnedValue::Debug(tracing::field::debug(Verbatim(format!("{value:?}")))),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use tracing::field::{Field, Visit};

    use super::OwnedValues;

    /// Writes every `Visit` call as `kind name=value`.
    #[derive(Default)]
    struct Calls(Vec<String>);

    impl Visit for Calls {
        fn record_f64(&mut self, field: &Field, value: f64) {
            self.0.push(format!("f64 {field}={value}"));
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.0.push(format!("i64 {field}={value}"));
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.0.push(format!("u64 {field}={value}"));
        }
        fn record_i128(&mut self, field: &Field, value: i128) {
            self.0.push(format!("i128 {field}={value}"));
        }
        fn record_u128(&mut self, field: &Field, value: u128) {
            self.0.push(format!("u128 {field}={value}"));
        }
        fn record_bool(&mut self, field: &Field, value: bool) {
            self.0.push(format!("bool {field}={value}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push(format!("str {field}={value}"));
        }
        fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
            let mut text = format!("error {field}={value}");
            let mut source = value.source();
            while let Some(cause) = source {
                text.push_str(&format!(" <- {cause}"));
                source = cause.source();
            }
            self.0.push(text);
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.push(format!("debug {field}={value:?}"));
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not save")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// The calls a callsite's own values make.
    struct Seen(std::sync::Mutex<Vec<(Vec<String>, Vec<String>)>>);

    impl tracing::Subscriber for Seen {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut original = Calls::default();
            event.record(&mut original);
            let copied = OwnedValues::of(event.metadata().fields(), |visit| event.record(visit));
            let mut again = Calls::default();
            copied.with_value_set(event.metadata().fields(), |set| set.record(&mut again));
            self.0.lock().unwrap().push((original.0, again.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn copied_values_make_the_same_visit_calls_as_the_originals() {
        let seen = std::sync::Arc::new(Seen(Default::default()));
        tracing::subscriber::with_default(seen.clone(), || {
            let error = Outer(std::io::Error::other("disk full"));
            tracing::error!(
                loss = 0.25,
                delta = -3i64,
                step = 7u64,
                big = i128::MIN,
                huge = u128::MAX,
                ok = false,
                model = "lightgbm",
                shape = ?(3, 4),
                error = &error as &(dyn std::error::Error + 'static),
                "step {} failed", 7
            );
            tracing::warn!(unset = tracing::field::Empty, "only a message");
        });
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (original, again) in seen.iter() {
            assert_eq!(original, again);
        }
        assert!(
            seen[0]
                .1
                .contains(&"error error=could not save <- disk full".to_string()),
            "{:?}",
            seen[0].1
        );
        assert_eq!(seen[0].1.len(), 10, "{:?}", seen[0].1);
    }
}
