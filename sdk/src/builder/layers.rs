//! One `tracing` layer per log handler: a formatter (console, text pattern, JSON) over an async writer into its
//! sink (stderr, stdout, a rotating file, MLflow), or the OTLP log bridge.

use std::sync::Arc;

use opentelemetry_sdk::logs::SdkLoggerProvider;

use super::Builder;
use crate::config::logging::{Format, Handler, Sink};
use crate::log::file::RotatingFile;
use crate::log::json::JsonLayer;
use crate::log::text::TextLayer;
use crate::log::writer::{AsyncWriter, WriteSink};
use crate::mask::Masker;
use crate::ml::mlflow;
use crate::{Error, log};

/// A layer over the bare registry, boxed so handlers of different kinds share one list.
pub(crate) type BoxedLayer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

fn boxed<L>(layer: L) -> BoxedLayer
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
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
            Some(level) => boxed(<BoxedLayer as tracing_subscriber::Layer<
                tracing_subscriber::Registry,
            >>::with_filter(
                layer,
                tracing_subscriber::filter::LevelFilter::from_level(level.tracing()),
            )),
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
