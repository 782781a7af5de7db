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
//!
//! [`scan_inspecting`] also shows the request's content (attribute keys and values, span and event names,
//! status messages, log bodies) to an [`Inspector`] during the same walk, so a stage that would otherwise walk
//! every request a second time to look for something (the collector's `mask` processor) learns which top-level
//! entries need its attention from the receiver's one walk ([`ResourceEntry::flagged`]).

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
    /// Whether the [`Inspector`] of [`scan_inspecting`] flagged something in this entry (always `false` for
    /// [`scan`] and for invalid entries).
    pub flagged: bool,
}

/// How an [`Inspector`] wants the value of an attribute looked at, once it has seen the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interest {
    /// Not at all, nested values included (an allow-listed key).
    Ignore,
    /// The key alone flags its entry (a key whose value is always replaced).
    Flag,
    /// Show its strings and integers, and the keys of nested key-value lists.
    Content,
}

/// Looks at a request's content while [`scan_inspecting`] validates it.
///
/// It is shown what can hold personal data: the key and then the value of every attribute (resource, scope,
/// span, event, link, log record, data point, exemplar, metric metadata, nested key-value lists), span and
/// event names, status messages and log bodies. Keys, ids, metric names and schema URLs are not shown as
/// text. Strings are shown after their UTF-8 check, as bytes. Once it flags something, nothing more of that
/// top-level entry is shown to it. `'b` is the lifetime of the request's bytes, so an inspector can remember
/// keys without copying them.
pub trait Inspector<'b> {
    /// An attribute's key, before its value.
    fn key(&mut self, key: &'b [u8]) -> Interest;
    /// A string value or free text; `true` flags the entry.
    fn text(&mut self, text: &'b [u8]) -> bool;
    /// An integer value; `true` flags the entry.
    fn integer(&mut self, value: i64) -> bool;
    /// The end of a top-level entry, valid or not: `true` flags it if it is valid. For an inspector that
    /// looks at what it is shown later, in groups; it starts the next entry afresh.
    fn entry_done(&mut self) -> bool {
        false
    }
}

/// The inspector of a plain [`scan`]: never shown anything.
struct Blind;

impl Inspector<'_> for Blind {
    fn key(&mut self, _: &[u8]) -> Interest {
        Interest::Ignore
    }
    fn text(&mut self, _: &[u8]) -> bool {
        false
    }
    fn integer(&mut self, _: i64) -> bool {
        false
    }
}

/// Where the walk stands with its inspector.
struct Look<'i, I> {
    inspector: &'i mut I,
    /// Whether content is being shown right now (off under an ignored key and after a flag).
    showing: bool,
    /// Whether the inspector flagged something in the current top-level entry.
    flagged: bool,
}

impl<'b, I: Inspector<'b>> Look<'_, I> {
    fn flag(&mut self) {
        self.flagged = true;
        self.showing = false;
    }
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
    walk_request(signal, buf, &mut Blind, false)
}

/// [`scan`], showing the content of each valid top-level entry to `inspector` in the same walk; what it
/// flagged is in [`ResourceEntry::flagged`].
pub fn scan_inspecting<'b, I: Inspector<'b>>(
    signal: Signal,
    buf: &'b [u8],
    inspector: &mut I,
) -> Result<Summary, ScanError> {
    walk_request(signal, buf, inspector, true)
}

