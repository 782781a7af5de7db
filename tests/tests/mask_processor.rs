//! The collector's `mask` processor on the PII corpus: every place a secret can hide in an OTLP request of each
//! signal, masked on the wire; the receiver's check flags every request that needs masking, and clean requests
//! are neither flagged nor rewritten. Then a real collector with the embedded
//! default config fed by the OpenTelemetry Python SDK.

use std::process::Command;

use prost::Message as _;
use vigil::mask::{MaskConfig, Masker};
use vigil_collector::processor::mask::precheck::MaskPrecheck;
use vigil_collector::processor::mask::wire::{Outcome, mask_request};
use vigil_e2e::{Collector, PiiCase, file_exporter_lines, pii_corpus, python, workspace_root};
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vigil_proto::otlp::metrics::v1::{
    Exemplar, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, metric,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::scan::scan_inspecting;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

fn string(text: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(text.to_string())),
    })
}

fn kv(key: &str, text: &str) -> KeyValue {
    attr(key, string(text))
}

fn attr(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
        ..Default::default()
    }
}

fn text_of(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        other => format!("{other:?}"),
    }
}

fn find(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| text_of(&a.value))
        .unwrap_or_else(|| format!("<{key} missing>"))
}

/// A request through the collector: the receiver's validation walk runs the `mask` processor's check, and
/// the processor walks and masks it. Returns the rewritten bytes (`None`: passed on as received) and whether the
/// check flagged it; panics if the check passed a request that the processor's walk rewrites, since the
/// collector would then export it unmasked.
fn masked(signal: Signal, bytes: &[u8], masker: &Masker) -> (Option<Vec<u8>>, bool) {
    let summary = scan_inspecting(signal, bytes, &mut MaskPrecheck::new(masker))
        .expect("a valid request scans");
    assert!(summary.first_error().is_none(), "the test request is valid");
    let flagged = summary.resources.iter().any(|entry| entry.flagged);
    let walked = match mask_request(signal, bytes, masker).expect("a valid request walks") {
        Outcome::Keep => None,
        Outcome::Replace(bytes) => Some(bytes),
        Outcome::Drop => panic!("a request is never dropped whole"),
    };
    assert!(
        flagged || walked.is_none(),
        "the receiver's check passed a {signal:?} request that masking rewrites"
    );
    (walked, flagged)
}

