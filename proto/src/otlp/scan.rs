//! A zero-copy validator for encoded OTLP export requests.
//!
//! [`scan`] walks the protobuf wire format of an `Export{Trace,Metrics,Logs}ServiceRequest` following the OTLP
//! schema, without allocating: it checks every length and wire type, that strings are UTF-8, that trace and span
//! ids have their fixed lengths, and that `AnyValue` nesting stays below [`MAX_ANY_VALUE_DEPTH`]. It counts the
//! items (spans, data points, log records) and records where each top-level `Resource*` entry lies, so a batch
//! can be split without decoding. Unknown fields are skipped, as proto3 requires.
//!
//! What it accepts, `prost` decodes; what it rejects comes with the path of the offending field, e.g.
//! `resource_spans[0].scope_spans[0].spans[3].attributes[1].value.string_value: invalid UTF-8`.

use std::fmt;
use std::ops::Range;

use super::Signal;

/// Deepest `AnyValue` nesting (arrays and key-value lists inside each other) a request may carry.
pub const MAX_ANY_VALUE_DEPTH: usize = 32;

/// What a successful scan learned about a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Valid spans, metric data points or log records in the request.
    pub items: u64,
    /// Items inside top-level entries that failed validation (see [`ResourceEntry::error`]).
    pub rejected_items: u64,
    /// Byte range and item count of each top-level `resource_*` entry (field 1 of the request), in order.
    pub resources: Vec<ResourceEntry>,
}

/// One top-level `ResourceSpans`/`ResourceMetrics`/`ResourceLogs` entry of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceEntry {
    /// The entry's bytes in the request, tag and length prefix included, so concatenating entries yields a
    /// valid request.
    pub bytes: Range<usize>,
    /// Items inside this entry.
    pub items: u64,
    /// Why this entry is invalid, when it is. Its framing was intact, so the other entries stand on their own
    /// and can be accepted (an OTLP partial success).
    pub error: Option<ScanError>,
}

impl Summary {
    /// The first validation error of any entry.
    pub fn first_error(&self) -> Option<&ScanError> {
        self.resources.iter().find_map(|r| r.error.as_ref())
    }
}

/// Why a request is not valid OTLP, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanError {
    /// Field path from the request root, outermost first (`resource_spans[0]`, `scope_spans[2]`, …).
    pub path: Vec<String>,
    /// What is wrong at that place.
    pub problem: String,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "request: {}", self.problem)
        } else {
            let mut first = true;
            for segment in &self.path {
                if !first && !segment.starts_with('[') {
                    f.write_str(".")?;
                }
                f.write_str(segment)?;
                first = false;
            }
            write!(f, ": {}", self.problem)
        }
    }
}

impl std::error::Error for ScanError {}

impl ScanError {
    fn new(problem: impl Into<String>) -> Self {
        ScanError {
            path: Vec::new(),
            problem: problem.into(),
        }
    }

    fn within(mut self, field: &'static str, index: Option<usize>) -> Self {
        match index {
            Some(i) => {
                self.path.insert(0, format!("[{i}]"));
                self.path.insert(0, field.to_string());
            }
            None => self.path.insert(0, field.to_string()),
        }
        self
    }
}

