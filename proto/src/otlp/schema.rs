//! The OTLP schema as one table: every field of every message of the three export services, with its number,
//! its name, the wire type it must arrive in and its role.
//!
//! Every walker of encoded OTLP reads this table: the receiver's validation ([`super::scan`]) checks each field
//! against it, and the collector's `mask` processor finds the text it must mask by role. Two walkers reading
//! two tables drift; with one, a field the validator knows is a field the masker knows.
//!
//! Field numbers and types are those of `opentelemetry-proto` (the `#[prost(...)]` attributes of its
//! generated code); a test decodes an encoded value of every scalar field through `prost` to keep them equal.

use super::Signal;

/// What a field holds, which fixes its wire type and how walkers treat it.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A nested message; `repeated` decides whether error paths show an index.
    Message(&'static Schema, bool),
    /// A repeated `KeyValue` (attributes): its key decides how its value is looked at.
    Attributes,
    /// An `AnyValue` (a log body, an array element, a key-value's value).
    AnyValue,
    /// Trace or span id bytes: empty, or exactly `len` bytes; `required` ids must be present and not all zero.
    /// When the field is repeated on the wire, the last value counts, as decoders keep it.
    Id {
        /// Length of a present id.
        len: usize,
        /// Whether the item is invalid without it (a span's own ids).
        required: bool,
        /// Which of the message's id fields this is (0, 1, 2), to remember its last value.
        index: usize,
    },
    /// A UTF-8 string that identifies (a key, a version, a URL, a unit): never shown as content.
    Str,
    /// A UTF-8 string that is content (a name, a message, a string value): masked.
    Text,
    /// Opaque bytes.
    Bytes,
    /// An `int64` that is content (an `AnyValue`'s int value): masked when it could be a card number.
    Int,
    /// Any other varint: enums, counts, flags, booleans.
    Varint,
    /// A `fixed64`, `sfixed64` or `double`.
    Fixed64,
    /// A `fixed32` or `float`.
    Fixed32,
    /// A repeated `fixed64` or `double`: packed (length-delimited, a multiple of 8 bytes) or one value.
    PackedFixed64,
    /// A repeated `uint64`: packed (length-delimited varints) or one varint.
    PackedVarint,
}

/// One field of a message.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Field number.
    pub number: u32,
    /// Field name, as error paths show it.
    pub name: &'static str,
    /// What it holds.
    pub kind: Kind,
}

/// Largest field number any OTLP message uses, plus one.
const SLOTS: usize = 17;

/// One message type.
#[derive(Debug)]
pub struct Schema {
    /// The message's name (`Span`, `KeyValue`…).
    pub name: &'static str,
    /// Whether each instance is one counted item (a span, a data point, a log record).
    pub is_item: bool,
    /// Its fields; fields not listed are unknown and skipped.
    pub fields: &'static [Field],
    /// Whether some field is an id, whose last value is checked once the message is read.
    pub has_ids: bool,
    /// `slots[number]` is the index in `fields` of field `number`, or `u8::MAX`.
    slots: [u8; SLOTS],
}

impl Schema {
    /// The index in [`Schema::fields`] of field `number`, if the message has it.
    #[inline(always)]
    pub fn slot(&self, number: u32) -> Option<usize> {
        match self.slots.get(number as usize) {
            Some(&slot) if slot != u8::MAX => Some(usize::from(slot)),
            _ => None,
        }
    }

    /// Field `number`, if the message has it.
    #[inline(always)]
    pub fn field(&self, number: u32) -> Option<&'static Field> {
        self.slot(number).map(|slot| &self.fields[slot])
    }
}

/// Whether one of `fields` is an id.
const fn has_ids(fields: &[Field]) -> bool {
    let mut i = 0;
    while i < fields.len() {
        if let Kind::Id { .. } = fields[i].kind {
            return true;
        }
        i += 1;
    }
    false
}

/// The direct-mapped field index of a field list (built at compile time).
const fn slots(numbers: &[u32]) -> [u8; SLOTS] {
    let mut slots = [u8::MAX; SLOTS];
    let mut i = 0;
    while i < numbers.len() {
        let number = numbers[i] as usize;
        assert!(number < SLOTS, "raise SLOTS");
        assert!(slots[number] == u8::MAX, "a field number is listed twice");
        slots[number] = i as u8;
        i += 1;
    }
    slots
}

