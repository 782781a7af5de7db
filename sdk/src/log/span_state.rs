//! The per-span state the log sinks share: a span's field values, captured as they are recorded, and each
//! sink's formatted and masked copy of them, made the first time a record inside the span needs it.
//!
//! Lazily, because most spans never have a record logged inside them (a request's inner spans, a model's
//! layers): formatting and masking every span's fields when it was created cost a fifth of a span, for lines
//! that were never written. Capturing is a copy into storage inline in the state; each sink formats at most
//! once per span (and again after a later `record`). One capture serves every sink, so with a console, a JSON
//! file and OTLP logs a span's values are copied once instead of formatted and masked three times.

use std::any::Any;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use smallvec::SmallVec;
use tracing::Subscriber;
use tracing::field::{Field, FieldSet, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::masking::Verbatim;
use crate::field::CapturedError;
use crate::mask::Masker;

/// The sinks that keep a formatted copy of span fields, each in its own slot of [`SpanValues`].
#[derive(Clone, Copy)]
pub(crate) enum Sink {
    /// JSON lines (files, stdout, MLflow).
    Json,
    /// Text lines (the console and text patterns).
    Text,
    /// OTLP log records.
    Otlp,
}

const SINKS: usize = 3;

/// A sink's formatted copy of a span's fields.
pub(crate) trait SpanFormat: Send + Sync + 'static {
    /// The slot this sink's copy is kept in.
    const SINK: Sink;

    /// Formats `values` (whose fields are `fields`), masked by `masker`: [`SpanValues::replay`] them through
    /// the sink's visitor.
    fn format(values: &SpanValues, fields: &FieldSet, masker: Option<&Masker>) -> Self;
}

/// A captured value; text lives in [`SpanValues::text`] between the two offsets.
enum Value {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(usize, usize),
    /// A `Debug` value, formatted when captured (it cannot be kept).
    Debug(usize, usize),
    /// An error and its causes, copied when captured.
    Error(Box<CapturedError>),
}

/// One field's captured value.
struct Entry {
    /// The field's position in the span's field set.
    index: usize,
    name: &'static str,
    value: Value,
}

/// A span's field values as recorded, and the sinks' formatted copies, stored in the span's extensions by the
/// first log layer that sees the span.
pub(crate) struct SpanValues {
    /// The layer that records later values (every layer gets `on_record`; one must apply it).
    owner: u64,
    /// Each field's latest value, in the order first recorded.
    entries: SmallVec<[Entry; 4]>,
    /// The text of string and `Debug` values, back to back.
    text: SmallVec<[u8; 64]>,
    /// Each sink's formatted copy (a [`SpanFormat`]), made on first use and dropped when a value changes.
    formatted: [OnceLock<Box<dyn Any + Send + Sync>>; SINKS],
}

impl SpanValues {
    fn new(owner: u64) -> Self {
        SpanValues {
            owner,
            entries: SmallVec::new(),
            text: SmallVec::new(),
            formatted: Default::default(),
        }
    }

    /// The number of fields with a value.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds the values of `fields`; a key recorded again keeps only its latest value.
    fn capture(&mut self, fields: &dyn RecordFields) {
        fields.record(&mut Capture(self));
        self.keep_last();
        for slot in &mut self.formatted {
            slot.take();
        }
    }

    /// Removes every entry whose key a later entry has, and the text only they used (a long-lived span that
    /// records a string every step does not grow).
    fn keep_last(&mut self) {
        let before = self.entries.len();
        let mut index = 0;
        while index < self.entries.len() {
            let name = self.entries[index].name;
            if self.entries[index + 1..].iter().any(|e| e.name == name) {
                self.entries.remove(index);
            } else {
                index += 1;
            }
        }
        if self.entries.len() < before {
            let mut text = SmallVec::new();
            for entry in &mut self.entries {
                if let Value::Str(start, end) | Value::Debug(start, end) = &mut entry.value {
                    let moved = text.len();
                    text.extend_from_slice(&self.text[*start..*end]);
                    (*start, *end) = (moved, text.len());
                }
            }
            self.text = text;
        }
    }