/// Validates an encoded export request of `signal` and counts its items.
///
/// A request whose framing is broken (a length running past its message, a truncated varint) is an `Err`. A
/// top-level entry whose framing holds but whose content is invalid (bad UTF-8, a wrong id length, nesting too
/// deep) is reported in its [`ResourceEntry::error`], with its items counted in [`Summary::rejected_items`].
pub fn scan(signal: Signal, buf: &[u8]) -> Result<Summary, ScanError> {
    let (field_name, resource_schema) = match signal {
        Signal::Traces => ("resource_spans", &RESOURCE_SPANS),
        Signal::Metrics => ("resource_metrics", &RESOURCE_METRICS),
        Signal::Logs => ("resource_logs", &RESOURCE_LOGS),
    };
    let mut summary = Summary::default();
    let mut reader = Reader { buf, pos: 0 };
    let mut index = 0usize;
    while !reader.done() {
        let start = reader.pos;
        let (field, wire) = reader.key()?;
        if field == 1 {
            if wire != WIRE_LEN {
                return Err(
                    ScanError::new(format!("wire type {wire}, expected a message"))
                        .within(field_name, Some(index)),
                );
            }
            let body = reader
                .len_delimited()
                .map_err(|e| e.within(field_name, Some(index)))?;
            let mut items = 0;
            let error = match walk(body, resource_schema, 0, true, &mut items) {
                Ok(()) => {
                    summary.items += items;
                    None
                }
                Err(error) => {
                    // Count what the client sent in this entry, looking only at structure.
                    items = 0;
                    walk(body, resource_schema, 0, false, &mut items)
                        .map_err(|e| e.within(field_name, Some(index)))?;
                    summary.rejected_items += items;
                    Some(error.within(field_name, Some(index)))
                }
            };
            summary.resources.push(ResourceEntry {
                bytes: start..reader.pos,
                items,
                error,
            });
            index += 1;
        } else {
            reader.skip(wire)?;
        }
    }
    Ok(summary)
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, ScanError> {
        // Tags and most lengths fit in one byte.
        if let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.varint_slow()
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64, ScanError> {
        let mut value = 0u64;
        for shift in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(ScanError::new("truncated varint"));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (shift * 7);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(ScanError::new("varint longer than 10 bytes"))
    }

    #[inline(always)]
    fn key(&mut self) -> Result<(u32, u8), ScanError> {
        let key = self.varint()?;
        let wire = (key & 7) as u8;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(ScanError::new(format!("invalid field number {field}")));
        }
        Ok((field as u32, wire))
    }

    #[inline(always)]
    fn len_delimited(&mut self) -> Result<&'a [u8], ScanError> {
        let len = self.varint()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if len > remaining {
            return Err(ScanError::new(format!(
                "length {len} runs past the end of the message ({remaining} bytes left)"
            )));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn fixed(&mut self, n: usize) -> Result<(), ScanError> {
        if self.buf.len() - self.pos < n {
            return Err(ScanError::new("truncated fixed-width field"));
        }
        self.pos += n;
        Ok(())
    }

    fn skip(&mut self, wire: u8) -> Result<(), ScanError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_I64 => self.fixed(8),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_I32 => self.fixed(4),
            other => Err(ScanError::new(format!("unsupported wire type {other}"))),
        }
    }
}

/// How one field of a message is checked.
#[derive(Clone, Copy)]
enum Kind {
    /// A nested message; `repeated` decides whether the path shows an index.
    Message(&'static Schema, bool),
    /// A UTF-8 string.
    Str,
    /// Bytes that must be empty or exactly this long (trace and span ids).
    Id(usize),
    /// An `AnyValue` (nesting depth is tracked).
    AnyValue,
    /// A scalar or opaque field: only its wire format is checked.
    Scalar,
}

struct Schema {
    /// Whether each instance of this message is one counted item.
    is_item: bool,
    /// `(field number, field name, kind)`; fields not listed are skipped like unknown fields.
    fields: &'static [(u32, &'static str, Kind)],
}

impl Schema {
    /// The index in `fields` of field number `field`.
    #[inline]
    fn slot(&self, field: u32) -> Option<usize> {
        self.fields.iter().position(|(n, _, _)| *n == field)
    }
}