macro_rules! schema {
    ($static:ident, $name:literal, item: $item:expr, [$(($n:expr, $f:literal, $k:expr)),* $(,)?]) => {
        #[doc = concat!("The `", $name, "` message.")]
        pub static $static: Schema = Schema {
            name: $name,
            is_item: $item,
            fields: &[$(Field { number: $n, name: $f, kind: $k }),*],
            has_ids: has_ids(&[$(Field { number: $n, name: $f, kind: $k }),*]),
            slots: slots(&[$($n),*]),
        };
    };
}

use Kind::{
    AnyValue as Any, Attributes as Attrs, Bytes, Fixed32, Fixed64, Int, Message as Msg,
    PackedFixed64, PackedVarint, Str, Text, Varint,
};

/// A span's own ids: required, present and not all zero.
const fn own_id(len: usize, index: usize) -> Kind {
    Kind::Id {
        len,
        required: true,
        index,
    }
}

/// An id that may be absent (a parent, a link's or log record's context, an exemplar's).
const fn optional_id(len: usize, index: usize) -> Kind {
    Kind::Id {
        len,
        required: false,
        index,
    }
}

/// The root message of `signal`'s export request.
pub fn request(signal: Signal) -> &'static Schema {
    match signal {
        Signal::Traces => &EXPORT_TRACE_REQUEST,
        Signal::Metrics => &EXPORT_METRICS_REQUEST,
        Signal::Logs => &EXPORT_LOGS_REQUEST,
    }
}

schema!(EXPORT_TRACE_REQUEST, "ExportTraceServiceRequest", item: false, [
    (1, "resource_spans", Msg(&RESOURCE_SPANS, true)),
]);
schema!(EXPORT_METRICS_REQUEST, "ExportMetricsServiceRequest", item: false, [
    (1, "resource_metrics", Msg(&RESOURCE_METRICS, true)),
]);
schema!(EXPORT_LOGS_REQUEST, "ExportLogsServiceRequest", item: false, [
    (1, "resource_logs", Msg(&RESOURCE_LOGS, true)),
]);

// common.proto, resource.proto
schema!(ANY_VALUE, "AnyValue", item: false, [
    (1, "string_value", Text), (2, "bool_value", Varint), (3, "int_value", Int), (4, "double_value", Fixed64),
    (5, "array_value", Msg(&ARRAY_VALUE, false)), (6, "kvlist_value", Msg(&KEY_VALUE_LIST, false)),
    (7, "bytes_value", Bytes), (8, "string_value_strindex", Varint),
]);
schema!(ARRAY_VALUE, "ArrayValue", item: false, [(1, "values", Any)]);
schema!(KEY_VALUE_LIST, "KeyValueList", item: false, [(1, "values", Attrs)]);
schema!(KEY_VALUE, "KeyValue", item: false, [
    (1, "key", Str), (2, "value", Any), (3, "key_strindex", Varint),
]);
schema!(SCOPE, "InstrumentationScope", item: false, [
    (1, "name", Str), (2, "version", Str), (3, "attributes", Attrs), (4, "dropped_attributes_count", Varint),
]);
schema!(ENTITY_REF, "EntityRef", item: false, [
    (1, "schema_url", Str), (2, "type", Str), (3, "id_keys", Str), (4, "description_keys", Str),
]);
schema!(RESOURCE, "Resource", item: false, [
    (1, "attributes", Attrs), (2, "dropped_attributes_count", Varint),
    (3, "entity_refs", Msg(&ENTITY_REF, true)),
]);