fn walk_request<'b, I: Inspector<'b>>(
    signal: Signal,
    buf: &'b [u8],
    inspector: &mut I,
    inspecting: bool,
) -> Result<Summary, ScanError> {
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
            let mut look = Look {
                inspector: &mut *inspector,
                showing: inspecting,
                flagged: false,
            };
            let walked = walk(body, resource_schema, 0, true, &mut items, &mut look);
            if inspecting && look.inspector.entry_done() {
                look.flagged = true;
            }
            let error = match walked {
                Ok(()) => {
                    summary.items += items;
                    None
                }
                Err(error) => {
                    // Count what the client sent in this entry, looking only at structure.
                    items = 0;
                    look.flagged = false;
                    look.showing = false;
                    walk(body, resource_schema, 0, false, &mut items, &mut look)
                        .map_err(|e| e.within(field_name, Some(index)))?;
                    summary.rejected_items += items;
                    Some(error.within(field_name, Some(index)))
                }
            };
            summary.resources.push(ResourceEntry {
                bytes: start..reader.pos,
                items,
                error,
                flagged: look.flagged,
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

/// The key of an encoded `KeyValue`, as a decoder reads it: the last field 1 (read leniently; the strict walk
/// reports what is malformed). A client that sends the key twice must not get a harmless first key checked
/// while the sensitive second one is the key everyone downstream decodes.
#[inline(always)]
fn key_of(buf: &[u8]) -> &[u8] {
    // Encoders write the key, then the value as the last field, and keys are shorter than 128 bytes.
    if let [0x0a, len, rest @ ..] = buf
        && *len < 0x80
        && let Some((key, after)) = rest.split_at_checked(usize::from(*len))
        && let [] | [0x12, 0..0x80, ..] = after
        && after
            .get(1)
            .is_none_or(|&value_len| after.len() == 2 + usize::from(value_len))
    {
        return key;
    }
    key_anywhere(buf)
}

#[cold]
fn key_anywhere(buf: &[u8]) -> &[u8] {
    let mut reader = Reader { buf, pos: 0 };
    let mut key: &[u8] = &[];
    while !reader.done() {
        let Ok((field, wire)) = reader.key() else {
            break;
        };
        if field == 1 && wire == WIRE_LEN {
            match reader.len_delimited() {
                Ok(bytes) => key = bytes,
                Err(_) => break,
            }
        } else if reader.skip(wire).is_err() {
            break;
        }
    }
    key
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
    /// A UTF-8 string that is an identifier (a key, a version, a URL): not shown to an inspector.
    Str,
    /// A UTF-8 string that is content (a name, a message, a value): shown to an inspector.
    Text,
    /// A repeated `KeyValue`: its key is shown to an inspector, which decides how its value is shown.
    Attribute,
    /// A varint integer value, shown to an inspector.
    Int,
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
fn walk<'b, I: Inspector<'b>>(
    buf: &'b [u8],
    schema: &Schema,
    depth: usize,
    strict: bool,
    items: &mut u64,
    look: &mut Look<'_, I>,
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
        if !strict && !matches!(kind, Kind::Message(..) | Kind::Attribute) {
            reader.skip(wire)?;
            continue;
        }
        let index = counters[slot];
        counters[slot] += 1;
        match kind {
            Kind::Scalar => reader.skip(wire).map_err(|e| e.within(name, None))?,
            Kind::Int => {
                if wire != WIRE_VARINT {
                    return Err(
                        ScanError::new(format!("wire type {wire}, expected a varint"))
                            .within(name, None),
                    );
                }
                let value = reader.varint().map_err(|e| e.within(name, None))?;
                if look.showing && look.inspector.integer(value as i64) {
                    look.flag();
                }
            }
            _ if wire != WIRE_LEN => {
                return Err(
                    ScanError::new(format!("wire type {wire}, expected length-delimited"))
                        .within(name, None),
                );
            }
            Kind::Message(inner, repeated) => {
                let body = reader.len_delimited().map_err(|e| e.within(name, None))?;
                walk(body, inner, depth, strict, items, look)
                    .map_err(|e| e.within(name, repeated.then_some(index)))?;
            }
            Kind::Attribute => {
                let body = reader.len_delimited().map_err(|e| e.within(name, None))?;
                let showing = look.showing;
                if showing {
                    match look.inspector.key(key_of(body)) {
                        Interest::Ignore => look.showing = false,
                        Interest::Flag => look.flag(),
                        Interest::Content => {}
                    }
                }
                walk(body, &KEY_VALUE, depth, strict, items, look)
                    .map_err(|e| e.within(name, Some(index)))?;
                look.showing = showing && !look.flagged;
            }
            Kind::Str | Kind::Text => {
                let body = reader.len_delimited().map_err(|e| e.within(name, None))?;
                if !is_utf8(body) {
                    return Err(ScanError::new("invalid UTF-8 in string").within(name, None));
                }
                if matches!(kind, Kind::Text) && look.showing && look.inspector.text(body) {
                    look.flag();
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
                any_value(body, depth + 1, look).map_err(|e| e.within(name, None))?;
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

fn any_value<'b, I: Inspector<'b>>(
    buf: &'b [u8],
    depth: usize,
    look: &mut Look<'_, I>,
) -> Result<(), ScanError> {
    if depth > MAX_ANY_VALUE_DEPTH {
        return Err(ScanError::new(format!(
            "AnyValue nested deeper than {MAX_ANY_VALUE_DEPTH} levels"
        )));
    }
    let mut no_items = 0;
    walk(buf, &ANY_VALUE, depth, true, &mut no_items, look)
}

macro_rules! schema {
    ($name:ident, item: $item:expr, [$(($n:expr, $f:expr, $k:expr)),* $(,)?]) => {
        static $name: Schema = Schema { is_item: $item, fields: &[$(($n, $f, $k)),*] };
    };
}

use Kind::{AnyValue as Any, Attribute as Attr, Id, Int, Message as Msg, Scalar, Str, Text};

schema!(ANY_VALUE, item: false, [
    (1, "string_value", Text), (3, "int_value", Int), (5, "array_value", Msg(&ARRAY_VALUE, false)),
    (6, "kvlist_value", Msg(&KEY_VALUE_LIST, false)), (7, "bytes_value", Scalar),
]);
schema!(ARRAY_VALUE, item: false, [(1, "values", Any)]);
schema!(KEY_VALUE_LIST, item: false, [(1, "values", Attr)]);
schema!(KEY_VALUE, item: false, [(1, "key", Str), (2, "value", Any)]);
schema!(SCOPE, item: false, [
    (1, "name", Str), (2, "version", Str), (3, "attributes", Attr),
]);
schema!(RESOURCE, item: false, [(1, "attributes", Attr)]);

schema!(RESOURCE_SPANS, item: false, [
    (1, "resource", Msg(&RESOURCE, false)), (2, "scope_spans", Msg(&SCOPE_SPANS, true)), (3, "schema_url", Str),
]);
schema!(SCOPE_SPANS, item: false, [
    (1, "scope", Msg(&SCOPE, false)), (2, "spans", Msg(&SPAN, true)), (3, "schema_url", Str),
]);
schema!(SPAN, item: true, [
    (1, "trace_id", Id(16)), (2, "span_id", Id(8)), (3, "trace_state", Str), (4, "parent_span_id", Id(8)),
    (5, "name", Text), (9, "attributes", Attr), (11, "events", Msg(&SPAN_EVENT, true)),
    (13, "links", Msg(&SPAN_LINK, true)), (15, "status", Msg(&STATUS, false)),
]);
schema!(SPAN_EVENT, item: false, [(2, "name", Text), (3, "attributes", Attr)]);
schema!(SPAN_LINK, item: false, [
    (1, "trace_id", Id(16)), (2, "span_id", Id(8)), (3, "trace_state", Str),
    (4, "attributes", Attr),
]);
schema!(STATUS, item: false, [(2, "message", Text)]);

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
    (12, "metadata", Attr),
]);
schema!(GAUGE, item: false, [(1, "data_points", Msg(&NUMBER_POINT, true))]);
schema!(HISTOGRAM, item: false, [(1, "data_points", Msg(&HISTOGRAM_POINT, true))]);
schema!(EXP_HISTOGRAM, item: false, [(1, "data_points", Msg(&EXP_HISTOGRAM_POINT, true))]);
schema!(SUMMARY, item: false, [(1, "data_points", Msg(&SUMMARY_POINT, true))]);
schema!(NUMBER_POINT, item: true, [
    (7, "attributes", Attr), (5, "exemplars", Msg(&EXEMPLAR, true)),
]);
schema!(HISTOGRAM_POINT, item: true, [
    (9, "attributes", Attr), (8, "exemplars", Msg(&EXEMPLAR, true)),
]);
schema!(EXP_HISTOGRAM_POINT, item: true, [
    (1, "attributes", Attr), (11, "exemplars", Msg(&EXEMPLAR, true)),
]);
schema!(SUMMARY_POINT, item: true, [(7, "attributes", Attr)]);
schema!(EXEMPLAR, item: false, [
    (7, "filtered_attributes", Attr), (4, "span_id", Id(8)), (5, "trace_id", Id(16)),
]);

schema!(RESOURCE_LOGS, item: false, [
    (1, "resource", Msg(&RESOURCE, false)), (2, "scope_logs", Msg(&SCOPE_LOGS, true)), (3, "schema_url", Str),
]);
schema!(SCOPE_LOGS, item: false, [
    (1, "scope", Msg(&SCOPE, false)), (2, "log_records", Msg(&LOG_RECORD, true)), (3, "schema_url", Str),
]);
schema!(LOG_RECORD, item: true, [
    (3, "severity_text", Str), (5, "body", Any), (6, "attributes", Attr),
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

    /// Records what it is shown; flags a text equal to `flag_on`, ignores the values of `ignored`, flags the
    /// key `flagging`.
    #[derive(Default)]
    struct Recording {
        shown: Vec<String>,
        flag_on: &'static str,
    }

    impl<'b> Inspector<'b> for Recording {
        fn key(&mut self, key: &'b [u8]) -> Interest {
            let key = String::from_utf8_lossy(key).into_owned();
            let interest = match key.as_str() {
                "ignored" => Interest::Ignore,
                "flagging" => Interest::Flag,
                _ => Interest::Content,
            };
            self.shown.push(format!("key {key}"));
            interest
        }
        fn text(&mut self, text: &'b [u8]) -> bool {
            let text = String::from_utf8_lossy(text).into_owned();
            let flag = text == self.flag_on;
            self.shown.push(text);
            flag
        }
        fn integer(&mut self, value: i64) -> bool {
            self.shown.push(format!("int {value}"));
            false
        }
    }

    #[test]
    fn an_inspector_is_shown_content_but_not_identifiers_and_nothing_after_a_flag() {
        use crate::otlp::common::v1::{InstrumentationScope, KeyValueList};
        use crate::otlp::trace::v1::{Status, span::Event};
        let int = |n| AnyValue {
            value: Some(Value::IntValue(n)),
        };
        let mut request = traces(&[1, 1, 1]);
        let first = &mut request.resource_spans[0].scope_spans[0];
        first.scope = Some(InstrumentationScope {
            name: "scope.name".into(),
            version: "1.0".into(),
            ..Default::default()
        });
        let span = &mut first.spans[0];
        span.trace_state = "ot=th:8".into();
        span.attributes = vec![
            KeyValue {
                key: "outer".into(),
                value: Some(AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![attr("inner", "deep")],
                    })),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "ignored".into(),
                value: Some(AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue {
                        values: vec![int(1), int(2)],
                    })),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "count".into(),
                value: Some(int(12)),
                ..Default::default()
            },
        ];
        span.events = vec![Event {
            name: "event".into(),
            ..Default::default()
        }];
        span.status = Some(Status {
            message: "status".into(),
            code: 2,
        });
        // The second entry is flagged by its span name; what follows in it is not shown.
        request.resource_spans[1].scope_spans[0].spans[0].name = "FLAG".into();
        request.resource_spans[1].scope_spans[0].spans[0].attributes = vec![attr("after", "flag")];
        // The third entry is flagged by a key alone; its value is not shown.
        request.resource_spans[2].scope_spans[0].spans[0].attributes = vec![attr("flagging", "x")];
        let bytes = request.encode_to_vec();
        let mut recording = Recording {
            flag_on: "FLAG",
            ..Default::default()
        };
        let summary = scan_inspecting(Signal::Traces, &bytes, &mut recording).unwrap();
        assert_eq!(
            recording.shown,
            [
                "span-0",
                "key outer",
                "key inner",
                "deep",
                "key ignored",
                "key count",
                "int 12",
                "event",
                "status",
                "FLAG",
                "span-0",
                "key flagging",
            ]
        );
        let flagged: Vec<bool> = summary.resources.iter().map(|r| r.flagged).collect();
        assert_eq!(flagged, [false, true, true]);
        // Without an inspector, nothing is flagged and the summary is otherwise the same.
        let plain = scan(Signal::Traces, &bytes).unwrap();
        assert_eq!(plain.items, summary.items);
        assert!(plain.resources.iter().all(|r| !r.flagged));
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