/// Every place in a trace request: resource, scope, span name, attribute (under the case's key), array
/// element, event name and attributes, link attributes, status message.
fn trace_request(case: &PiiCase, key: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "shop"), kv(key, &case.text)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "shop.http".into(),
                    attributes: vec![kv(key, &case.text)],
                    ..Default::default()
                }),
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: case.text.clone(),
                    kind: span::SpanKind::Server as i32,
                    attributes: vec![
                        kv(key, &case.text),
                        attr(
                            "items",
                            Some(AnyValue {
                                value: Some(any_value::Value::ArrayValue(ArrayValue {
                                    values: vec![string(&case.text).unwrap_or_default()],
                                })),
                            }),
                        ),
                        attr(
                            "request.count",
                            Some(AnyValue {
                                value: Some(any_value::Value::IntValue(7)),
                            }),
                        ),
                    ],
                    events: vec![span::Event {
                        name: case.text.clone(),
                        attributes: vec![
                            kv("exception.message", &case.text),
                            kv("exception.stacktrace", &case.text),
                            kv(key, &case.text),
                        ],
                        ..Default::default()
                    }],
                    links: vec![span::Link {
                        trace_id: vec![3; 16],
                        span_id: vec![4; 8],
                        attributes: vec![kv(key, &case.text)],
                        ..Default::default()
                    }],
                    status: Some(Status {
                        message: case.text.clone(),
                        code: 2,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn check_traces(case: &PiiCase, key: &str, masker: &Masker, failures: &mut Vec<String>) {
    let bytes = trace_request(case, key).encode_to_vec();
    let (output, flagged) = masked(Signal::Traces, &bytes, masker);
    if case.secrets.is_empty() && output.is_some() {
        failures.push(format!("REWROTE a clean trace request: {:?}", case.text));
    }
    if case.secrets.is_empty() && flagged {
        failures.push(format!(
            "FLAGGED a clean trace request for a second walk: {:?}",
            case.text
        ));
    }
    let request = match output {
        Some(bytes) => ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes"),
        None => trace_request(case, key),
    };
    let resource_spans = &request.resource_spans[0];
    let resource = resource_spans.resource.clone().unwrap_or_default();
    assert_eq!(find(&resource.attributes, "service.name"), "shop");
    failures.extend(case.problems("resource", &find(&resource.attributes, key)));
    let scope_spans = &resource_spans.scope_spans[0];
    let scope = scope_spans.scope.clone().unwrap_or_default();
    assert_eq!(scope.name, "shop.http", "scope names are not masked");
    failures.extend(case.problems("scope", &find(&scope.attributes, key)));
    let span = &scope_spans.spans[0];
    assert_eq!(span.trace_id, vec![1; 16]);
    failures.extend(case.problems("attribute", &find(&span.attributes, key)));
    assert_eq!(
        span.attributes
            .iter()
            .find(|a| a.key == "request.count")
            .and_then(|a| a.value.clone()),
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(7))
        })
    );
    let event = &span.events[0];
    failures.extend(case.problems("event attribute", &find(&event.attributes, key)));
    failures.extend(case.problems("link attribute", &find(&span.links[0].attributes, key)));
    if case.key.is_none() {
        failures.extend(case.problems("span name", &span.name));
        failures.extend(case.problems("event name", &event.name));
        failures.extend(case.problems(
            "exception.message",
            &find(&event.attributes, "exception.message"),
        ));
        failures.extend(case.problems(
            "exception.stacktrace",
            &find(&event.attributes, "exception.stacktrace"),
        ));
        failures.extend(case.problems("status", &span.status.clone().unwrap_or_default().message));
        let items = span.attributes.iter().find(|a| a.key == "items");
        match items
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref())
        {
            Some(any_value::Value::ArrayValue(array)) => {
                failures.extend(case.problems("array", &text_of(&Some(array.values[0].clone()))))
            }
            other => failures.push(format!("array lost: {other:?}")),
        }
    }
}

fn log_request(case: &PiiCase, key: &str) -> ExportLogsServiceRequest {
    let kvlist = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![kv(key, &case.text), kv("route", "/login")],
        })),
    };
    let record = |body: Option<AnyValue>| LogRecord {
        time_unix_nano: 1,
        severity_text: "INFO".into(),
        body,
        attributes: vec![kv(key, &case.text)],
        ..Default::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record(string(&case.text)), record(Some(kvlist))],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn check_logs(case: &PiiCase, key: &str, masker: &Masker, failures: &mut Vec<String>) {
    let bytes = log_request(case, key).encode_to_vec();
    let (output, flagged) = masked(Signal::Logs, &bytes, masker);
    if case.secrets.is_empty() && output.is_some() {
        failures.push(format!("REWROTE a clean log request: {:?}", case.text));
    }
    if case.secrets.is_empty() && flagged {
        failures.push(format!(
            "FLAGGED a clean log request for a second walk: {:?}",
            case.text
        ));
    }
    let request = match output {
        Some(bytes) => ExportLogsServiceRequest::decode(bytes.as_slice()).expect("decodes"),
        None => log_request(case, key),
    };
    let records = &request.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(records.len(), 2, "masking never drops a record");
    for record in records {
        assert_eq!(record.severity_text, "INFO");
        failures.extend(case.problems("log attribute", &find(&record.attributes, key)));
    }
    if case.key.is_none() {
        failures.extend(case.problems("log body", &text_of(&records[0].body)));
    }
    match records[1].body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::KvlistValue(list)) => {
            failures.extend(case.problems("kvlist body", &find(&list.values, key)));
            assert_eq!(find(&list.values, "route"), "/login");
        }
        other => failures.push(format!("kvlist body lost: {other:?}")),
    }
}

