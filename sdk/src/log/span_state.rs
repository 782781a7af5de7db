//! The per-span state every sink keeps: a span's fields, formatted once when the span is created or recorded,
//! then added to each record logged inside it. One mechanism for the JSON, text and OTLP sinks.

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::mask::Masker;

/// A sink's formatted copy of a span's fields, stored in the span's extensions.
pub(crate) trait SpanState: Default + Send + Sync + 'static {
    /// Adds fields (from the span's creation or a later `record`), masked by `masker` when there is one.
    fn record(&mut self, fields: &dyn RecordFields, masker: Option<&Masker>);

    /// An empty state with room for a span declaring `fields` fields, so recording them does not reallocate.
    fn for_fields(fields: usize) -> Self {
        let _ = fields;
        Self::default()
    }
}

/// A sink's span state and the layer that keeps it. With two layers of one kind (a JSON file and the MLflow
/// log handler in JSON), the first stores and records the fields and every other one reads them: formatting is
/// the same for all (one masker), and a second copy would panic in `Extensions::insert`.
pub(crate) struct Owned<T> {
    owner: u64,
    /// The formatted fields.
    pub(crate) state: T,
}

/// A new layer's identity for [`Owned`].
pub(crate) fn next_owner() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// For `Layer::on_new_span`: stores the new span's fields (unless another layer of the kind did).
pub(crate) fn on_new_span<S, T>(
    attrs: &Attributes<'_>,
    id: &Id,
    ctx: &Context<'_, S>,
    masker: Option<&Masker>,
    owner: u64,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: SpanState,
{
    let declared = attrs.fields().len();
    // A span without fields adds nothing to records, and cannot record any later.
    if declared == 0 {
        return;
    }
    let Some(span) = ctx.span(id) else { return };
    if span.extensions().get::<Owned<T>>().is_some() {
        return;
    }
    let mut state = T::for_fields(declared);
    state.record(attrs, masker);
    span.extensions_mut().insert(Owned { owner, state });
}

/// For `Layer::on_record`: adds fields recorded later (only the layer that stored them).
pub(crate) fn on_record<S, T>(
    id: &Id,
    values: &Record<'_>,
    ctx: &Context<'_, S>,
    masker: Option<&Masker>,
    owner: u64,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: SpanState,
{
    let Some(span) = ctx.span(id) else { return };
    let mut extensions = span.extensions_mut();
    if let Some(owned) = extensions.get_mut::<Owned<T>>()
        && owned.owner == owner
    {
        owned.state.record(values, masker);
    }
}

/// A visitor that writes into a buffer and can say how much it has written, so [`Keyed`] can tell where each
/// field ends.
pub(crate) trait Written {
    /// The length of the buffer fields are written to.
    fn written(&self) -> usize;
}

/// A buffer of formatted fields that a segment of can be copied from.
pub(crate) trait Buffer: Default {
    /// An empty buffer with room for `bytes`.
    fn with_room(bytes: usize) -> Self;
    /// Appends `self[range]` to `out`.
    fn copy_range(&self, range: std::ops::Range<usize>, out: &mut Self);
}

impl Buffer for Vec<u8> {
    fn with_room(bytes: usize) -> Self {
        Vec::with_capacity(bytes)
    }
    fn copy_range(&self, range: std::ops::Range<usize>, out: &mut Self) {
        out.extend_from_slice(&self[range]);
    }
}

impl Buffer for String {
    fn with_room(bytes: usize) -> Self {
        String::with_capacity(bytes)
    }
    fn copy_range(&self, range: std::ops::Range<usize>, out: &mut Self) {
        // Segments end where a whole field ends, so the range lies on character boundaries.
        out.push_str(&self[range]);
    }
}

/// A span's formatted fields with the key and end of each, so that a record gets every key once: the event's
/// own value, else the innermost span's.
#[derive(Default)]
pub(crate) struct Segments<B> {
    /// The formatted fields, back to back.
    pub(crate) text: B,
    /// Each field's key and the end of its segment in `text`, in order.
    pub(crate) ends: Vec<(&'static str, usize)>,
}

impl<B: Buffer> Segments<B> {
    /// Room for `fields` fields of a typical size (a key and a short value).
    pub(crate) fn for_fields(fields: usize) -> Self {
        Segments {
            text: B::with_room(fields * 32),
            ends: Vec::with_capacity(fields),
        }
    }

    /// After a `record`: a key recorded again keeps only its latest value.
    pub(crate) fn keep_last(&mut self) {
        let duplicated = self
            .ends
            .iter()
            .enumerate()
            .any(|(i, (key, _))| self.ends[i + 1..].iter().any(|(k, _)| k == key));
        if !duplicated {
            return;
        }
        let mut kept = Segments::<B>::default();
        let (mut start, mut kept_end) = (0, 0);
        for (i, &(key, end)) in self.ends.iter().enumerate() {
            if !self.ends[i + 1..].iter().any(|(k, _)| *k == key) {
                self.text.copy_range(start..end, &mut kept.text);
                kept_end += end - start;
                kept.ends.push((key, kept_end));
            }
            start = end;
        }
        *self = kept;
    }

    /// Appends to `out` the fields whose key neither the event (`event_fields`) nor an inner span (`written`)
    /// has, and notes their keys in `written`.
    pub(crate) fn append_new(
        &self,
        out: &mut B,
        event_fields: &tracing::field::FieldSet,
        written: &mut Vec<&'static str>,
    ) {
        let mut start = 0;
        for &(key, end) in &self.ends {
            if event_fields.field(key).is_none() && !written.contains(&key) {
                self.text.copy_range(start..end, out);
                written.push(key);
            }
            start = end;
        }
    }
}

/// Wraps a sink's visitor and notes the key and end of every field it writes into [`Segments::ends`].
pub(crate) struct Keyed<'a, V> {
    inner: V,
    ends: &'a mut Vec<(&'static str, usize)>,
}

impl<'a, V: Written> Keyed<'a, V> {
    /// `inner` formats; `ends` receives a `(key, end)` for each field `inner` wrote.
    pub(crate) fn new(inner: V, ends: &'a mut Vec<(&'static str, usize)>) -> Self {
        Keyed { inner, ends }
    }

    fn noted(&mut self, field: &Field, before: usize) {
        let after = self.inner.written();
        if after != before {
            self.ends.push((field.name(), after));
        }
    }
}

macro_rules! keyed_record {
    ($($method:ident($type:ty)),* $(,)?) => {
        $(
            fn $method(&mut self, field: &Field, value: $type) {
                let before = self.inner.written();
                self.inner.$method(field, value);
                self.noted(field, before);
            }
        )*
    };
}

impl<V: Visit + Written> Visit for Keyed<'_, V> {
    keyed_record!(
        record_f64(f64),
        record_i64(i64),
        record_u64(u64),
        record_i128(i128),
        record_u128(u128),
        record_bool(bool),
        record_str(&str),
        record_bytes(&[u8]),
        record_error(&(dyn std::error::Error + 'static)),
        record_debug(&dyn std::fmt::Debug),
    );
}
