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

use std::borrow::Cow;

use vigil_proto::otlp::fields::{first_trace_id, for_each_resource};
use vigil_proto::otlp::wire::WireError;

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
        if self.verbosity != Verbosity::Detailed {
            // The summary is read in place: decoding every batch would make the default pipeline, which prints
            // a line per batch, several times slower.
            let (services, first_trace) = summary(batch).map_err(|e| ExportError::Undecodable {
                message: format!("batch does not read as OTLP: {e}"),
            })?;
            return Ok(summary_line(batch, &services, first_trace.as_deref()));
        }
        let decoded = decode(batch)?;
        let mut text = summary_line(
            batch,
            &decoded.services(),
            decoded.first_trace_id().as_deref(),
        );
        decoded.detailed(&mut text);
        Ok(text)
    }
}

/// The batch decoded (for `detailed`, which prints everything).
fn decode(batch: &Batch) -> Result<Decoded, ExportError> {
    let bytes = batch.to_bytes();
    let undecodable = |e: prost::DecodeError| ExportError::Undecodable {
        message: format!("batch does not decode as OTLP: {e}"),
    };
    Ok(match batch.signal {
        Signal::Traces => {
            Decoded::Traces(ExportTraceServiceRequest::decode(bytes).map_err(undecodable)?)
        }
        Signal::Metrics => {
            Decoded::Metrics(ExportMetricsServiceRequest::decode(bytes).map_err(undecodable)?)
        }
        Signal::Logs => {
            Decoded::Logs(ExportLogsServiceRequest::decode(bytes).map_err(undecodable)?)
        }
    })
}

/// The services of a batch (`service.name` of each entry's resource, each once, in order) and its first trace
/// id, read in place.
fn summary(batch: &Batch) -> Result<(Vec<String>, Option<String>), WireError> {
    let mut services: Vec<String> = Vec::new();
    let mut first_trace = None;
    for chunk in &batch.chunks {
        for_each_resource(&chunk.bytes, |resource| {
            let name = match resource.attributes.get("service.name")? {
                None => Cow::Borrowed("(no service.name)"),
                Some(value) => value.text_with(|value| render::value_text(Some(value)))?,
            };
            if !services.iter().any(|known| *known == name) {
                services.push(name.into_owned());
            }
            Ok::<_, WireError>(())
        })?;
        if first_trace.is_none() {
            first_trace = first_trace_id(batch.signal, &chunk.bytes)?.map(render::hex);
        }
    }
    Ok((services, first_trace))
}

/// `debug exporter: traces 3 spans from checkout, first trace 0af7…`.
fn summary_line(batch: &Batch, services: &[String], first_trace: Option<&str>) -> String {
    let mut text = format!(
        "debug exporter: {} {} {} from {}",
        batch.signal,
        batch.items,
        batch.signal.item_name(),
        services.join(", ")
    );
    if let Some(trace_id) = first_trace {
        text.push_str(&format!(", first trace {trace_id}"));
    }
    text.push('\n');
    text
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

    /// A request of `signal` whose entries have a string, integer, empty or missing `service.name` (or no
    /// resource), and items with and without trace ids.
    fn random_request(signal: Signal, seed: u64) -> Vec<u8> {
        use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
        use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use vigil_proto::otlp::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
        use vigil_proto::otlp::resource::v1::Resource;
        let mut next = crate::processor::test_support::numbers(seed);
        let resource = |next: &mut dyn FnMut(u64) -> u64| {
            let value = match next(5) {
                0 => return None,
                1 => Some(AnyValue {
                    value: Some(any_value::Value::IntValue(7)),
                }),
                2 => None,
                _ => Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("svc{}", next(3)))),
                }),
            };
            let key = if next(6) == 0 {
                "host.name"
            } else {
                "service.name"
            };
            Some(Resource {
                attributes: vec![KeyValue {
                    key: key.into(),
                    value,
                    ..Default::default()
                }],
                ..Default::default()
            })
        };
        let trace_id = |next: &mut dyn FnMut(u64) -> u64| match next(3) {
            0 => Vec::new(),
            n => vec![n as u8 + next(200) as u8; 16],
        };
        let entries = next(4);
        match signal {
            Signal::Traces => ExportTraceServiceRequest {
                resource_spans: (0..entries)
                    .map(|_| ResourceSpans {
                        resource: resource(&mut next),
                        scope_spans: vec![ScopeSpans {
                            spans: (0..next(3))
                                .map(|_| Span {
                                    trace_id: trace_id(&mut next),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
            }
            .encode_to_vec(),
            Signal::Logs => ExportLogsServiceRequest {
                resource_logs: (0..entries)
                    .map(|_| ResourceLogs {
                        resource: resource(&mut next),
                        scope_logs: vec![ScopeLogs {
                            log_records: (0..next(3))
                                .map(|_| LogRecord {
                                    trace_id: trace_id(&mut next),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
            }
            .encode_to_vec(),
            Signal::Metrics => ExportMetricsServiceRequest {
                resource_metrics: (0..entries)
                    .map(|_| ResourceMetrics {
                        resource: resource(&mut next),
                        scope_metrics: vec![ScopeMetrics {
                            metrics: vec![Metric::default()],
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
            }
            .encode_to_vec(),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, failure_persistence: None, ..Default::default() })]

        /// The summary line read in place is the one the decoded batch gives, for every signal, over batches
        /// of several requests.
        #[test]
        fn the_summary_read_in_place_is_the_decoded_one(
            seeds in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..4),
            signal in 0..3usize,
        ) {
            let signal = Signal::ALL[signal];
            let mut batch = Batch::empty(signal);
            for seed in seeds {
                batch.append(Batch::new(signal, random_request(signal, seed).into(), 1));
            }
            let exporter = DebugExporter::new(&DebugExporterConfig::default());
            let decoded = decode(&batch).unwrap();
            let expected = summary_line(&batch, &decoded.services(), decoded.first_trace_id().as_deref());
            proptest::prop_assert_eq!(exporter.render(&batch).unwrap(), expected);
        }
    }
}