/// Walks one message. With `strict` off, only the message structure is followed (to count items of an entry
/// already known to be invalid); strings, ids and values are not looked at.
fn walk(
    buf: &[u8],
    schema: &Schema,
    depth: usize,
    strict: bool,
    items: &mut u64,
) -> Result<(), ScanError> {
    if schema.is_item {
        *items += 1;
    }
    let mut reader = Reader { buf, pos: 0 };
    // Per-field repetition counters for error paths, only for the few repeated fields a message has.
    let mut counters = [0usize; 16];
    while !reader.done() {
        let (field, wire) = reader.key()?;
        let Some(slot) = schema.slot(field) else {
            reader.skip(wire)?;
            continue;
        };
        let (_, name, kind) = schema.fields[slot];
        if !strict && !matches!(kind, Kind::Message(..)) {
            reader.skip(wire)?;
            continue;
        }
        let index = counters[slot];
        counters[slot] += 1;
        match kind {
            Kind::Scalar => reader.skip(wire).map_err(|e| e.within(name, None))?,
            _ if wire != WIRE_LEN => {
                return Err(
                    ScanError::new(format!("wire type {wire}, expected length-delimited"))
                        .within(name, None),
                );
            }
            Kind::Message(inner, repeated) => {
                let body = reader.len_delimited().map_err(|e| e.within(name, None))?;
                walk(body, inner, depth, strict, items)
                    .map_err(|e| e.within(name, repeated.then_some(index)))?;
            }
            Kind::Str => {
                let body = reader.len_delimited().map_err(|e| e.within(name, None))?;
                if !is_utf8(body) {
                    return Err(ScanError::new("invalid UTF-8 in string").within(name, None));
                }
            }
            Kind::Id(len) => {
                let body = reader.len_delimited().map_err(|e| e.within(name, None))?;
                if !body.is_empty() && body.len() != len {
                    return Err(ScanError::new(format!(
                        "id is {} bytes, expected {len}",
                        body.len()
                    ))
                    .within(name, None));
                }
            }
            Kind::AnyValue => {
                let body = reader.len_delimited().map_err(|e| e.within(name, None))?;
                any_value(body, depth + 1).map_err(|e| e.within(name, None))?;
            }
        }
    }
    Ok(())
}

/// UTF-8 validation with an inlined ASCII fast path: OTLP keys and most values are short ASCII strings, for
/// which a call into a general validator costs more than the check itself.
#[inline(always)]
fn is_utf8(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut high = 0u64;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        high |= u64::from_ne_bytes(word);
    }
    for &byte in chunks.remainder() {
        high |= u64::from(byte);
    }
    high & 0x8080_8080_8080_8080 == 0 || simdutf8::basic::from_utf8(bytes).is_ok()
}

fn any_value(buf: &[u8], depth: usize) -> Result<(), ScanError> {
    if depth > MAX_ANY_VALUE_DEPTH {
        return Err(ScanError::new(format!(
            "AnyValue nested deeper than {MAX_ANY_VALUE_DEPTH} levels"
        )));
    }
    let mut no_items = 0;
    walk(buf, &ANY_VALUE, depth, true, &mut no_items)
}

macro_rules! schema {
    ($name:ident, item: $item:expr, [$(($n:expr, $f:expr, $k:expr)),* $(,)?]) => {
        static $name: Schema = Schema { is_item: $item, fields: &[$(($n, $f, $k)),*] };
    };
}

use Kind::{AnyValue as Any, Id, Message as Msg, Scalar, Str};

schema!(ANY_VALUE, item: false, [
    (1, "string_value", Str), (5, "array_value", Msg(&ARRAY_VALUE, false)),
    (6, "kvlist_value", Msg(&KEY_VALUE_LIST, false)), (7, "bytes_value", Scalar),
]);
schema!(ARRAY_VALUE, item: false, [(1, "values", Any)]);
schema!(KEY_VALUE_LIST, item: false, [(1, "values", Msg(&KEY_VALUE, true))]);
schema!(KEY_VALUE, item: false, [(1, "key", Str), (2, "value", Any)]);
schema!(SCOPE, item: false, [
    (1, "name", Str), (2, "version", Str), (3, "attributes", Msg(&KEY_VALUE, true)),
]);
schema!(RESOURCE, item: false, [(1, "attributes", Msg(&KEY_VALUE, true))]);

schema!(RESOURCE_SPANS, item: false, [
    (1, "resource", Msg(&RESOURCE, false)), (2, "scope_spans", Msg(&SCOPE_SPANS, true)), (3, "schema_url", Str),
]);
schema!(SCOPE_SPANS, item: false, [
    (1, "scope", Msg(&SCOPE, false)), (2, "spans", Msg(&SPAN, true)), (3, "schema_url", Str),
]);
schema!(SPAN, item: true, [
    (1, "trace_id", Id(16)), (2, "span_id", Id(8)), (3, "trace_state", Str), (4, "parent_span_id", Id(8)),
    (5, "name", Str), (9, "attributes", Msg(&KEY_VALUE, true)), (11, "events", Msg(&SPAN_EVENT, true)),
    (13, "links", Msg(&SPAN_LINK, true)), (15, "status", Msg(&STATUS, false)),
]);
schema!(SPAN_EVENT, item: false, [(2, "name", Str), (3, "attributes", Msg(&KEY_VALUE, true))]);
schema!(SPAN_LINK, item: false, [
    (1, "trace_id", Id(16)), (2, "span_id", Id(8)), (3, "trace_state", Str),
    (4, "attributes", Msg(&KEY_VALUE, true)),
]);
schema!(STATUS, item: false, [(2, "message", Str)]);

