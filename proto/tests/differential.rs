//! Differential property test: the receiver's validating walk ([`scan`]) against `prost` plus OTLP's rules.
//!
//! Requests of all three signals are generated (valid ones, and ones with OTLP-invalid ids), encoded, and
//! then mutated with knowledge of the protobuf structure: wrong wire types, truncation, invalid UTF-8,
//! overflowing varints, duplicated and deleted fields, unknown fields of every wire type (groups included),
//! nesting around the decoder's recursion limit, and plain random bytes. For every case:
//!
//! * whatever the walk accepts (the request without its rejected entries and items, [`without_invalid`])
//!   decodes with `prost`, holds exactly [`Summary::items`] items, obeys OTLP's id rules, and survives the
//!   exporters' paths (re-encoding, and OTLP/JSON);
//! * a request that `prost` decodes and whose items all obey OTLP's rules is accepted whole;
//! * a request `prost` decodes is never refused as a whole, and only its rule-breaking items are rejected.
//!
//! For traces, the in-place span reader ([`for_each_span`]) also reads every request `prost` decodes exactly as
//! `prost` does: the same spans in order, the same scalar fields, and the same value for every attribute key of
//! the span and of its resource.
//!
//! For metrics, the in-place metric reader ([`for_each_metric`], [`number_points`]) reads every request `prost`
//! decodes as `prost` does: the same entries, scopes and metrics in order, resources and scopes that decode to
//! the merged messages, and for gauges and sums the same points (attributes, time, value, flags).
//!
//! `PROPTEST_CASES` sets the number of cases per signal (the suite runs 2,000); a long run is documented in
//! BENCHMARKS.md ("OTLP walker: differential run").

use proptest::prelude::*;
use prost::Message;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use vigil_proto::otlp::fields::{
    AttributeValue, Attributes, MetricData, MetricsItem, NumberPoint, first_trace_id,
    for_each_metric, for_each_resource, for_each_span, number_points,
};
use vigil_proto::otlp::json::protobuf_to_json;
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vigil_proto::otlp::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::scan::{MAX_ANY_VALUE_DEPTH, scan, without_invalid};
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use vigil_proto::otlp::wire::WireError;

// ---- a small deterministic generator (the proptest seed picks the request; failures print it) ----

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn text(&mut self) -> String {
        const WORDS: [&str; 8] = [
            "GET /items",
            "épée",
            "user@example.com",
            "",
            "ok",
            "日本",
            "x=1",
            "🦀",
        ];
        WORDS[self.below(WORDS.len() as u64) as usize].to_string()
    }
    /// An id: mostly valid, sometimes all-zero, empty or of the wrong length.
    fn id(&mut self, len: usize) -> Vec<u8> {
        match self.below(20) {
            0 => vec![0; len],
            1 => Vec::new(),
            2 => self.bytes(len - 1),
            _ => {
                let mut id = self.bytes(len);
                id[0] |= 1;
                id
            }
        }
    }
}

fn any_value(rng: &mut Rng, depth: usize) -> AnyValue {
    use any_value::Value;
    let nested = depth > 0;
    let value = match rng.below(if nested { 8 } else { 6 }) {
        0 => Value::StringValue(rng.text()),
        1 => Value::BoolValue(rng.chance(50)),
        2 => Value::IntValue(rng.next() as i64),
        3 => Value::DoubleValue(rng.next() as f64),
        4 => {
            let n = rng.below(5) as usize;
            Value::BytesValue(rng.bytes(n))
        }
        5 => Value::StringValueStrindex(rng.below(3) as i32),
        6 => Value::ArrayValue(ArrayValue {
            values: (0..rng.below(3))
                .map(|_| any_value(rng, depth - 1))
                .collect(),
        }),
        _ => Value::KvlistValue(KeyValueList {
            values: attributes(rng, depth - 1),
        }),
    };
    AnyValue { value: Some(value) }
}

/// An `AnyValue` nested `depth` deep, to probe the nesting limits.
fn deep_value(rng: &mut Rng, depth: usize) -> AnyValue {
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 0..depth {
        value = if rng.chance(50) {
            AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            }
        } else {
            AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(value),
                        ..Default::default()
                    }],
                })),
            }
        };
    }
    value
}

fn attributes(rng: &mut Rng, depth: usize) -> Vec<KeyValue> {
    (0..rng.below(3))
        .map(|i| KeyValue {
            key: format!("attr.{i}"),
            value: if rng.chance(90) {
                Some(if rng.chance(2) {
                    let depth = MAX_ANY_VALUE_DEPTH - 2 + rng.below(4) as usize;
                    deep_value(rng, depth)
                } else {
                    any_value(rng, depth)
                })
            } else {
                None
            },
            key_strindex: rng.below(2) as i32,
        })
        .collect()
}

fn resource(rng: &mut Rng) -> Option<Resource> {
    rng.chance(80).then(|| Resource {
        attributes: attributes(rng, 2),
        dropped_attributes_count: rng.below(2) as u32,
        entity_refs: (0..rng.below(2))
            .map(|_| EntityRef {
                schema_url: rng.text(),
                r#type: "service".into(),
                id_keys: vec!["service.name".into()],
                description_keys: vec![rng.text()],
            })
            .collect(),
    })
}