// trace.proto
schema!(RESOURCE_SPANS, "ResourceSpans", item: false, [
    (1, "resource", Msg(&RESOURCE, false)), (2, "scope_spans", Msg(&SCOPE_SPANS, true)), (3, "schema_url", Str),
]);
schema!(SCOPE_SPANS, "ScopeSpans", item: false, [
    (1, "scope", Msg(&SCOPE, false)), (2, "spans", Msg(&SPAN, true)), (3, "schema_url", Str),
]);
schema!(SPAN, "Span", item: true, [
    (1, "trace_id", own_id(16, 0)), (2, "span_id", own_id(8, 1)), (3, "trace_state", Str),
    (4, "parent_span_id", optional_id(8, 2)), (5, "name", Text), (6, "kind", Varint),
    (7, "start_time_unix_nano", Fixed64), (8, "end_time_unix_nano", Fixed64), (9, "attributes", Attrs),
    (10, "dropped_attributes_count", Varint), (11, "events", Msg(&SPAN_EVENT, true)),
    (12, "dropped_events_count", Varint), (13, "links", Msg(&SPAN_LINK, true)),
    (14, "dropped_links_count", Varint), (15, "status", Msg(&STATUS, false)), (16, "flags", Fixed32),
]);
schema!(SPAN_EVENT, "Span.Event", item: false, [
    (1, "time_unix_nano", Fixed64), (2, "name", Text), (3, "attributes", Attrs),
    (4, "dropped_attributes_count", Varint),
]);
// A link to an invalid (all-zero) context is allowed when it carries attributes or a trace state (the
// OpenTelemetry trace API), so link ids are not required.
schema!(SPAN_LINK, "Span.Link", item: false, [
    (1, "trace_id", optional_id(16, 0)), (2, "span_id", optional_id(8, 1)), (3, "trace_state", Str),
    (4, "attributes", Attrs), (5, "dropped_attributes_count", Varint), (6, "flags", Fixed32),
]);
schema!(STATUS, "Status", item: false, [(2, "message", Text), (3, "code", Varint)]);

// metrics.proto
schema!(RESOURCE_METRICS, "ResourceMetrics", item: false, [
    (1, "resource", Msg(&RESOURCE, false)), (2, "scope_metrics", Msg(&SCOPE_METRICS, true)),
    (3, "schema_url", Str),
]);
schema!(SCOPE_METRICS, "ScopeMetrics", item: false, [
    (1, "scope", Msg(&SCOPE, false)), (2, "metrics", Msg(&METRIC, true)), (3, "schema_url", Str),
]);
schema!(METRIC, "Metric", item: false, [
    (1, "name", Str), (2, "description", Str), (3, "unit", Str), (5, "gauge", Msg(&GAUGE, false)),
    (7, "sum", Msg(&SUM, false)), (9, "histogram", Msg(&HISTOGRAM, false)),
    (10, "exponential_histogram", Msg(&EXP_HISTOGRAM, false)), (11, "summary", Msg(&SUMMARY, false)),
    (12, "metadata", Attrs),
]);
schema!(GAUGE, "Gauge", item: false, [(1, "data_points", Msg(&NUMBER_POINT, true))]);
schema!(SUM, "Sum", item: false, [
    (1, "data_points", Msg(&NUMBER_POINT, true)), (2, "aggregation_temporality", Varint),
    (3, "is_monotonic", Varint),
]);
schema!(HISTOGRAM, "Histogram", item: false, [
    (1, "data_points", Msg(&HISTOGRAM_POINT, true)), (2, "aggregation_temporality", Varint),
]);
schema!(EXP_HISTOGRAM, "ExponentialHistogram", item: false, [
    (1, "data_points", Msg(&EXP_HISTOGRAM_POINT, true)), (2, "aggregation_temporality", Varint),
]);
schema!(SUMMARY, "Summary", item: false, [(1, "data_points", Msg(&SUMMARY_POINT, true))]);
schema!(NUMBER_POINT, "NumberDataPoint", item: true, [
    (2, "start_time_unix_nano", Fixed64), (3, "time_unix_nano", Fixed64), (4, "as_double", Fixed64),
    (5, "exemplars", Msg(&EXEMPLAR, true)), (6, "as_int", Fixed64), (7, "attributes", Attrs),
    (8, "flags", Varint),
]);
schema!(HISTOGRAM_POINT, "HistogramDataPoint", item: true, [
    (2, "start_time_unix_nano", Fixed64), (3, "time_unix_nano", Fixed64), (4, "count", Fixed64),
    (5, "sum", Fixed64), (6, "bucket_counts", PackedFixed64), (7, "explicit_bounds", PackedFixed64),
    (8, "exemplars", Msg(&EXEMPLAR, true)), (9, "attributes", Attrs), (10, "flags", Varint),
    (11, "min", Fixed64), (12, "max", Fixed64),
]);
schema!(EXP_HISTOGRAM_POINT, "ExponentialHistogramDataPoint", item: true, [
    (1, "attributes", Attrs), (2, "start_time_unix_nano", Fixed64), (3, "time_unix_nano", Fixed64),
    (4, "count", Fixed64), (5, "sum", Fixed64), (6, "scale", Varint), (7, "zero_count", Fixed64),
    (8, "positive", Msg(&BUCKETS, false)), (9, "negative", Msg(&BUCKETS, false)), (10, "flags", Varint),
    (11, "exemplars", Msg(&EXEMPLAR, true)), (12, "min", Fixed64), (13, "max", Fixed64),
    (14, "zero_threshold", Fixed64),
]);
schema!(BUCKETS, "ExponentialHistogramDataPoint.Buckets", item: false, [
    (1, "offset", Varint), (2, "bucket_counts", PackedVarint),
]);
schema!(SUMMARY_POINT, "SummaryDataPoint", item: true, [
    (2, "start_time_unix_nano", Fixed64), (3, "time_unix_nano", Fixed64), (4, "count", Fixed64),
    (5, "sum", Fixed64), (6, "quantile_values", Msg(&QUANTILE, true)), (7, "attributes", Attrs),
    (8, "flags", Varint),
]);
schema!(QUANTILE, "SummaryDataPoint.ValueAtQuantile", item: false, [
    (1, "quantile", Fixed64), (2, "value", Fixed64),
]);
schema!(EXEMPLAR, "Exemplar", item: false, [
    (2, "time_unix_nano", Fixed64), (3, "as_double", Fixed64), (4, "span_id", optional_id(8, 1)),
    (5, "trace_id", optional_id(16, 0)), (6, "as_int", Fixed64), (7, "filtered_attributes", Attrs),
]);

