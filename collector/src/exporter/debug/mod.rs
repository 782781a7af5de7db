//! Exporter `debug`: writes what passes to stderr: a summary line per batch (`basic`, `normal`: the signal,
//! the item count, the services it came from and its first trace id), or every record as indented lines
//! (`detailed`, like the OpenTelemetry Collector's).

mod render;

use std::io::Write;

use prost::Message;
use serde::Deserialize;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;

use render::Decoded;

use super::{ExportError, Exported, Exporter, QueueSettings};
use crate::pipeline::{Batch, BoxFuture};

/// How much the debug exporter prints.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    /// One summary line per batch.
    #[default]
    Basic,
    /// Same as basic (kept for otelcol compatibility).
    Normal,
    /// The whole batch as OTLP/JSON.
    Detailed,
}

/// `exporters.debug`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DebugExporterConfig {
    /// What to print.
    pub verbosity: Verbosity,
    /// The queue in front of it.
    pub sending_queue: QueueSettings,
}

/// Prints batches to stderr.
pub struct DebugExporter {
    verbosity: Verbosity,
}

impl DebugExporter {
    /// A debug exporter from its config.
    pub fn new(config: &DebugExporterConfig) -> Self {
        DebugExporter {
            verbosity: config.verbosity,
        }
    }
}

impl DebugExporter {
    /// What is printed for `batch`.
    pub fn render(&self, batch: &Batch) -> Result<String, ExportError> {
        let bytes = batch.to_bytes();
        let undecodable = |e: prost::DecodeError| ExportError::Undecodable {
            message: format!("batch does not decode as OTLP: {e}"),
        };
        let decoded = match batch.signal {
            Signal::Traces => {
                Decoded::Traces(ExportTraceServiceRequest::decode(bytes).map_err(undecodable)?)
            }
            Signal::Metrics => {
                Decoded::Metrics(ExportMetricsServiceRequest::decode(bytes).map_err(undecodable)?)
            }
            Signal::Logs => {
                Decoded::Logs(ExportLogsServiceRequest::decode(bytes).map_err(undecodable)?)
            }
        };
        let mut text = format!(
            "debug exporter: {} {} {} from {}",
            batch.signal,
            batch.items,
            batch.signal.item_name(),
            decoded.services().join(", ")
        );
        if let Some(trace_id) = decoded.first_trace_id() {
            text.push_str(&format!(", first trace {trace_id}"));
        }
        text.push('\n');
        if self.verbosity == Verbosity::Detailed {
            decoded.detailed(&mut text);
        }
        Ok(text)
    }
}

impl Exporter for DebugExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let text = self.render(batch)?;
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
            Ok(Exported::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::otlp::string_attribute;
    use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn batch() -> Batch {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(vigil_proto::otlp::resource::v1::Resource {
                    attributes: vec![string_attribute("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        name: "GET /cart".into(),
                        kind: 2,
                        attributes: vec![string_attribute("http.route", "/cart")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        Batch::new(Signal::Traces, request.encode_to_vec().into(), 1)
    }

    #[test]
    fn basic_names_the_signal_the_services_and_the_first_trace() {
        let exporter = DebugExporter::new(&DebugExporterConfig::default());
        assert_eq!(
            exporter.render(&batch()).unwrap(),
            "debug exporter: traces 1 spans from checkout, first trace abababababababababababababababab\n"
        );
    }

    #[test]
    fn detailed_prints_each_record_as_indented_lines() {
        let exporter = DebugExporter::new(&DebugExporterConfig {
            verbosity: Verbosity::Detailed,
            ..Default::default()
        });
        let text = exporter.render(&batch()).unwrap();
        for line in [
            "ResourceSpans #0",
            "Resource attributes:",
            "     -> service.name: Str(checkout)",
            "Span #0",
            "    Trace ID       : abababababababababababababababab",
            "    Name           : GET /cart",
            "    Kind           : Server",
            "     -> http.route: Str(/cart)",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
    }
}
