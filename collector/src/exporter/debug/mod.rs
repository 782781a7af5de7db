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
    /// The last summary line printed per signal and how often it came again since: a connector that hands on
    /// unchanged totals every few seconds (`spanmetrics` while no span arrives) does not fill the console.
    last: std::sync::Mutex<[(String, u64); 3]>,
}

impl DebugExporter {
    /// A debug exporter from its config.
    pub fn new(config: &DebugExporterConfig) -> Self {
        DebugExporter {
            verbosity: config.verbosity,
            last: std::sync::Mutex::new(Default::default()),
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

impl DebugExporter {
    /// What to print for `batch` now: nothing when its summary repeats the last one of its signal (`basic`),
    /// else its text, after a note of how often the previous line repeated.
    pub fn output(&self, batch: &Batch) -> Result<Option<String>, ExportError> {
        let text = self.render(batch)?;
        if self.verbosity == Verbosity::Detailed {
            return Ok(Some(text));
        }
        let slot = match batch.signal {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (line, repeats) = &mut last[slot];
        if *line == text {
            *repeats += 1;
            return Ok(None);
        }
        let mut out = String::new();
        if *repeats > 0 {
            out.push_str(&format!(
                "debug exporter: (the {} line above came {repeats} more time(s), unchanged)\n",
                batch.signal
            ));
        }
        out.push_str(&text);
        *line = text;
        *repeats = 0;
        Ok(Some(out))
    }
}

impl Exporter for DebugExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            if let Some(text) = self.output(batch)? {
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
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
    fn an_unchanged_summary_is_not_repeated_every_flush() {
        let exporter = DebugExporter::new(&DebugExporterConfig::default());
        assert!(exporter.output(&batch()).unwrap().is_some());
        assert_eq!(exporter.output(&batch()).unwrap(), None);
        assert_eq!(exporter.output(&batch()).unwrap(), None);
        let other = Batch::new(Signal::Traces, bytes::Bytes::new(), 0);
        let text = exporter.output(&other).unwrap().unwrap();
        assert!(
            text.starts_with(
                "debug exporter: (the traces line above came 2 more time(s), unchanged)\n"
            ),
            "{text}"
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