schema!(RESOURCE_METRICS, item: false, [
    (1, "resource", Msg(&RESOURCE, false)), (2, "scope_metrics", Msg(&SCOPE_METRICS, true)),
    (3, "schema_url", Str),
]);
schema!(SCOPE_METRICS, item: false, [
    (1, "scope", Msg(&SCOPE, false)), (2, "metrics", Msg(&METRIC, true)), (3, "schema_url", Str),
]);
schema!(METRIC, item: false, [
    (1, "name", Str), (2, "description", Str), (3, "unit", Str), (5, "gauge", Msg(&GAUGE, false)),
    (7, "sum", Msg(&GAUGE, false)), (9, "histogram", Msg(&HISTOGRAM, false)),
    (10, "exponential_histogram", Msg(&EXP_HISTOGRAM, false)), (11, "summary", Msg(&SUMMARY, false)),
    (12, "metadata", Msg(&KEY_VALUE, true)),
]);
schema!(GAUGE, item: false, [(1, "data_points", Msg(&NUMBER_POINT, true))]);
schema!(HISTOGRAM, item: false, [(1, "data_points", Msg(&HISTOGRAM_POINT, true))]);
schema!(EXP_HISTOGRAM, item: false, [(1, "data_points", Msg(&EXP_HISTOGRAM_POINT, true))]);
schema!(SUMMARY, item: false, [(1, "data_points", Msg(&SUMMARY_POINT, true))]);
schema!(NUMBER_POINT, item: true, [
    (7, "attributes", Msg(&KEY_VALUE, true)), (5, "exemplars", Msg(&EXEMPLAR, true)),
]);
schema!(HISTOGRAM_POINT, item: true, [
    (9, "attributes", Msg(&KEY_VALUE, true)), (8, "exemplars", Msg(&EXEMPLAR, true)),
]);
schema!(EXP_HISTOGRAM_POINT, item: true, [
    (1, "attributes", Msg(&KEY_VALUE, true)), (11, "exemplars", Msg(&EXEMPLAR, true)),
]);
schema!(SUMMARY_POINT, item: true, [(7, "attributes", Msg(&KEY_VALUE, true))]);
schema!(EXEMPLAR, item: false, [
    (7, "filtered_attributes", Msg(&KEY_VALUE, true)), (4, "span_id", Id(8)), (5, "trace_id", Id(16)),
]);