fn metric_request(case: &PiiCase, key: &str) -> ExportMetricsServiceRequest {
    let exemplar = Exemplar {
        filtered_attributes: vec![kv(key, &case.text)],
        span_id: vec![2; 8],
        trace_id: vec![1; 16],
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource::default()),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "http.server.active_requests".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![kv(key, &case.text)],
                                exemplars: vec![exemplar.clone()],
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "http.server.request.duration".into(),
                        unit: "s".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes: vec![kv(key, &case.text)],
                                exemplars: vec![exemplar],
                                count: 3,
                                bucket_counts: vec![1, 2],
                                explicit_bounds: vec![0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn check_metrics(case: &PiiCase, key: &str, masker: &Masker, failures: &mut Vec<String>) {
    let bytes = metric_request(case, key).encode_to_vec();
    let (output, flagged) = masked(Signal::Metrics, &bytes, masker);
    if case.secrets.is_empty() && output.is_some() {
        failures.push(format!("REWROTE a clean metric request: {:?}", case.text));
    }
    if case.secrets.is_empty() && flagged {
        failures.push(format!(
            "FLAGGED a clean metric request for a second walk: {:?}",
            case.text
        ));
    }
    let request = match output {
        Some(bytes) => ExportMetricsServiceRequest::decode(bytes.as_slice()).expect("decodes"),
        None => metric_request(case, key),
    };
    let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
    match &metrics[0].data {
        Some(metric::Data::Gauge(gauge)) => {
            let point = &gauge.data_points[0];
            failures.extend(case.problems("gauge point", &find(&point.attributes, key)));
            failures.extend(case.problems(
                "exemplar",
                &find(&point.exemplars[0].filtered_attributes, key),
            ));
        }
        other => failures.push(format!("gauge lost: {other:?}")),
    }
    match &metrics[1].data {
        Some(metric::Data::Histogram(histogram)) => {
            let point = &histogram.data_points[0];
            assert_eq!(point.bucket_counts, vec![1, 2], "data is untouched");
            failures.extend(case.problems("histogram point", &find(&point.attributes, key)));
        }
        other => failures.push(format!("histogram lost: {other:?}")),
    }
}

fn opt_in_config() -> MaskConfig {
    let mut config = MaskConfig::default();
    config.detectors.phone.enabled = Some(true);
    config.detectors.iban.enabled = Some(true);
    config
}

#[test]
fn every_signal_is_masked_everywhere_on_the_wire_and_clean_requests_are_not_rewritten() {
    let default = Masker::new(&MaskConfig::default()).unwrap();
    let opt_in = Masker::new(&opt_in_config()).unwrap();
    let mut failures = Vec::new();
    for case in pii_corpus() {
        let masker = if case.opt_in { &opt_in } else { &default };
        let key = case.key.clone().unwrap_or_else(|| "detail".into());
        check_traces(&case, &key, masker, &mut failures);
        check_logs(&case, &key, masker, &mut failures);
        check_metrics(&case, &key, masker, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn drop_rules_remove_attributes_and_sensitive_keys_replace_any_type() {
    let mut config = MaskConfig::default();
    config.rules.push(vigil::mask::RuleConfig {
        name: "internal_host".into(),
        pattern: r"\bdb-[0-9]+\.internal\b".into(),
        action: Some(vigil::mask::Action::Drop),
    });
    let masker = Masker::new(&config).unwrap();
    let int = |n: i64| {
        Some(AnyValue {
            value: Some(any_value::Value::IntValue(n)),
        })
    };
    let mut request = trace_request(&pii_corpus()[0], "detail");
    let attributes = &mut request.resource_spans[0].scope_spans[0].spans[0].attributes;
    attributes.clear();
    attributes.extend([
        kv("peer.host", "db-7.internal"),
        attr("db.password", int(123456)),
        attr("card", int(4111111111111111)),
        attr("order_id", int(4111111111111112)),
        kv("user.id", "42"),
    ]);
    let bytes = request.encode_to_vec();
    let output = masked(Signal::Traces, &bytes, &masker)
        .0
        .expect("rewritten");
    let decoded = ExportTraceServiceRequest::decode(output.as_slice()).unwrap();
    let attributes = &decoded.resource_spans[0].scope_spans[0].spans[0].attributes;
    let keys: Vec<&str> = attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        ["db.password", "card", "order_id", "user.id"],
        "peer.host dropped"
    );
    assert_eq!(find(attributes, "db.password"), "[REDACTED:sensitive_key]");
    assert_eq!(find(attributes, "card"), "[REDACTED:payment_card]");
    assert_eq!(
        attributes[2].value,
        int(4111111111111112),
        "fails Luhn: kept as an int"
    );
    assert_eq!(find(attributes, "user.id"), "42");
    let counts: std::collections::HashMap<&str, u64> = masker.replacements().into_iter().collect();
    assert_eq!(counts["internal_host"], 1);
    assert_eq!(counts["payment_card"], 1);
}

#[test]
fn a_truncated_request_is_an_error_not_a_pass() {
    let masker = Masker::new(&MaskConfig::default()).unwrap();
    let bytes = trace_request(&pii_corpus()[0], "detail").encode_to_vec();
    assert!(mask_request(Signal::Traces, &bytes[..bytes.len() - 3], &masker).is_err());
}

/// The OpenTelemetry Python SDK sends every default-detector corpus case as span names, attributes, events,
/// statuses, log bodies and attributes, and metric attributes, to a collector whose pipelines mask; nothing
/// planted comes out of the `file` exporter, and clean values come out unchanged.
#[test]
fn python_clients_sending_pii_through_the_collector_export_none_of_it() {
    const CONFIG: &str = "
receivers:
  otlp:
    protocols:
      grpc: {endpoint: '{grpc}'}
      http: {endpoint: '{http}'}
processors:
  mask: {}
  batch: {timeout: 50ms}
exporters:
  file: {path: '{dir}/out'}
extensions:
  health_check: {endpoint: '{health}'}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], processors: [mask, batch], exporters: [file]}
    metrics: {receivers: [otlp], processors: [mask, batch], exporters: [file]}
    logs: {receivers: [otlp], processors: [mask, batch], exporters: [file]}
  telemetry:
    metrics: {address: '{metrics}'}
";
    let mut collector = Collector::start(CONFIG);
    let script = workspace_root().join("tests/python/send_pii.py");
    let output = Command::new(python())
        .arg(&script)
        .arg(&collector.grpc)
        .arg(workspace_root().join("tests/data/pii_corpus.jsonl"))
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python client failed: {}\ncollector log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        collector.log()
    );
    let replaced = collector.metric("vigil_mask_replacements_total", &["detector=\"email\""]);
    let status = collector.stop();
    assert!(
        status.success(),
        "collector exit {status}: {}",
        collector.log()
    );
    let out = collector.dir.path().join("out");
    // Every string value anywhere in what was exported.
    let mut exported = Vec::new();
    for signal in ["traces", "logs", "metrics"] {
        for request in file_exporter_lines(&out, signal) {
            collect_strings(&request, &mut exported);
        }
    }
    let cases: Vec<PiiCase> = pii_corpus().into_iter().filter(|c| !c.opt_in).collect();
    let mut failures = Vec::new();
    for case in &cases {
        for secret in &case.secrets {
            if let Some(found) = exported.iter().find(|s| s.contains(secret.as_str())) {
                failures.push(format!("LEAK {secret:?} in {found:?}"));
            }
        }
        if case.secrets.is_empty() {
            // Span name, event name, status, log body, and attribute values: at least five exact copies.
            let copies = exported.iter().filter(|s| **s == case.text).count();
            if copies < 5 {
                failures.push(format!(
                    "CHANGED or LOST clean {:?}: {copies} copies",
                    case.text
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(replaced > 0.0, "the replacements are counted per detector");
}

fn collect_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) => out.push(text.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}
