//! The JSON formatter: one object per line, in a stable field order —
//! `timestamp`, `level`, `target`, `message`, the event's fields, then the fields of the enclosing spans
//! (innermost first; context such as `request_id` or `experiment_id` bound with [`crate::context!`]), then
//! `trace_id` and `span_id` when an OpenTelemetry context is active. Each key appears once, as JSON documents
//! and OTLP attributes require: the event's own value wins, then the innermost span's.
//!
//! Fields keep their types (`duration_sec = 125.5` is a JSON number, `gpu_used = true` a boolean). Lines are
//! built in thread-local buffers, so formatting an event allocates nothing once a thread has logged.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::field::{Field, FieldSet, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::clock::{Clock, write_rfc3339};
use super::masking::Masking;
use super::span_state::{Keyed, Segments, Sink, SpanFormat, SpanValues, Written};
use super::writer::AsyncWriter;
use crate::mask::Masker;

/// Python `logging` level names, as our users read them.
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// The field that marks an ERROR event as CRITICAL (set by [`crate::critical!`]).
pub const CRITICAL_FIELD: &str = "critical";

/// The Python level name of an event: CRITICAL for ERROR events made with [`crate::critical!`].
pub fn event_level_name(event: &Event<'_>) -> &'static str {
    let metadata = event.metadata();
    if *metadata.level() == Level::ERROR && metadata.fields().field(CRITICAL_FIELD).is_some() {
        "CRITICAL"
    } else {
        level_name(metadata.level())
    }
}

/// Writes `text` as the body of a JSON string (without quotes), escaping what JSON requires.
pub fn escape_into(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

struct Escaping<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(s, self.0);
        Ok(())
    }
}

/// Records fields as `,"name":value` pairs; the `message` field goes to its own buffer.
struct FieldWriter<'a> {
    fields: &'a mut Vec<u8>,
    message: Option<&'a mut Vec<u8>>,
}

impl FieldWriter<'_> {
    fn key(&mut self, field: &Field) {
        self.fields.extend_from_slice(b",\"");
        escape_into(field.name(), self.fields);
        self.fields.extend_from_slice(b"\":");
    }
}

impl Visit for FieldWriter<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            // The shortest form that reads back to the same value, as serde_json writes it (zmij is its
            // formatter): a third of the time `{:?}` takes behind the escaping writer, which digits never need.
            self.fields
                .extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
        } else {
            // JSON has no NaN or infinity; keep the information as a string (the quotes are JSON's, not the
            // value's: escaping them made the line invalid).
            self.fields.push(b'"');
            let _ = write!(Escaping(self.fields), "{value}");
            self.fields.push(b'"');
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.fields
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.fields
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == CRITICAL_FIELD && self.message.is_some() {
            return;
        }
        self.key(field);
        self.fields
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            escape_into(value, message);
            return;
        }
        self.key(field);
        self.fields.push(b'"');
        escape_into(value, self.fields);
        self.fields.push(b'"');
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        self.fields.push(b'"');
        let _ = write!(Escaping(self.fields), "{value}");
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(Escaping(self.fields), ": {cause}");
            source = cause.source();
        }
        self.fields.push(b'"');
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            let _ = write!(Escaping(message), "{value:?}");
            return;
        }
        self.key(field);
        self.fields.push(b'"');
        let _ = write!(Escaping(self.fields), "{value:?}");
        self.fields.push(b'"');
    }
}

/// A span's fields as JSON pairs, formatted and masked at the first line logged inside the span.
struct SpanFields(Segments<Vec<u8>>);

impl SpanFormat for SpanFields {
    const SINK: Sink = Sink::Json;

    fn format(values: &SpanValues, fields: &FieldSet, masker: Option<&Masker>) -> Self {
        let mut segments = Segments::for_fields(values.len());
        let Segments { text, ends } = &mut segments;
        values.replay(
            fields,
            &mut Masking::new(
                masker,
                Keyed::new(
                    FieldWriter {
                        fields: text,
                        message: None,
                    },
                    ends,
                ),
            ),
        );
        SpanFields(segments)
    }
}

impl Written for FieldWriter<'_> {
    fn written(&self) -> usize {
        self.fields.len()
    }
}

#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    message: Vec<u8>,
    fields: Vec<u8>,
    /// The span fields' keys already on the line.
    written: Vec<&'static str>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// A tracing layer writing JSON lines through an [`AsyncWriter`].
pub struct JsonLayer {
    writer: Arc<AsyncWriter>,
    clock: Arc<dyn Clock>,
    masker: Option<Masker>,
    /// This layer's identity: the first log layer to see a span keeps its values for all (see `span_state`).
    owner: u64,
}

impl JsonLayer {
    /// A layer writing through `writer`, stamping lines with `clock`; nothing is masked (see
    /// [`JsonLayer::with_masker`]).
    pub fn new(writer: Arc<AsyncWriter>, clock: Arc<dyn Clock>) -> Self {
        JsonLayer {
            writer,
            clock,
            masker: None,
            owner: super::span_state::next_owner(),
        }
    }

    /// Masks every message and field with `masker` before it is formatted.
    pub fn with_masker(mut self, masker: Option<Masker>) -> Self {
        self.masker = masker;
        self
    }
}

/// Formats one event into `buffers.line` (cleared first).
fn format_event<S>(
    clock: &dyn Clock,
    masker: Option<&Masker>,
    event: &Event<'_>,
    ctx: &Context<'_, S>,
    buffers: &mut Buffers,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Buffers {
        line,
        message,
        fields,
        written,
    } = buffers;
    line.clear();
    message.clear();
    fields.clear();
    written.clear();
    event.record(&mut Masking::new(
        masker,
        FieldWriter {
            fields,
            message: Some(message),
        },
    ));
    let metadata = event.metadata();
    line.extend_from_slice(b"{\"timestamp\":\"");
    write_rfc3339(clock.now(), line);
    line.extend_from_slice(b"\",\"level\":\"");
    line.extend_from_slice(event_level_name(event).as_bytes());
    line.extend_from_slice(b"\",\"target\":\"");
    escape_into(metadata.target(), line);
    line.extend_from_slice(b"\",\"message\":\"");
    line.extend_from_slice(message);
    line.push(b'"');
    line.extend_from_slice(fields);
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope {
            let extensions = span.extensions();
            if let Some(span_fields) = extensions
                .get::<SpanValues>()
                .and_then(|values| values.formatted::<SpanFields>(span.fields(), masker))
            {
                span_fields.0.append_new(line, metadata.fields(), written);
            }
        }
    }
    super::correlation::append_ids(line);
    line.extend_from_slice(b"}\n");
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        super::span_state::on_new_span(attrs, id, &ctx, self.owner);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        super::span_state::on_record(id, values, &ctx, self.owner);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buffers) => {
                format_event(
                    &*self.clock,
                    self.masker.as_ref(),
                    event,
                    &ctx,
                    &mut buffers,
                );
                self.writer.write(&buffers.line);
            }
            // An event logged from inside a field's `Debug` impl: format it with fresh buffers.
            Err(_) => {
                let mut buffers = Buffers::default();
                format_event(
                    &*self.clock,
                    self.masker.as_ref(),
                    event,
                    &ctx,
                    &mut buffers,
                );
                self.writer.write(&buffers.line);
            }
        });
    }
}
