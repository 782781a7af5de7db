//! The OTLP log sink: each `tracing` event becomes an OpenTelemetry log record with typed attributes, the fields
//! of its enclosing spans (the context bound with [`crate::context!`]: `request_id`, `experiment_id`, …), and the
//! current trace and span ids — the same content the console and file sinks show.
//!
//! Written for Vigil rather than using `opentelemetry-appender-tracing`, whose records carry neither span fields
//! nor anything the span context adds.

use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Key, StringValue};
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use tracing::field::{Field, FieldSet, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::json::{CRITICAL_FIELD, event_level_name};
use super::masking::Masking;
use super::span_state::{Sink, SpanFormat, SpanValues};
use crate::mask::Masker;

/// Targets whose events are not exported: the crates that carry the export itself would otherwise export
/// their own logs through themselves, and a failing export would feed on its own errors.
const EXPORT_TARGETS: [&str; 6] = [
    "opentelemetry",
    "tonic",
    "h2",
    "hyper",
    "tower",
    "vigil::export",
];

/// A span's fields as OpenTelemetry attributes, made and masked at the first record logged inside the span.
struct SpanAttributes(Vec<(Key, AnyValue)>);

impl SpanFormat for SpanAttributes {
    const SINK: Sink = Sink::Otlp;

    fn format(values: &SpanValues, fields: &FieldSet, masker: Option<&Masker>) -> Self {
        let mut attributes = Vec::with_capacity(values.len());
        values.replay(
            fields,
            &mut Masking::new(
                masker,
                Attributes {
                    attributes: &mut attributes,
                    body: None,
                },
            ),
        );
        SpanAttributes(attributes)
    }
}

struct Attributes<'a> {
    attributes: &'a mut Vec<(Key, AnyValue)>,
    body: Option<&'a mut Option<AnyValue>>,
}

impl Attributes<'_> {
    fn push(&mut self, field: &Field, value: AnyValue) {
        if field.name() == "message"
            && let Some(body) = self.body.as_deref_mut()
        {
            *body = Some(value);
            return;
        }
        self.attributes
            .push((Key::from_static_str(field.name()), value));
    }
}

impl Visit for Attributes<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, AnyValue::Double(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, AnyValue::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let value = i64::try_from(value).map_or_else(
            |_| AnyValue::String(value.to_string().into()),
            AnyValue::Int,
        );
        self.push(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == CRITICAL_FIELD && self.body.is_some() {
            return;
        }
        self.push(field, AnyValue::Boolean(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(
            field,
            AnyValue::String(StringValue::from(value.to_string())),
        );
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.push(field, AnyValue::String(text.into()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, AnyValue::String(format!("{value:?}").into()));
    }
}

fn severity(level: &tracing::Level) -> Severity {
    match *level {
        tracing::Level::TRACE => Severity::Trace,
        tracing::Level::DEBUG => Severity::Debug,
        tracing::Level::INFO => Severity::Info,
        tracing::Level::WARN => Severity::Warn,
        tracing::Level::ERROR => Severity::Error,
    }
}

/// A tracing layer emitting OpenTelemetry log records through `provider`.
pub struct OtlpLogLayer {
    logger: SdkLogger,
    masker: Option<Masker>,
    /// This layer's identity: the first log layer to see a span keeps its values for all (see `span_state`).
    owner: u64,
}

impl OtlpLogLayer {
    /// A layer logging through `provider` (scope `vigil`).
    pub fn new(provider: &SdkLoggerProvider) -> Self {
        OtlpLogLayer {
            logger: provider.logger("vigil"),
            masker: None,
            owner: super::span_state::next_owner(),
        }
    }

    /// Masks every message and field with `masker` before the record is built.
    pub fn with_masker(mut self, masker: Option<Masker>) -> Self {
        self.masker = masker;
        self
    }
}

impl<S> Layer<S> for OtlpLogLayer
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
        let metadata = event.metadata();
        if EXPORT_TARGETS
            .iter()
            .any(|prefix| metadata.target().starts_with(prefix))
        {
            return;
        }
        let mut attributes = Vec::with_capacity(8);
        let mut body = None;
        event.record(&mut Masking::new(
            self.masker.as_ref(),
            Attributes {
                attributes: &mut attributes,
                body: Some(&mut body),
            },
        ));
        // OTLP requires unique keys: the event's own value wins, then the innermost span's.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<SpanValues>().and_then(|values| {
                    values.formatted::<SpanAttributes>(span.fields(), self.masker.as_ref())
                }) {
                    for (key, value) in &fields.0 {
                        if !attributes.iter().any(|(k, _)| k == key) {
                            attributes.push((key.clone(), value.clone()));
                        }
                    }
                }
            }
        }
        let now = SystemTime::now();
        let mut record = self.logger.create_log_record();
        record.set_timestamp(now);
        record.set_observed_timestamp(now);
        let level_text = event_level_name(event);
        record.set_severity_number(if level_text == "CRITICAL" {
            Severity::Fatal
        } else {
            severity(metadata.level())
        });
        record.set_severity_text(level_text);
        record.set_target(metadata.target().to_string());
        if let Some(body) = body {
            record.set_body(body);
        }
        record.add_attributes(attributes);
        let context = opentelemetry::Context::current();
        let span = context.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            record.set_trace_context(
                span_context.trace_id(),
                span_context.span_id(),
                Some(span_context.trace_flags()),
            );
        }
        self.logger.emit(record);
    }
}