    fn text_at(&self, start: usize, end: usize) -> &str {
        // Only whole `&str`s and `fmt::Write` output are stored, so the range is valid UTF-8.
        std::str::from_utf8(&self.text[start..end]).unwrap_or_default()
    }

    /// Feeds the values to `visitor` as the span recorded them: the same `Visit` calls with the same values,
    /// `Debug` values as the text they formatted to, errors as copies with the same chain of causes.
    pub(crate) fn replay(&self, fields: &FieldSet, visitor: &mut dyn Visit) {
        for entry in &self.entries {
            let Some(field) = fields.iter().nth(entry.index) else {
                continue;
            };
            match &entry.value {
                Value::F64(v) => visitor.record_f64(&field, *v),
                Value::I64(v) => visitor.record_i64(&field, *v),
                Value::U64(v) => visitor.record_u64(&field, *v),
                Value::Bool(v) => visitor.record_bool(&field, *v),
                Value::Str(start, end) => visitor.record_str(&field, self.text_at(*start, *end)),
                Value::Debug(start, end) => {
                    visitor.record_debug(&field, &Verbatim(self.text_at(*start, *end)))
                }
                Value::Error(error) => visitor.record_error(&field, &**error),
            }
        }
    }

    /// Sink `T`'s copy of the fields (of the span whose field set is `fields`), formatted on first use.
    pub(crate) fn formatted<T: SpanFormat>(
        &self,
        fields: &FieldSet,
        masker: Option<&Masker>,
    ) -> Option<&T> {
        self.formatted[T::SINK as usize]
            .get_or_init(|| Box::new(T::format(self, fields, masker)))
            .downcast_ref::<T>()
    }
}

/// Records a span's values into [`SpanValues`].
struct Capture<'a>(&'a mut SpanValues);

impl Capture<'_> {
    fn push(&mut self, field: &Field, value: Value) {
        self.0.entries.push(Entry {
            index: field.index(),
            name: field.name(),
            value,
        });
    }

    /// Appends what `write` writes to the text and returns its range.
    fn write_text(&mut self, write: impl FnOnce(&mut TextWriter<'_>)) -> (usize, usize) {
        let start = self.0.text.len();
        write(&mut TextWriter(&mut self.0.text));
        (start, self.0.text.len())
    }
}

/// `fmt::Write` into the captured text.
struct TextWriter<'a>(&'a mut SmallVec<[u8; 64]>);

impl fmt::Write for TextWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Visit for Capture<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let (start, end) = self.write_text(|text| {
            let _ = text.write_str(value);
        });
        self.push(field, Value::Str(start, end));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::Error(Box::new(CapturedError::of(value))));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let (start, end) = self.write_text(|text| {
            let _ = write!(text, "{value:?}");
        });
        self.push(field, Value::Debug(start, end));
    }
}

/// A new layer's identity, for the rule that the first log layer to see a span keeps its values.
pub(crate) fn next_owner() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// For `Layer::on_new_span`: captures the new span's values, unless another log layer did.
pub(crate) fn on_new_span<S>(attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>, owner: u64)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // A span without fields adds nothing to records, and cannot record any later.
    if attrs.fields().is_empty() {
        return;
    }
    let Some(span) = ctx.span(id) else { return };
    let mut extensions = span.extensions_mut();
    if extensions.get_mut::<SpanValues>().is_none() {
        let mut values = SpanValues::new(owner);
        values.capture(attrs);
        extensions.insert(values);
    }
}

/// For `Layer::on_record`: adds values recorded later (only the layer that captured the span's values).
pub(crate) fn on_record<S>(id: &Id, values: &Record<'_>, ctx: &Context<'_, S>, owner: u64)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut extensions = span.extensions_mut();
    if let Some(state) = extensions.get_mut::<SpanValues>()
        && state.owner == owner
    {
        state.capture(values);
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
