//! One `tracing` layer per log handler: a formatter (console, text pattern, JSON) over an async writer into its
//! sink (stderr, stdout, a rotating file, MLflow), or the OTLP log bridge.

use std::sync::Arc;

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata};
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, Layered};

use opentelemetry_sdk::logs::SdkLoggerProvider;

use super::Builder;
use crate::config::logging::{Format, Handler, Sink};
use crate::log::file::RotatingFile;
use crate::log::json::JsonLayer;
use crate::log::sampling::LogSampler;
use crate::log::text::TextLayer;
use crate::log::writer::{AsyncWriter, WriteSink};
use crate::mask::Masker;
use crate::ml::mlflow;
use crate::{Error, log};

/// The subscriber under the sinks: the registry, the level filter and the span exporter. The sinks go on top of
/// it, not under it: closing a span makes every level below the top look for the registry through the levels
/// under it, and a list of boxed layers costs a call per handler on that path.
pub(crate) type Inner = Layered<Option<ExportedSpans>, Filters>;

/// The level filter over the registry.
pub(crate) type Filters = Layered<Option<EnvFilter>, Layered<Option<Targets>, Registry>>;

/// The span exporter's layer.
pub(crate) type ExportedSpans = crate::trace::SpansOnly<
    tracing_opentelemetry::OpenTelemetryLayer<Filters, opentelemetry_sdk::trace::SdkTracer>,
>;

/// A handler's layer, boxed so handlers of different kinds share one list.
pub(crate) type BoxedLayer = Box<dyn tracing_subscriber::Layer<Inner> + Send + Sync>;

fn boxed<L>(layer: L) -> BoxedLayer
where
    L: tracing_subscriber::Layer<Inner> + Send + Sync + 'static,
{
    Box::new(layer)
}

/// The console's pattern.
fn console_pattern() -> log::text::Pattern {
    // A constant that a unit test parses; the fallback only guards against editing it badly.
    log::text::Pattern::parse(log::text::CONSOLE_FORMAT)
        .unwrap_or_else(|_| log::text::Pattern::default())
}

/// The layers of `handlers` and the writers they started (flushed and stopped by the guard). A handler whose
/// sink is not there (OTLP logs not exported, MLflow off) is left out.
pub(crate) fn log_layers(
    builder: &Builder,
    handlers: &[Handler],
    logger_provider: Option<&SdkLoggerProvider>,
    mlflow: Option<&mlflow::Mlflow>,
    masker: Option<&Masker>,
) -> Result<(Vec<Arc<AsyncWriter>>, Vec<BoxedLayer>), Error> {
    let mut writers = Vec::new();
    let mut layers = Vec::new();
    for handler in handlers {
        let layer = match (&handler.sink, &handler.format) {
            (Sink::Otlp, _) => match logger_provider {
                Some(provider) => {
                    boxed(log::otlp::OtlpLogLayer::new(provider).with_masker(masker.cloned()))
                }
                None => continue,
            },
            (sink, format) => {
                let Some(writer) = start_writer(builder, sink, mlflow)? else {
                    continue;
                };
                let writer = Arc::new(writer);
                writers.push(writer.clone());
                formatter(builder, sink, format, writer, masker)
            }
        };
        layers.push(match handler.level {
            Some(level) => boxed(
                <BoxedLayer as tracing_subscriber::Layer<Inner>>::with_filter(
                    layer,
                    tracing_subscriber::filter::LevelFilter::from_level(level.tracing()),
                ),
            ),
            None => layer,
        });
    }
    Ok((writers, layers))
}

/// The async writer into `sink`; `None` when the sink is not there (MLflow off).
fn start_writer(
    builder: &Builder,
    sink: &Sink,
    mlflow: Option<&mlflow::Mlflow>,
) -> Result<Option<AsyncWriter>, Error> {
    let (capacity, policy, clock) = (builder.buffer_bytes, builder.on_full, builder.clock.clone());
    Ok(Some(match sink {
        Sink::Mlflow(_) => match mlflow {
            Some(mlflow) => AsyncWriter::start(mlflow.line_sink(), capacity, policy, clock)?,
            None => return Ok(None),
        },
        Sink::File(options) => AsyncWriter::start(
            RotatingFile::open(options.clone(), builder.clock.clone())?,
            capacity,
            policy,
            clock,
        )?,
        Sink::Stdout => AsyncWriter::start(WriteSink(std::io::stdout()), capacity, policy, clock)?,
        Sink::Stderr | Sink::Otlp => {
            AsyncWriter::start(WriteSink(std::io::stderr()), capacity, policy, clock)?
        }
    }))
}

/// The formatter of one handler over its writer.
fn formatter(
    builder: &Builder,
    sink: &Sink,
    format: &Format,
    writer: Arc<AsyncWriter>,
    masker: Option<&Masker>,
) -> BoxedLayer {
    let terminal = match sink {
        Sink::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
        Sink::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        _ => false,
    };
    let clock = builder.clock.clone();
    match format {
        Format::Text(pattern) => {
            boxed(TextLayer::new(pattern.clone(), writer, clock).with_masker(masker.cloned()))
        }
        Format::Console => boxed(
            TextLayer::new(console_pattern(), writer, clock)
                .with_colour(terminal)
                .with_masker(masker.cloned()),
        ),
        Format::Json => boxed(JsonLayer::new(writer, clock).with_masker(masker.cloned())),
    }
}

/// Every log handler's layer, behind log sampling: one layer for all sinks, so that a record the sampler drops
/// reaches none of them, and the summary it logs reaches all of them (and nothing else).
pub(crate) struct Sinks {
    handlers: Vec<BoxedLayer>,
    sampler: Option<LogSampler>,
}

impl Sinks {
    /// `handlers`, sampled by `sampler` when there is one.
    pub(crate) fn new(handlers: Vec<BoxedLayer>, sampler: Option<LogSampler>) -> Self {
        Sinks { handlers, sampler }
    }
}

impl Layer<Inner> for Sinks {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.handlers.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut Inner) {
        self.handlers.on_layer(subscriber);
    }
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.handlers.register_callsite(metadata)
    }
    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, Inner>) -> bool {
        self.handlers.enabled(metadata, ctx)
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.handlers.max_level_hint()
    }
    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, Inner>) -> bool {
        let kept = match &self.sampler {
            Some(sampler) => sampler.sample(event, |summary| {
                self.handlers.on_event(summary, ctx.clone());
            }),
            None => true,
        };
        kept && self.handlers.event_enabled(event, ctx)
    }
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, Inner>) {
        self.handlers.on_new_span(attrs, id, ctx);
    }
    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, Inner>) {
        self.handlers.on_record(span, values, ctx);
    }
    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, Inner>) {
        self.handlers.on_follows_from(span, follows, ctx);
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, Inner>) {
        self.handlers.on_event(event, ctx);
    }
    fn on_enter(&self, id: &Id, ctx: Context<'_, Inner>) {
        self.handlers.on_enter(id, ctx);
    }
    fn on_exit(&self, id: &Id, ctx: Context<'_, Inner>) {
        self.handlers.on_exit(id, ctx);
    }
    fn on_close(&self, id: Id, ctx: Context<'_, Inner>) {
        self.handlers.on_close(id, ctx);
    }
    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, Inner>) {
        self.handlers.on_id_change(old, new, ctx);
    }
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: forwarded to the handlers, which uphold the same contract.
        unsafe { self.handlers.downcast_raw(id) }
    }
}