// logs.proto
schema!(RESOURCE_LOGS, "ResourceLogs", item: false, [
    (1, "resource", Msg(&RESOURCE, false)), (2, "scope_logs", Msg(&SCOPE_LOGS, true)), (3, "schema_url", Str),
]);
schema!(SCOPE_LOGS, "ScopeLogs", item: false, [
    (1, "scope", Msg(&SCOPE, false)), (2, "log_records", Msg(&LOG_RECORD, true)), (3, "schema_url", Str),
]);
schema!(LOG_RECORD, "LogRecord", item: true, [
    (1, "time_unix_nano", Fixed64), (2, "severity_number", Varint), (3, "severity_text", Str),
    (5, "body", Any), (6, "attributes", Attrs), (7, "dropped_attributes_count", Varint), (8, "flags", Fixed32),
    (9, "trace_id", optional_id(16, 0)), (10, "span_id", optional_id(8, 1)), (11, "observed_time_unix_nano", Fixed64),
    (12, "event_name", Str),
]);

/// Every message of the table, for tests that check all of them.
pub static ALL: &[&Schema] = &[
    &EXPORT_TRACE_REQUEST,
    &EXPORT_METRICS_REQUEST,
    &EXPORT_LOGS_REQUEST,
    &ANY_VALUE,
    &ARRAY_VALUE,
    &KEY_VALUE_LIST,
    &KEY_VALUE,
    &SCOPE,
    &ENTITY_REF,
    &RESOURCE,
    &RESOURCE_SPANS,
    &SCOPE_SPANS,
    &SPAN,
    &SPAN_EVENT,
    &SPAN_LINK,
    &STATUS,
    &RESOURCE_METRICS,
    &SCOPE_METRICS,
    &METRIC,
    &GAUGE,
    &SUM,
    &HISTOGRAM,
    &EXP_HISTOGRAM,
    &SUMMARY,
    &NUMBER_POINT,
    &HISTOGRAM_POINT,
    &EXP_HISTOGRAM_POINT,
    &BUCKETS,
    &SUMMARY_POINT,
    &QUANTILE,
    &EXEMPLAR,
    &RESOURCE_LOGS,
    &SCOPE_LOGS,
    &LOG_RECORD,
];