schema!(RESOURCE_LOGS, item: false, [
    (1, "resource", Msg(&RESOURCE, false)), (2, "scope_logs", Msg(&SCOPE_LOGS, true)), (3, "schema_url", Str),
]);
schema!(SCOPE_LOGS, item: false, [
    (1, "scope", Msg(&SCOPE, false)), (2, "log_records", Msg(&LOG_RECORD, true)), (3, "schema_url", Str),
]);
schema!(LOG_RECORD, item: true, [
    (3, "severity_text", Str), (5, "body", Any), (6, "attributes", Msg(&KEY_VALUE, true)),
    (9, "trace_id", Id(16)), (10, "span_id", Id(8)), (12, "event_name", Str),
]);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use crate::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
    use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use crate::otlp::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
    use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use crate::otlp::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, metric,
    };
    use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn attr(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn traces(spans_per_resource: &[usize]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: spans_per_resource
                .iter()
                .map(|&n| ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: (0..n)
                            .map(|i| Span {
                                trace_id: vec![1; 16],
                                span_id: vec![2; 8],
                                name: format!("span-{i}"),
                                attributes: vec![attr("http.route", "/x")],
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn counts_spans_and_resource_boundaries() {
        let bytes = traces(&[3, 0, 5]).encode_to_vec();
        let summary = scan(Signal::Traces, &bytes).unwrap();
        assert_eq!(summary.items, 8);
        let counts: Vec<u64> = summary.resources.iter().map(|r| r.items).collect();
        assert_eq!(counts, [3, 0, 5]);
        // Re-assembling the entries yields the same request: splitting is lossless.
        let mut joined = Vec::new();
        for entry in &summary.resources {
            joined.extend_from_slice(&bytes[entry.bytes.clone()]);
        }
        assert_eq!(joined, bytes);
    }

    #[test]
    fn counts_metric_points_and_log_records() {
        let metrics = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "g".into(),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: vec![NumberDataPoint::default(); 4],
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "h".into(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points: vec![HistogramDataPoint::default(); 2],
                                aggregation_temporality: 2,
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(
            scan(Signal::Metrics, &metrics.encode_to_vec())
                .unwrap()
                .items,
            6
        );
        let logs = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); 7],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(scan(Signal::Logs, &logs.encode_to_vec()).unwrap().items, 7);
    }

    #[test]
    fn rejects_invalid_utf8_with_its_path() {
        let mut request = traces(&[2]);
        request.resource_spans[0].scope_spans[0].spans[1].name = "MARKER".into();
        let mut bytes = request.encode_to_vec();
        let at = bytes.windows(6).position(|w| w == b"MARKER").unwrap();
        bytes[at] = 0xff;
        let summary = scan(Signal::Traces, &bytes).unwrap();
        assert_eq!((summary.items, summary.rejected_items), (0, 2));
        assert_eq!(
            summary.first_error().unwrap().to_string(),
            "resource_spans[0].scope_spans[0].spans[1].name: invalid UTF-8 in string"
        );
    }

    #[test]
    fn one_bad_entry_leaves_the_others_valid() {
        let mut request = traces(&[2, 3, 1]);
        request.resource_spans[1].scope_spans[0].spans[0].span_id = vec![9; 3];
        let summary = scan(Signal::Traces, &request.encode_to_vec()).unwrap();
        assert_eq!((summary.items, summary.rejected_items), (3, 3));
        let bad: Vec<bool> = summary
            .resources
            .iter()
            .map(|r| r.error.is_some())
            .collect();
        assert_eq!(bad, [false, true, false]);
    }

    #[test]
    fn rejects_truncated_and_garbage_input() {
        let bytes = traces(&[2]).encode_to_vec();
        assert!(scan(Signal::Traces, &bytes[..bytes.len() - 3]).is_err());
        assert!(scan(Signal::Traces, b"this is not protobuf at all").is_err());
    }

    #[test]
    fn rejects_wrong_id_length() {
        let mut request = traces(&[1]);
        request.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 5];
        let summary = scan(Signal::Traces, &request.encode_to_vec()).unwrap();
        let err = summary.first_error().unwrap();
        assert!(
            err.to_string()
                .contains("trace_id: id is 5 bytes, expected 16"),
            "{err}"
        );
    }

    #[test]
    fn rejects_absurd_any_value_nesting() {
        let mut value = AnyValue {
            value: Some(Value::StringValue("leaf".into())),
        };
        for _ in 0..(MAX_ANY_VALUE_DEPTH + 5) {
            value = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let mut request = traces(&[1]);
        request.resource_spans[0].scope_spans[0].spans[0].attributes = vec![KeyValue {
            key: "deep".into(),
            value: Some(value),
            ..Default::default()
        }];
        let summary = scan(Signal::Traces, &request.encode_to_vec()).unwrap();
        let err = summary.first_error().unwrap();
        assert!(err.problem.contains("nested deeper"), "{err}");
    }

    #[test]
    fn empty_request_is_valid_and_empty() {
        assert_eq!(scan(Signal::Logs, &[]).unwrap(), Summary::default());
    }

    #[test]
    fn skips_unknown_fields() {
        let mut bytes = traces(&[1]).encode_to_vec();
        // Field 99, varint 7: a future OTLP field the scanner does not know.
        bytes.extend_from_slice(&[0x98, 0x06, 0x07]);
        assert_eq!(scan(Signal::Traces, &bytes).unwrap().items, 1);
    }
}
