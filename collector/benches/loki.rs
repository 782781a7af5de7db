//! The `loki` exporter's translation and encoding of a 1,000-record batch of realistic log records (a
//! resource of 8 attributes, 5 attributes per record, trace and span ids, three severities), from decoded OTLP to
//! the snappy-compressed `PushRequest` body.
//!
//! * `vigil`: the exporter's [`Translator`] (labels, caps, structured metadata, per-stream sorting and window
//!   rules) and its direct protobuf encoder, then snappy.
//! * `baseline_prost`: the straightforward way, in the same run: per record a label map and selector string,
//!   `LabelPairAdapter` structs for the metadata, grouped in a `HashMap` of `StreamAdapter`s, sorted, encoded
//!   with prost's `encode_to_vec`, then snappy. Same labels, lines and metadata.
//!
//! `cargo bench -p vigil-collector --bench loki`

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use vigil_collector::exporter::loki::{LokiExporterConfig, StreamState, Translator};
use vigil_proto::loki::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value};
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::string_attribute;

const NOW: i64 = 1_800_000_000_000_000_000;

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn double(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::DoubleValue(value)),
        }),
        ..Default::default()
    }
}

fn batch() -> ExportLogsServiceRequest {
    let routes = ["/api/users", "/api/orders", "/api/checkout", "/health"];
    let records = (0..1000u64)
        .map(|i| {
            let (severity_number, severity_text) = match i % 10 {
                0 => (17, "ERROR"),
                1 | 2 => (13, "WARN"),
                _ => (9, "INFO"),
            };
            LogRecord {
                // Mostly in order, with some records arriving late.
                time_unix_nano: (NOW - 60_000_000_000 + (i as i64) * 1_000_000
                    - if i % 7 == 0 { 5_000_000_000 } else { 0 })
                    as u64,
                severity_number,
                severity_text: severity_text.into(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(format!(
                        "request {i} handled: GET {} returned {} after {} ms for tier premium",
                        routes[i as usize % 4],
                        200 + (i % 3) * 100,
                        i % 250
                    ))),
                }),
                attributes: vec![
                    string_attribute("http.route", routes[i as usize % 4]),
                    string_attribute("http.request.method", "GET"),
                    int("http.response.status_code", 200 + (i as i64 % 3) * 100),
                    double("duration_ms", (i % 250) as f64 * 1.25),
                    string_attribute("user.tier", "premium"),
                ],
                trace_id: (i as u128 * 0x9e37_79b9_7f4a_7c15).to_be_bytes().to_vec(),
                span_id: (i * 0x2545_f491_4f6c_dd1d).to_be_bytes().to_vec(),
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", "checkout"),
                    string_attribute("deployment.environment", "prod"),
                    string_attribute(
                        "service.instance.id",
                        "3f1c9a2e-7b4d-4e8f-9a1b-2c3d4e5f6a7b",
                    ),
                    string_attribute("host.name", "node-17"),
                    string_attribute("telemetry.sdk.name", "opentelemetry"),
                    string_attribute("telemetry.sdk.language", "python"),
                    string_attribute("telemetry.sdk.version", "1.39.0"),
                    int("process.pid", 4242),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn level(number: i32) -> &'static str {
    match number {
        17..=20 => "error",
        13..=16 => "warn",
        _ => "info",
    }
}

/// The straightforward translation: prost structs built per record, grouped, sorted, encoded, compressed.
fn baseline(request: &ExportLogsServiceRequest) -> Vec<u8> {
    let mut streams: HashMap<String, StreamAdapter> = HashMap::new();
    for resource_logs in &request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| &r.attributes[..]);
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs.scope.as_ref().map_or("", |s| s.name.as_str());
            for record in &scope_logs.log_records {
                let mut labels = BTreeMap::new();
                let mut metadata = vec![
                    LabelPairAdapter {
                        name: "trace_id".into(),
                        value: hex(&record.trace_id),
                    },
                    LabelPairAdapter {
                        name: "span_id".into(),
                        value: hex(&record.span_id),
                    },
                    LabelPairAdapter {
                        name: "severity_text".into(),
                        value: record.severity_text.clone(),
                    },
                ];
                for kv in &record.attributes {
                    metadata.push(LabelPairAdapter {
                        name: kv.key.replace('.', "_"),
                        value: kv.value.as_ref().map(text).unwrap_or_default(),
                    });
                }
                metadata.push(LabelPairAdapter {
                    name: "scope_name".into(),
                    value: scope.into(),
                });
                for kv in resource {
                    let value = kv.value.as_ref().map(text).unwrap_or_default();
                    match kv.key.as_str() {
                        "service.name" | "deployment.environment" => {
                            labels.insert(kv.key.replace('.', "_"), value);
                        }
                        _ => metadata.push(LabelPairAdapter {
                            name: kv.key.replace('.', "_"),
                            value,
                        }),
                    }
                }
                labels.insert(
                    "level".to_string(),
                    level(record.severity_number).to_string(),
                );
                let selector = format!(
                    "{{{}}}",
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let timestamp = record.time_unix_nano as i64;
                streams
                    .entry(selector.clone())
                    .or_insert_with(|| StreamAdapter {
                        labels: selector,
                        entries: Vec::new(),
                        hash: 0,
                    })
                    .entries
                    .push(EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(timestamp)),
                        line: record.body.as_ref().map(text).unwrap_or_default(),
                        structured_metadata: metadata,
                        parsed: Vec::new(),
                    });
            }
        }
    }
    let mut streams: Vec<StreamAdapter> = streams.into_values().collect();
    for stream in &mut streams {
        stream
            .entries
            .sort_by_key(|e| e.timestamp.map(|t| (t.seconds, t.nanos)));
    }
    let raw = PushRequest { streams }.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy")
}

fn vigil(translator: &Translator, request: &ExportLogsServiceRequest) -> Vec<u8> {
    // A fresh state per batch, as the first batch of a stream: the window rules run but change nothing.
    let mut state = StreamState::default();
    let (pushes, _) = translator.translate(std::slice::from_ref(request), &mut state, NOW);
    let mut raw = Vec::new();
    for push in &pushes {
        push.push.encode_protobuf(&mut raw);
    }
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy")
}

fn bench(c: &mut Criterion) {
    let request = batch();
    let translator = Translator::new(&LokiExporterConfig::default());
    // Both produce the same streams and entries (checked once, outside the measurement).
    let ours = PushRequest::decode(
        snap::raw::Decoder::new()
            .decompress_vec(&vigil(&translator, &request))
            .expect("snappy")
            .as_slice(),
    )
    .expect("push");
    let theirs = PushRequest::decode(
        snap::raw::Decoder::new()
            .decompress_vec(&baseline(&request))
            .expect("snappy")
            .as_slice(),
    )
    .expect("push");
    assert_eq!(ours.streams.len(), theirs.streams.len());
    let count = |p: &PushRequest| p.streams.iter().map(|s| s.entries.len()).sum::<usize>();
    assert_eq!(count(&ours), 1000);
    assert_eq!(count(&theirs), 1000);

    let mut group = c.benchmark_group("loki_push_1000_records");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("vigil", |b| {
        b.iter(|| vigil(&translator, black_box(&request)))
    });
    group.bench_function("baseline_prost", |b| {
        b.iter(|| baseline(black_box(&request)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