fn scope(rng: &mut Rng) -> Option<InstrumentationScope> {
    rng.chance(70).then(|| InstrumentationScope {
        name: rng.text(),
        version: "1.0".into(),
        attributes: attributes(rng, 1),
        dropped_attributes_count: rng.below(2) as u32,
    })
}

fn traces(rng: &mut Rng) -> ExportTraceServiceRequest {
    let span = |rng: &mut Rng| Span {
        trace_id: rng.id(16),
        span_id: rng.id(8),
        trace_state: if rng.chance(20) {
            "ot=th:8".into()
        } else {
            String::new()
        },
        parent_span_id: if rng.chance(50) {
            rng.id(8)
        } else {
            Vec::new()
        },
        flags: rng.below(0x300) as u32,
        name: rng.text(),
        kind: rng.below(6) as i32,
        start_time_unix_nano: rng.next(),
        end_time_unix_nano: rng.next(),
        attributes: attributes(rng, 2),
        dropped_attributes_count: rng.below(2) as u32,
        events: (0..rng.below(2))
            .map(|_| span::Event {
                time_unix_nano: rng.next(),
                name: rng.text(),
                attributes: attributes(rng, 1),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: rng.below(2) as u32,
        links: (0..rng.below(2))
            .map(|_| span::Link {
                trace_id: rng.id(16),
                span_id: rng.id(8),
                trace_state: String::new(),
                attributes: attributes(rng, 1),
                dropped_attributes_count: 0,
                flags: rng.below(0x300) as u32,
            })
            .collect(),
        dropped_links_count: 0,
        status: rng.chance(50).then(|| Status {
            message: rng.text(),
            code: rng.below(3) as i32,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: (0..1 + rng.below(3))
            .map(|_| ResourceSpans {
                resource: resource(rng),
                scope_spans: (0..1 + rng.below(2))
                    .map(|_| ScopeSpans {
                        scope: scope(rng),
                        spans: (0..rng.below(4)).map(|_| span(rng)).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            })
            .collect(),
    }
}

fn exemplars(rng: &mut Rng) -> Vec<Exemplar> {
    (0..rng.below(2))
        .map(|_| Exemplar {
            filtered_attributes: attributes(rng, 1),
            time_unix_nano: rng.next(),
            span_id: if rng.chance(50) {
                rng.id(8)
            } else {
                Vec::new()
            },
            trace_id: if rng.chance(50) {
                rng.id(16)
            } else {
                Vec::new()
            },
            value: Some(if rng.chance(50) {
                exemplar::Value::AsDouble(1.5)
            } else {
                exemplar::Value::AsInt(rng.next() as i64)
            }),
        })
        .collect()
}

fn metric(rng: &mut Rng) -> Metric {
    let number = |rng: &mut Rng| NumberDataPoint {
        attributes: attributes(rng, 1),
        start_time_unix_nano: rng.next(),
        time_unix_nano: rng.next(),
        exemplars: exemplars(rng),
        flags: rng.below(2) as u32,
        value: Some(if rng.chance(50) {
            number_data_point::Value::AsDouble(0.25)
        } else {
            number_data_point::Value::AsInt(rng.next() as i64)
        }),
    };
    let points = |rng: &mut Rng| (0..rng.below(3)).map(|_| number(rng)).collect::<Vec<_>>();
    let data = match rng.below(5) {
        0 => metric::Data::Gauge(Gauge {
            data_points: points(rng),
        }),
        1 => metric::Data::Sum(Sum {
            data_points: points(rng),
            aggregation_temporality: rng.below(3) as i32,
            is_monotonic: rng.chance(50),
        }),
        2 => metric::Data::Histogram(Histogram {
            data_points: (0..rng.below(3))
                .map(|_| HistogramDataPoint {
                    attributes: attributes(rng, 1),
                    start_time_unix_nano: rng.next(),
                    time_unix_nano: rng.next(),
                    count: rng.below(100),
                    sum: rng.chance(50).then_some(2.5),
                    bucket_counts: (0..rng.below(4)).map(|_| rng.below(9)).collect(),
                    explicit_bounds: (0..rng.below(3)).map(|i| i as f64).collect(),
                    exemplars: exemplars(rng),
                    flags: 0,
                    min: rng.chance(50).then_some(0.5),
                    max: rng.chance(50).then_some(9.5),
                })
                .collect(),
            aggregation_temporality: 2,
        }),
        3 => metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: (0..rng.below(3))
                .map(|_| ExponentialHistogramDataPoint {
                    attributes: attributes(rng, 1),
                    start_time_unix_nano: rng.next(),
                    time_unix_nano: rng.next(),
                    count: rng.below(100),
                    sum: rng.chance(50).then_some(1.0),
                    scale: rng.below(20) as i32 - 10,
                    zero_count: rng.below(3),
                    positive: rng.chance(70).then(|| Buckets {
                        offset: rng.below(10) as i32 - 5,
                        bucket_counts: (0..rng.below(4))
                            .map(|_| rng.next() >> rng.below(64))
                            .collect(),
                    }),
                    negative: rng.chance(30).then(Buckets::default),
                    flags: 0,
                    exemplars: exemplars(rng),
                    min: None,
                    max: rng.chance(50).then_some(3.0),
                    zero_threshold: 0.0,
                })
                .collect(),
            aggregation_temporality: 1,
        }),
        _ => metric::Data::Summary(Summary {
            data_points: (0..rng.below(3))
                .map(|_| SummaryDataPoint {
                    attributes: attributes(rng, 1),
                    start_time_unix_nano: 0,
                    time_unix_nano: rng.next(),
                    count: 3,
                    sum: 4.5,
                    quantile_values: (0..rng.below(3))
                        .map(|i| ValueAtQuantile {
                            quantile: i as f64 / 2.0,
                            value: 1.0,
                        })
                        .collect(),
                    flags: 0,
                })
                .collect(),
        }),
    };
    Metric {
        name: format!("metric.{}", rng.below(5)),
        description: rng.text(),
        unit: "s".into(),
        metadata: attributes(rng, 1),
        data: rng.chance(95).then_some(data),
    }
}

fn metrics(rng: &mut Rng) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: (0..1 + rng.below(3))
            .map(|_| ResourceMetrics {
                resource: resource(rng),
                scope_metrics: (0..1 + rng.below(2))
                    .map(|_| ScopeMetrics {
                        scope: scope(rng),
                        metrics: (0..rng.below(4)).map(|_| metric(rng)).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn logs(rng: &mut Rng) -> ExportLogsServiceRequest {
    let record = |rng: &mut Rng| LogRecord {
        time_unix_nano: rng.next(),
        observed_time_unix_nano: rng.next(),
        severity_number: rng.below(25) as i32,
        severity_text: "INFO".into(),
        body: rng.chance(90).then(|| any_value(rng, 2)),
        attributes: attributes(rng, 2),
        dropped_attributes_count: 0,
        flags: rng.below(2) as u32,
        trace_id: if rng.chance(60) {
            rng.id(16)
        } else {
            Vec::new()
        },
        span_id: if rng.chance(60) {
            rng.id(8)
        } else {
            Vec::new()
        },
        event_name: if rng.chance(20) {
            "app.event".into()
        } else {
            String::new()
        },
    };
    ExportLogsServiceRequest {
        resource_logs: (0..1 + rng.below(3))
            .map(|_| ResourceLogs {
                resource: resource(rng),
                scope_logs: (0..1 + rng.below(2))
                    .map(|_| ScopeLogs {
                        scope: scope(rng),
                        log_records: (0..rng.below(4)).map(|_| record(rng)).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

// ---- a generic protobuf tree, for structure-aware mutation ----

#[derive(Clone, Debug)]
enum Payload {
    Varint(Vec<u8>),
    I64([u8; 8]),
    I32([u8; 4]),
    /// Raw bytes, and the fields they hold when they read as a message.
    Len(Vec<u8>, Option<Vec<Field>>),
    Group(Vec<Field>),
}

#[derive(Clone, Debug)]
struct Field {
    number: u32,
    payload: Payload,
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (shift * 7);
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Parses `buf` as a message, or `None`; stops at `end_group` when parsing a group's body.
fn parse(buf: &[u8], pos: &mut usize, end_group: Option<u32>, depth: usize) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    while *pos < buf.len() {
        let key = read_varint(buf, pos)?;
        let (number, wire) = ((key >> 3) as u32, key & 7);
        if number == 0 || depth > 120 {
            return None;
        }
        let payload = match wire {
            0 => {
                let from = *pos;
                read_varint(buf, pos)?;
                Payload::Varint(buf[from..*pos].to_vec())
            }
            1 => {
                let bytes = buf.get(*pos..*pos + 8)?;
                *pos += 8;
                Payload::I64(bytes.try_into().ok()?)
            }
            2 => {
                let len = read_varint(buf, pos)? as usize;
                let bytes = buf.get(*pos..pos.checked_add(len)?)?.to_vec();
                *pos += len;
                let mut inner = 0;
                let children = parse(&bytes, &mut inner, None, depth + 1).filter(|c| !c.is_empty());
                Payload::Len(bytes, children)
            }
            3 => Payload::Group(parse(buf, pos, Some(number), depth + 1)?),
            4 => {
                return (end_group == Some(number)).then_some(fields);
            }
            5 => {
                let bytes = buf.get(*pos..*pos + 4)?;
                *pos += 4;
                Payload::I32(bytes.try_into().ok()?)
            }
            _ => return None,
        };
        fields.push(Field { number, payload });
    }
    end_group.is_none().then_some(fields)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn encode(fields: &[Field], out: &mut Vec<u8>) {
    for field in fields {
        let key = |wire: u64| (u64::from(field.number) << 3) | wire;
        match &field.payload {
            Payload::Varint(raw) => {
                put_varint(out, key(0));
                out.extend_from_slice(raw);
            }
            Payload::I64(raw) => {
                put_varint(out, key(1));
                out.extend_from_slice(raw);
            }
            Payload::I32(raw) => {
                put_varint(out, key(5));
                out.extend_from_slice(raw);
            }
            Payload::Len(raw, children) => {
                put_varint(out, key(2));
                let mut body = Vec::new();
                match children {
                    Some(children) => encode(children, &mut body),
                    None => body.extend_from_slice(raw),
                }
                put_varint(out, body.len() as u64);
                out.extend_from_slice(&body);
            }
            Payload::Group(children) => {
                put_varint(out, key(3));
                encode(children, out);
                put_varint(out, key(4));
            }
        }
    }
}

fn count_fields(fields: &[Field]) -> usize {
    fields
        .iter()
        .map(|f| {
            1 + match &f.payload {
                Payload::Len(_, Some(children)) | Payload::Group(children) => {
                    count_fields(children)
                }
                _ => 0,
            }
        })
        .sum()
}

/// Applies one mutation to the `target`-th field (depth first); returns `true` once applied.
fn mutate_at(fields: &mut Vec<Field>, target: &mut usize, rng: &mut Rng) -> bool {
    for i in 0..fields.len() {
        if *target == 0 {
            mutate_field(fields, i, rng);
            return true;
        }
        *target -= 1;
        if let Payload::Len(_, Some(children)) | Payload::Group(children) = &mut fields[i].payload
            && mutate_at(children, target, rng)
        {
            return true;
        }
    }
    false
}

fn nested_chain(depth: usize, group: bool) -> Vec<Field> {
    let mut inner = vec![Field {
        number: 1,
        payload: Payload::Varint(vec![1]),
    }];
    for _ in 0..depth {
        inner = vec![Field {
            number: if group { 30 } else { 1 },
            payload: if group {
                Payload::Group(inner)
            } else {
                Payload::Len(Vec::new(), Some(inner))
            },
        }];
    }
    inner
}

fn mutate_field(fields: &mut Vec<Field>, i: usize, rng: &mut Rng) {
    let wrong_payload = |rng: &mut Rng| match rng.below(5) {
        0 => Payload::Varint(vec![rng.below(128) as u8]),
        1 => Payload::I64(8u64.to_le_bytes()),
        2 => Payload::I32([1, 0, 0, 0]),
        3 => {
            let n = rng.below(9) as usize;
            Payload::Len(rng.bytes(n), None)
        }
        _ => Payload::Group(Vec::new()),
    };
    match rng.below(12) {
        // Another wire type for the same field.
        0 | 1 => fields[i].payload = wrong_payload(rng),
        // Invalid UTF-8 (or any byte) inside a length-delimited value.
        2 => {
            if let Payload::Len(raw, children) = &mut fields[i].payload
                && !raw.is_empty()
            {
                let at = rng.below(raw.len() as u64) as usize;
                raw[at] = [0xff, 0xc3, 0x80, 0x00][rng.below(4) as usize];
                *children = None;
            }
        }
        // An overflowing or maximal 10-byte varint.
        3 => {
            let mut raw = vec![0xff; 9];
            raw.push(if rng.chance(50) { 0x02 } else { 0x01 });
            fields[i].payload = Payload::Varint(raw);
        }
        // The same field again (last-one-wins for scalars, merge for messages).
        4 | 5 => {
            let copy = fields[i].clone();
            let at = rng.below(fields.len() as u64 + 1) as usize;
            fields.insert(at, copy);
        }
        6 => {
            fields.remove(i);
        }
        // An unknown field of any wire type, groups included.
        7 | 8 => {
            let number = [17, 20, 99, 1000, 536_870_911][rng.below(5) as usize];
            let payload = if rng.chance(30) {
                Payload::Group(vec![Field {
                    number: 1,
                    payload: wrong_payload(rng),
                }])
            } else {
                wrong_payload(rng)
            };
            fields.insert(i, Field { number, payload });
        }
        // Nesting around the decoder's recursion limit, as messages or as unknown groups.
        9 => {
            let group = rng.chance(50);
            let chain = nested_chain(85 + rng.below(30) as usize, group);
            fields.insert(
                i,
                Field {
                    number: if group { 31 } else { fields[i].number },
                    payload: if group {
                        Payload::Group(chain)
                    } else {
                        Payload::Len(Vec::new(), Some(chain))
                    },
                },
            );
        }
        // A length-delimited value one byte short or long.
        10 => {
            if let Payload::Len(raw, children) = &mut fields[i].payload {
                if rng.chance(50) {
                    raw.pop();
                } else {
                    raw.push(0);
                }
                *children = None;
            }
        }
        // An id-sized value of zeros or of the wrong size.
        _ => {
            let len = [0, 7, 8, 15, 16][rng.below(5) as usize];
            fields[i].payload = Payload::Len(vec![0; len], None);
        }
    }
}

// ---- the oracle: prost plus OTLP's rules ----

fn id_ok(id: &[u8], len: usize, required: bool) -> bool {
    if id.is_empty() {
        return !required;
    }
    id.len() == len && !(required && id.iter().all(|&b| b == 0))
}

fn depth_ok(value: &AnyValue, depth: usize) -> bool {
    if depth > MAX_ANY_VALUE_DEPTH {
        return false;
    }
    match &value.value {
        Some(any_value::Value::ArrayValue(array)) => {
            array.values.iter().all(|v| depth_ok(v, depth + 1))
        }
        Some(any_value::Value::KvlistValue(list)) => attrs_ok(&list.values, depth + 1),
        _ => true,
    }
}

fn attrs_ok(attributes: &[KeyValue], depth: usize) -> bool {
    attributes
        .iter()
        .all(|kv| kv.value.as_ref().is_none_or(|v| depth_ok(v, depth)))
}

fn resource_ok(resource: &Option<Resource>, scope: &Option<InstrumentationScope>) -> bool {
    resource.as_ref().is_none_or(|r| attrs_ok(&r.attributes, 1))
        && scope.as_ref().is_none_or(|s| attrs_ok(&s.attributes, 1))
}

fn span_ok(span: &Span) -> bool {
    id_ok(&span.trace_id, 16, true)
        && id_ok(&span.span_id, 8, true)
        && id_ok(&span.parent_span_id, 8, false)
        && attrs_ok(&span.attributes, 1)
        && span.events.iter().all(|e| attrs_ok(&e.attributes, 1))
        && span.links.iter().all(|l| {
            id_ok(&l.trace_id, 16, false)
                && id_ok(&l.span_id, 8, false)
                && attrs_ok(&l.attributes, 1)
        })
}

fn exemplars_ok(exemplars: &[Exemplar]) -> bool {
    exemplars.iter().all(|e| {
        id_ok(&e.trace_id, 16, false)
            && id_ok(&e.span_id, 8, false)
            && attrs_ok(&e.filtered_attributes, 1)
    })
}

/// Items in a decoded request, and how many of them obey OTLP's rules (all of them when the resource or
/// scope around them breaks a rule: then the walk rejects the whole entry).
fn judge(signal: Signal, bytes: &[u8]) -> Result<(usize, usize, bool), prost::DecodeError> {
    let (mut items, mut good, mut entries_ok) = (0, 0, true);
    match signal {
        Signal::Traces => {
            for rs in ExportTraceServiceRequest::decode(bytes)?.resource_spans {
                for ss in &rs.scope_spans {
                    entries_ok &= resource_ok(&rs.resource, &ss.scope);
                    items += ss.spans.len();
                    good += ss.spans.iter().filter(|s| span_ok(s)).count();
                }
                entries_ok &= resource_ok(&rs.resource, &None);
            }
        }
        Signal::Metrics => {
            for rm in ExportMetricsServiceRequest::decode(bytes)?.resource_metrics {
                entries_ok &= resource_ok(&rm.resource, &None);
                for sm in &rm.scope_metrics {
                    entries_ok &= resource_ok(&None, &sm.scope);
                    for m in &sm.metrics {
                        entries_ok &= attrs_ok(&m.metadata, 1);
                        let mut judge_points = |oks: Vec<bool>| {
                            items += oks.len();
                            good += oks.iter().filter(|ok| **ok).count();
                        };
                        match &m.data {
                            Some(metric::Data::Gauge(g)) => judge_points(
                                g.data_points
                                    .iter()
                                    .map(|p| {
                                        attrs_ok(&p.attributes, 1) && exemplars_ok(&p.exemplars)
                                    })
                                    .collect(),
                            ),
                            Some(metric::Data::Sum(s)) => judge_points(
                                s.data_points
                                    .iter()
                                    .map(|p| {
                                        attrs_ok(&p.attributes, 1) && exemplars_ok(&p.exemplars)
                                    })
                                    .collect(),
                            ),
                            Some(metric::Data::Histogram(h)) => judge_points(
                                h.data_points
                                    .iter()
                                    .map(|p| {
                                        attrs_ok(&p.attributes, 1) && exemplars_ok(&p.exemplars)
                                    })
                                    .collect(),
                            ),
                            Some(metric::Data::ExponentialHistogram(h)) => judge_points(
                                h.data_points
                                    .iter()
                                    .map(|p| {
                                        attrs_ok(&p.attributes, 1) && exemplars_ok(&p.exemplars)
                                    })
                                    .collect(),
                            ),
                            Some(metric::Data::Summary(s)) => judge_points(
                                s.data_points
                                    .iter()
                                    .map(|p| attrs_ok(&p.attributes, 1))
                                    .collect(),
                            ),
                            None => {}
                        }
                    }
                }
            }
        }
        Signal::Logs => {
            for rl in ExportLogsServiceRequest::decode(bytes)?.resource_logs {
                entries_ok &= resource_ok(&rl.resource, &None);
                for sl in &rl.scope_logs {
                    entries_ok &= resource_ok(&None, &sl.scope);
                    items += sl.log_records.len();
                    good += sl
                        .log_records
                        .iter()
                        .filter(|r| {
                            id_ok(&r.trace_id, 16, false)
                                && id_ok(&r.span_id, 8, false)
                                && attrs_ok(&r.attributes, 1)
                                && r.body.as_ref().is_none_or(|b| depth_ok(b, 1))
                        })
                        .count();
                }
            }
        }
    }
    Ok((items, good, entries_ok))
}

/// Whether two encodings decode to the same request (unknown fields are not kept by decoders).
fn same_decoded(signal: Signal, a: &[u8], b: &[u8]) -> bool {
    match signal {
        Signal::Traces => {
            ExportTraceServiceRequest::decode(a).ok() == ExportTraceServiceRequest::decode(b).ok()
        }
        Signal::Metrics => {
            ExportMetricsServiceRequest::decode(a).ok()
                == ExportMetricsServiceRequest::decode(b).ok()
        }
        Signal::Logs => {
            ExportLogsServiceRequest::decode(a).ok() == ExportLogsServiceRequest::decode(b).ok()
        }
    }
}

/// The checks every case must pass.
/// What `prost` gives for the first attribute named `key`: its value, `None` when there is no such key.
fn prost_value(attributes: &[KeyValue], key: &str) -> Option<AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.clone().unwrap_or_default())
}

/// The reader's value for `key`, as the `AnyValue` it stands for.
fn read_value(attributes: &Attributes<'_>, key: &str) -> Result<Option<AnyValue>, TestCaseError> {
    let value = attributes
        .get(key)
        .map_err(|e| TestCaseError::fail(format!("lookup of {key:?} failed: {e}")))?;
    Ok(value.map(|value| match value {
        AttributeValue::String(text) => AnyValue {
            value: Some(any_value::Value::StringValue(text.to_string())),
        },
        AttributeValue::Encoded(bytes) => AnyValue::decode(bytes.as_ref())
            .unwrap_or_else(|e| panic!("an encoded value that does not decode: {e}")),
    }))
}

/// The span reader against `prost` on a request `prost` decodes.
fn spans_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(request) = ExportTraceServiceRequest::decode(bytes) else {
        return Ok(());
    };
    let expected: Vec<(&ResourceSpans, &Span)> = request
        .resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans
                .iter()
                .flat_map(move |ss| ss.spans.iter().map(move |s| (rs, s)))
        })
        .collect();
    let mut index = 0;
    let mut outcome = Ok(());
    let walked = for_each_span(bytes, |resource, span| {
        let Some((resource_spans, expected)) = expected.get(index) else {
            outcome = Err(TestCaseError::fail("more spans than prost decodes"));
            return Err(WireError("stop"));
        };
        index += 1;
        let compare = || -> Result<(), TestCaseError> {
            let entry = request
                .resource_spans
                .iter()
                .position(|rs| std::ptr::eq(rs, *resource_spans));
            prop_assert_eq!(Some(resource.entry), entry, "the span's resource entry");
            prop_assert_eq!(span.name, expected.name.as_str());
            prop_assert_eq!(span.trace_id, expected.trace_id.as_slice());
            prop_assert_eq!(span.span_id, expected.span_id.as_slice());
            prop_assert_eq!(span.kind, expected.kind);
            prop_assert_eq!(span.start_time_unix_nano, expected.start_time_unix_nano);
            prop_assert_eq!(span.end_time_unix_nano, expected.end_time_unix_nano);
            prop_assert_eq!(
                span.status_code,
                expected.status.as_ref().map(|s| s.code).unwrap_or(0)
            );
            let resource_attributes = resource_spans
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            for key in resource_attributes
                .iter()
                .map(|kv| kv.key.as_str())
                .chain(["service.name", "absent"])
            {
                prop_assert_eq!(
                    read_value(&resource.attributes, key)?,
                    prost_value(resource_attributes, key),
                    "resource {}",
                    key
                );
            }
            for key in expected
                .attributes
                .iter()
                .map(|kv| kv.key.as_str())
                .chain(["absent"])
            {
                prop_assert_eq!(
                    read_value(&span.attributes, key)?,
                    prost_value(&expected.attributes, key),
                    "span {}",
                    key
                );
            }
            Ok(())
        };
        match compare() {
            Ok(()) => Ok(()),
            Err(failure) => {
                outcome = Err(failure);
                Err(WireError("stop"))
            }
        }
    });
    outcome?;
    prop_assert!(
        walked.is_ok(),
        "the reader refused a request prost decodes: {walked:?}"
    );
    prop_assert_eq!(index, expected.len(), "spans missed");
    Ok(())
}

/// Each entry's resource attributes, and the first trace id.
type Summaries = (Vec<Vec<KeyValue>>, Option<Vec<u8>>);

/// Each entry's resource and the first trace id, read in place, against `prost` on a request it decodes.
fn resources_agree(signal: Signal, bytes: &[u8]) -> Result<(), TestCaseError> {
    let decoded: Result<Summaries, prost::DecodeError> = match signal {
        Signal::Traces => ExportTraceServiceRequest::decode(bytes).map(|r| {
            let first = r
                .resource_spans
                .iter()
                .flat_map(|e| &e.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| s.trace_id.clone())
                .find(|id| !id.is_empty());
            let resources = r
                .resource_spans
                .into_iter()
                .map(|e| e.resource.map(|r| r.attributes).unwrap_or_default())
                .collect();
            (resources, first)
        }),
        Signal::Metrics => ExportMetricsServiceRequest::decode(bytes).map(|r| {
            let resources = r
                .resource_metrics
                .into_iter()
                .map(|e| e.resource.map(|r| r.attributes).unwrap_or_default())
                .collect();
            (resources, None)
        }),
        Signal::Logs => ExportLogsServiceRequest::decode(bytes).map(|r| {
            let first = r
                .resource_logs
                .iter()
                .flat_map(|e| &e.scope_logs)
                .flat_map(|s| &s.log_records)
                .map(|l| l.trace_id.clone())
                .find(|id| !id.is_empty());
            let resources = r
                .resource_logs
                .into_iter()
                .map(|e| e.resource.map(|r| r.attributes).unwrap_or_default())
                .collect();
            (resources, first)
        }),
    };
    let Ok((resources, first)) = decoded else {
        return Ok(());
    };
    let read = first_trace_id(signal, bytes);
    prop_assert_eq!(read, Ok(first.as_deref()), "first trace id");
    let mut entries = 0;
    let mut outcome = Ok(());
    let walked = for_each_resource(bytes, |resource| {
        let expected_entry = entries;
        entries += 1;
        let compare = || -> Result<(), TestCaseError> {
            let expected = resources
                .get(resource.entry)
                .ok_or_else(|| TestCaseError::fail("an extra entry"))?;
            prop_assert_eq!(resource.entry, expected_entry, "entries in order");
            for key in expected
                .iter()
                .map(|kv| kv.key.as_str())
                .chain(["service.name", "absent"])
            {
                prop_assert_eq!(
                    read_value(&resource.attributes, key)?,
                    prost_value(expected, key),
                    "resource {}",
                    key
                );
            }
            Ok(())
        };
        compare().map_err(|failure| {
            outcome = Err(failure);
            WireError("stop")
        })
    });
    outcome?;
    prop_assert!(
        walked.is_ok(),
        "the reader refused a request prost decodes: {walked:?}"
    );
    prop_assert_eq!(entries, resources.len(), "entries missed");
    Ok(())
}

/// The value `prost` gives a number point.
fn point_value(point: &NumberDataPoint) -> f64 {
    match point.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => 0.0,
    }
}

/// The points the reader gives equal `prost`'s (attributes decoded from the bytes it hands over).
fn points_agree(
    read: &[NumberPoint<'_>],
    decoded: &[NumberDataPoint],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(read.len(), decoded.len(), "point count");
    for (read, decoded) in read.iter().zip(decoded) {
        let attributes = NumberDataPoint::decode(read.attributes)
            .map_err(|e| TestCaseError::fail(format!("attribute bytes do not decode: {e}")))?
            .attributes;
        prop_assert_eq!(&attributes, &decoded.attributes);
        prop_assert_eq!(read.time_unix_nano, decoded.time_unix_nano);
        prop_assert_eq!(read.value.to_bits(), point_value(decoded).to_bits());
        prop_assert_eq!(read.flags, decoded.flags);
    }
    Ok(())
}

/// Read again expecting runs read before (each point's own, and its neighbour's, which mostly differ), the
/// points are the same; those given their own run say they were as expected.
fn expected_runs_agree(body: &[u8], points: &[NumberPoint<'_>]) -> Result<(), TestCaseError> {
    for shift in [0, 1] {
        let mut again = Vec::new();
        let expected = |i: usize| points.get(i + shift).map(|p| p.attributes);
        let read =
            number_points(body, &mut again, expected).map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert!(read);
        prop_assert_eq!(again.len(), points.len());
        for (i, (again, first)) in again.iter().zip(points).enumerate() {
            prop_assert_eq!(again.attributes, first.attributes);
            prop_assert_eq!(again.time_unix_nano, first.time_unix_nano);
            prop_assert_eq!(again.value.to_bits(), first.value.to_bits());
            prop_assert_eq!(again.flags, first.flags);
            if shift == 0 && !first.attributes.is_empty() {
                prop_assert!(again.as_expected, "point {} did not match its own run", i);
            }
        }
    }
    Ok(())
}

fn metrics_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(decoded) = ExportMetricsServiceRequest::decode(bytes) else {
        // Not a request the receiver lets through: the reader may stop anywhere.
        return Ok(());
    };
    let mut items = Vec::new();
    let walked = for_each_metric(bytes, |item| {
        items.push(item);
        Ok::<_, WireError>(())
    });
    prop_assert!(
        walked.is_ok(),
        "the reader refused a request prost decodes: {walked:?}"
    );
    let mut items = items.into_iter();
    for (entry, resource_metrics) in decoded.resource_metrics.iter().enumerate() {
        let Some(MetricsItem::Entry {
            entry: at,
            resource,
        }) = items.next()
        else {
            return Err(TestCaseError::fail("an entry is missing"));
        };
        prop_assert_eq!(at, entry);
        let resource = Resource::decode(resource.as_ref())
            .map_err(|e| TestCaseError::fail(format!("resource bytes: {e}")))?;
        prop_assert_eq!(
            &resource,
            &resource_metrics.resource.clone().unwrap_or_default()
        );
        for scope_metrics in &resource_metrics.scope_metrics {
            let Some(MetricsItem::Scope { scope }) = items.next() else {
                return Err(TestCaseError::fail("a scope is missing"));
            };
            let scope = InstrumentationScope::decode(scope.as_ref())
                .map_err(|e| TestCaseError::fail(format!("scope bytes: {e}")))?;
            prop_assert_eq!(&scope, &scope_metrics.scope.clone().unwrap_or_default());
            for metric in &scope_metrics.metrics {
                let Some(MetricsItem::Metric(read)) = items.next() else {
                    return Err(TestCaseError::fail("a metric is missing"));
                };
                prop_assert_eq!(read.name, metric.name.as_str());
                prop_assert_eq!(read.unit, metric.unit.as_str());
                prop_assert_eq!(&Metric::decode(read.message).ok(), &Some(metric.clone()));
                let mut points = Vec::new();
                match (&read.data, &metric.data) {
                    (MetricData::None, None) | (MetricData::Other, Some(_)) => {}
                    (MetricData::Gauge(body), Some(metric::Data::Gauge(gauge))) => {
                        if number_points(body, &mut points, |_| None)
                            .map_err(|e| TestCaseError::fail(e.0))?
                        {
                            points_agree(&points, &gauge.data_points)?;
                            expected_runs_agree(body, &points)?;
                        }
                    }
                    (
                        MetricData::Sum {
                            body,
                            temporality,
                            monotonic,
                        },
                        Some(metric::Data::Sum(sum)),
                    ) => {
                        prop_assert_eq!(*temporality, sum.aggregation_temporality);
                        prop_assert_eq!(*monotonic, sum.is_monotonic);
                        if number_points(body, &mut points, |_| None)
                            .map_err(|e| TestCaseError::fail(e.0))?
                        {
                            points_agree(&points, &sum.data_points)?;
                            expected_runs_agree(body, &points)?;
                        }
                    }
                    (read, decoded) => {
                        return Err(TestCaseError::fail(format!(
                            "data read as {read:?}, decoded as {decoded:?}"
                        )));
                    }
                }
            }
        }
    }
    prop_assert!(
        items.next().is_none(),
        "the reader handed over more than prost decodes"
    );
    Ok(())
}

fn check(signal: Signal, bytes: &[u8]) -> Result<(), TestCaseError> {
    if signal == Signal::Traces {
        spans_agree(bytes)?;
    }
    if signal == Signal::Metrics {
        metrics_agree(bytes)?;
    }
    resources_agree(signal, bytes)?;
    let verdict = scan(signal, bytes);
    let oracle = judge(signal, bytes);
    let Ok(summary) = verdict else {
        prop_assert!(
            oracle.is_err(),
            "the walk refused a request prost decodes: {verdict:?}"
        );
        return Ok(());
    };
    // What the walk accepts, every exporter can read.
    let accepted = without_invalid(bytes, &summary);
    let judged = judge(signal, &accepted);
    prop_assert!(
        judged.is_ok(),
        "accepted bytes do not decode: {:?} ({summary:?})",
        judged
    );
    let (items, good, entries_ok) = judged.unwrap_or_default();
    prop_assert_eq!(
        items as u64,
        summary.items,
        "item count of the accepted part"
    );
    prop_assert_eq!(good, items, "accepted items break OTLP's rules");
    prop_assert!(entries_ok, "accepted entries break OTLP's rules");
    let mut json = Vec::new();
    prop_assert!(protobuf_to_json(signal, &accepted, &mut json).is_ok());
    // A request prost decodes loses only its rule-breaking items (or, when a rule breaks outside any item,
    // the entries concerned).
    if let Ok((all, all_good, all_entries_ok)) = oracle {
        if all_entries_ok {
            prop_assert_eq!(
                summary.items,
                all_good as u64,
                "valid items rejected: {:?}",
                summary.first_error()
            );
            prop_assert_eq!(summary.rejected_items, (all - all_good) as u64);
        }
        if all_entries_ok && all == all_good {
            prop_assert!(summary.all_valid());
            prop_assert!(
                same_decoded(signal, &accepted, bytes),
                "a valid request is admitted unchanged"
            );
        }
    }
    Ok(())
}

fn generate(signal: Signal, rng: &mut Rng) -> Vec<u8> {
    match signal {
        Signal::Traces => traces(rng).encode_to_vec(),
        Signal::Metrics => metrics(rng).encode_to_vec(),
        Signal::Logs => logs(rng).encode_to_vec(),
    }
}

fn case(signal: Signal, seed: u64, mutations: u8) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed | 1);
    let bytes = generate(signal, &mut rng);
    check(signal, &bytes)?;
    if rng.chance(3) {
        // Plain random bytes.
        let n = rng.below(64) as usize;
        return check(signal, &rng.bytes(n));
    }
    let mut pos = 0;
    let Some(mut tree) = parse(&bytes, &mut pos, None, 0) else {
        return Ok(());
    };
    for _ in 0..mutations % 4 + 1 {
        let total = count_fields(&tree);
        if total == 0 {
            break;
        }
        let mut target = rng.below(total as u64) as usize;
        mutate_at(&mut tree, &mut target, &mut rng);
    }
    let mut mutated = Vec::new();
    encode(&tree, &mut mutated);
    if rng.chance(8) {
        mutated.truncate(rng.below(mutated.len() as u64 + 1) as usize);
    }
    check(signal, &mutated)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn traces_walk_agrees_with_prost(seed in any::<u64>(), mutations in any::<u8>()) {
        case(Signal::Traces, seed, mutations)?;
    }

    #[test]
    fn metrics_walk_agrees_with_prost(seed in any::<u64>(), mutations in any::<u8>()) {
        case(Signal::Metrics, seed, mutations)?;
    }

    #[test]
    fn logs_walk_agrees_with_prost(seed in any::<u64>(), mutations in any::<u8>()) {
        case(Signal::Logs, seed, mutations)?;
    }
}

#[test]
fn the_generator_makes_valid_and_invalid_requests() {
    // Guards the test itself: most generated requests are fully valid, and some break a rule.
    let (mut valid, mut broken) = (0, 0);
    for seed in 1..400u64 {
        let mut rng = Rng(seed * 7919);
        let bytes = generate(Signal::Traces, &mut rng);
        let (items, good, _) = judge(Signal::Traces, &bytes).unwrap();
        if items == good {
            valid += 1;
        } else {
            broken += 1;
        }
    }
    assert!(valid > 100 && broken > 50, "valid {valid}, broken {broken}");
}

#[test]
fn the_metric_reader_is_compared_on_points() {
    // Guards the test itself: generated metrics requests have gauges and sums whose points are read in place.
    let mut points_read = 0;
    for seed in 1..200u64 {
        let mut rng = Rng(seed * 7919);
        let bytes = generate(Signal::Metrics, &mut rng);
        for_each_metric(&bytes, |item| {
            if let MetricsItem::Metric(metric) = item
                && let MetricData::Gauge(body) | MetricData::Sum { body, .. } = metric.data
            {
                let mut points = Vec::new();
                if number_points(body, &mut points, |_| None)? {
                    points_read += points.len();
                }
            }
            Ok::<_, WireError>(())
        })
        .unwrap();
    }
    assert!(points_read > 100, "points read: {points_read}");
}
