//! Fields of an encoded export request, read in place: what a stage that looks without changing anything needs
//! (the collector's `spanmetrics` reads every span, the `debug` exporter each entry's resource and the first
//! trace id, the alerting connector every counter and gauge point), without decoding the request into owned
//! messages.
//!
//! [`for_each_span`] walks a traces request with the shared [`Reader`] and hands every span's scalar fields to a
//! visitor, together with its resource; [`for_each_metric`] hands over a metrics request's resources, scopes and
//! metrics, and [`number_points`] the points of a gauge or sum; [`for_each_resource`] hands over each top-level
//! entry's resource, for any signal; [`first_trace_id`] finds the first trace id of a traces or logs request. [`Attributes::get`] finds
//! an attribute by key on demand, so attributes nobody asks for cost one skip. Where a field appears more than
//! once, the result is what `prost` decodes: the last value of a scalar, the merge of a message (a resource's or
//! a span's attribute lists concatenated, a status's code from the last occurrence that has one, an attribute
//! value merged across occurrences). A differential property test (`proto/tests/differential.rs`) holds the
//! reader to `prost` on generated and mutated requests.
//!
//! ```
//! use prost::Message;
//! use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
//! use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
//! use vigil_proto::otlp::resource::v1::Resource;
//! use vigil_proto::otlp::fields::{AttributeValue, for_each_span};
//! use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
//!
//! let request = ExportTraceServiceRequest {
//!     resource_spans: vec![ResourceSpans {
//!         resource: Some(Resource {
//!             attributes: vec![KeyValue {
//!                 key: "service.name".into(),
//!                 value: Some(AnyValue { value: Some(any_value::Value::StringValue("checkout".into())) }),
//!                 ..Default::default()
//!             }],
//!             ..Default::default()
//!         }),
//!         scope_spans: vec![ScopeSpans {
//!             spans: vec![Span { name: "GET /cart".into(), end_time_unix_nano: 5, ..Default::default() }],
//!             ..Default::default()
//!         }],
//!         ..Default::default()
//!     }],
//! };
//! let bytes = request.encode_to_vec();
//! let mut seen = Vec::new();
//! for_each_span(&bytes, |resource, span| {
//!     let service = resource.attributes.get("service.name")?;
//!     seen.push((service, span.name, span.end_time_unix_nano));
//!     Ok::<_, vigil_proto::otlp::wire::WireError>(())
//! })
//! .unwrap();
//! assert_eq!(seen, [(Some(AttributeValue::String("checkout")), "GET /cart", 5)]);
//! ```

use std::borrow::Cow;

use prost::Message as _;

use super::Signal;
use super::common::v1::AnyValue;
use super::wire::{RECURSION_LIMIT, Reader, WIRE_I64, WIRE_LEN, WIRE_VARINT, WireError};

/// The scalar fields of one span, borrowed from the request.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanFields<'b> {
    /// `trace_id`, as sent (16 bytes in a valid request).
    pub trace_id: &'b [u8],
    /// `span_id`, as sent (8 bytes in a valid request).
    pub span_id: &'b [u8],
    /// `name`.
    pub name: &'b str,
    /// `kind`, the `SpanKind` number.
    pub kind: i32,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano`.
    pub end_time_unix_nano: u64,
    /// `status.code`, the `StatusCode` number (0, unset, without a status).
    pub status_code: i32,
    /// The span's attributes.
    pub attributes: Attributes<'b>,
}

/// The resource of the spans being visited.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceFields<'b> {
    /// The position of its `ResourceSpans` in the request: what a visitor keys per-resource work on.
    pub entry: usize,
    /// The resource's attributes.
    pub attributes: Attributes<'b>,
}

/// A list of `KeyValue` attributes, read on demand: field `field` of each message body in `bodies`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributes<'b> {
    field: u32,
    first: &'b [u8],
    /// Further bodies of a message sent more than once (merged by decoders: their lists concatenate).
    more: Vec<&'b [u8]>,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue<'b> {
    /// A string value.
    String(&'b str),
    /// Any other value: an encoded `AnyValue` for the caller to decode (empty when the key has no value).
    Encoded(Cow<'b, [u8]>),
}

impl<'b> AttributeValue<'b> {
    /// The value as text: a string as it is (borrowed), any other value decoded and spelled by `spell` (each
    /// consumer has its convention: Prometheus label values, otelcol's debug output).
    pub fn text_with(
        self,
        spell: impl FnOnce(&AnyValue) -> String,
    ) -> Result<Cow<'b, str>, WireError> {
        match self {
            AttributeValue::String(text) => Ok(Cow::Borrowed(text)),
            AttributeValue::Encoded(bytes) => {
                let value = AnyValue::decode(bytes.as_ref())
                    .map_err(|_| WireError("an attribute value does not decode"))?;
                Ok(Cow::Owned(spell(&value)))
            }
        }
    }
}

impl<'b> Attributes<'b> {
    fn new(field: u32, first: &'b [u8]) -> Self {
        Attributes {
            field,
            first,
            more: Vec::new(),
        }
    }

    /// The value of the first attribute named `key`, as a decoder's list would give it; `None` when there is
    /// none.
    pub fn get(&self, key: &str) -> Result<Option<AttributeValue<'b>>, WireError> {
        for body in std::iter::once(self.first).chain(self.more.iter().copied()) {
            let mut reader = Reader::new(body);
            while !reader.done() {
                let (field, wire) = reader.key()?;
                if field != self.field {
                    reader.skip(field, wire, RECURSION_LIMIT)?;
                    continue;
                }
                expect(wire, WIRE_LEN)?;
                if let Some(value) = key_value(reader.len_delimited()?, key.as_bytes())? {
                    return Ok(Some(value));
                }
            }
        }
        Ok(None)
    }
}

/// The value of a `KeyValue` whose key is `wanted`; `None` for another key.
fn key_value<'b>(body: &'b [u8], wanted: &[u8]) -> Result<Option<AttributeValue<'b>>, WireError> {
    let mut reader = Reader::new(body);
    let mut key: &[u8] = &[];
    // A value sent more than once is merged by decoders: the occurrences read as one concatenated message.
    let mut values: Vec<&'b [u8]> = Vec::new();
    while !reader.done() {
        let (field, wire) = reader.key()?;
        match field {
            1 => {
                expect(wire, WIRE_LEN)?;
                key = reader.len_delimited()?;
            }
            2 => {
                expect(wire, WIRE_LEN)?;
                values.push(reader.len_delimited()?);
            }
            _ => reader.skip(field, wire, RECURSION_LIMIT)?,
        }
    }
    if key != wanted {
        return Ok(None);
    }
    let value = match values.as_slice() {
        [] => AttributeValue::Encoded(Cow::Borrowed(&[])),
        [one] => match only_string(one)? {
            Some(text) => AttributeValue::String(text),
            None => AttributeValue::Encoded(Cow::Borrowed(one)),
        },
        many => AttributeValue::Encoded(Cow::Owned(many.concat())),
    };
    Ok(Some(value))
}

/// The string of an `AnyValue` body made of `string_value` fields only (the last one counts), else `None`.
fn only_string(body: &[u8]) -> Result<Option<&str>, WireError> {
    let mut reader = Reader::new(body);
    let mut text = None;
    while !reader.done() {
        match reader.key()? {
            (1, WIRE_LEN) => text = Some(utf8(reader.len_delimited()?)?),
            _ => return Ok(None),
        }
    }
    Ok(text)
}

fn utf8(bytes: &[u8]) -> Result<&str, WireError> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| WireError("a string is not valid UTF-8"))
}

fn expect(wire: u8, expected: u8) -> Result<(), WireError> {
    match wire == expected {
        true => Ok(()),
        false => Err(WireError("a known field has the wrong wire type")),
    }
}

/// The resource of a top-level entry (`ResourceSpans`, `ResourceMetrics` or `ResourceLogs`: field 1 in each),
/// wherever it is in the entry, merged over its occurrences.
fn entry_resource(body: &[u8]) -> Result<Attributes<'_>, WireError> {
    let mut resource = Attributes::new(1, &[]);
    let mut reader = Reader::new(body);
    let mut resources = 0;
    while !reader.done() {
        let (field, wire) = reader.key()?;
        if field != 1 {
            reader.skip(field, wire, RECURSION_LIMIT - 1)?;
            continue;
        }
        expect(wire, WIRE_LEN)?;
        let resource_body = reader.len_delimited()?;
        match resources {
            0 => resource.first = resource_body,
            _ => resource.more.push(resource_body),
        }
        resources += 1;
    }
    Ok(resource)
}

/// The top-level entries of a request (field 1 of every `Export*ServiceRequest`), in order.
fn for_each_entry<'b, E: From<WireError>>(
    request: &'b [u8],
    mut visit: impl FnMut(usize, &'b [u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut reader = Reader::new(request);
    let mut entry = 0;
    while !reader.done() {
        let (field, wire) = reader.key()?;
        if field != 1 {
            reader.skip(field, wire, RECURSION_LIMIT)?;
            continue;
        }
        expect(wire, WIRE_LEN)?;
        visit(entry, reader.len_delimited()?)?;
        entry += 1;
    }
    Ok(())
}

/// Calls `visit` with the resource of every top-level entry of `request`, a request of any signal, in order.
pub fn for_each_resource<'b, E: From<WireError>>(
    request: &'b [u8],
    mut visit: impl FnMut(&ResourceFields<'b>) -> Result<(), E>,
) -> Result<(), E> {
    for_each_entry(request, |entry, body| {
        visit(&ResourceFields {
            entry,
            attributes: entry_resource(body)?,
        })
    })
}

/// The first non-empty trace id of a span (traces) or log record (logs) in `request`; `None` for metrics.
pub fn first_trace_id(signal: Signal, request: &[u8]) -> Result<Option<&[u8]>, WireError> {
    // (entry field of the scope entry, item field of the scope entry, trace id field of the item)
    let (items, trace_id) = match signal {
        Signal::Traces => (2, 1),
        Signal::Logs => (2, 9),
        Signal::Metrics => return Ok(None),
    };
    let mut found = None;
    let searched = for_each_entry(request, |_, body| {
        let mut entry = Reader::new(body);
        while !entry.done() {
            let (field, wire) = entry.key()?;
            if field != 2 {
                entry.skip(field, wire, RECURSION_LIMIT - 1)?;
                continue;
            }
            expect(wire, WIRE_LEN)?;
            let mut scope = Reader::new(entry.len_delimited()?);
            while !scope.done() {
                let (field, wire) = scope.key()?;
                if field != items {
                    scope.skip(field, wire, RECURSION_LIMIT - 2)?;
                    continue;
                }
                expect(wire, WIRE_LEN)?;
                let mut item = Reader::new(scope.len_delimited()?);
                let mut id: &[u8] = &[];
                while !item.done() {
                    let (field, wire) = item.key()?;
                    if field == trace_id {
                        expect(wire, WIRE_LEN)?;
                        id = item.len_delimited()?;
                    } else {
                        item.skip(field, wire, RECURSION_LIMIT - 3)?;
                    }
                }
                if !id.is_empty() {
                    found = Some(id);
                    return Err(Stop::Found);
                }
            }
        }
        Ok(())
    });
    match searched {
        Ok(()) | Err(Stop::Found) => Ok(found),
        Err(Stop::Broken(error)) => Err(error),
    }
}

/// Why a search ended before the end of the request (see [`first_trace_id`]).
enum Stop {
    Found,
    Broken(WireError),
}

impl From<WireError> for Stop {
    fn from(error: WireError) -> Self {
        Stop::Broken(error)
    }
}

/// Calls `visit` with the resource attributes and the fields of every span of `request`, in order. Stops at
/// the first error, the visitor's or the request's (a request the receiver validated has none).
pub fn for_each_span<'b, E: From<WireError>>(
    request: &'b [u8],
    mut visit: impl FnMut(&ResourceFields<'b>, SpanFields<'b>) -> Result<(), E>,
) -> Result<(), E> {
    for_each_entry(request, |entry, body| {
        resource_spans(entry, body, &mut visit)
    })
}

/// One `ResourceSpans`: its resource (wherever it is in the message) first, then its spans.
fn resource_spans<'b, E: From<WireError>>(
    entry: usize,
    body: &'b [u8],
    visit: &mut impl FnMut(&ResourceFields<'b>, SpanFields<'b>) -> Result<(), E>,
) -> Result<(), E> {
    let resource = entry_resource(body)?;
    let resource = ResourceFields {
        entry,
        attributes: resource,
    };
    let mut reader = Reader::new(body);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        if field != 2 {
            reader.skip(field, wire, RECURSION_LIMIT - 1)?;
            continue;
        }
        expect(wire, WIRE_LEN)?;
        let mut scope_spans = Reader::new(reader.len_delimited()?);
        while !scope_spans.done() {
            let (field, wire) = scope_spans.key()?;
            if field != 2 {
                scope_spans.skip(field, wire, RECURSION_LIMIT - 2)?;
                continue;
            }
            expect(wire, WIRE_LEN)?;
            visit(&resource, span(scope_spans.len_delimited()?)?)?;
        }
    }
    Ok(())
}

fn span(body: &[u8]) -> Result<SpanFields<'_>, WireError> {
    let mut span = SpanFields {
        trace_id: &[],
        span_id: &[],
        name: "",
        kind: 0,
        start_time_unix_nano: 0,
        end_time_unix_nano: 0,
        status_code: 0,
        attributes: Attributes::new(9, body),
    };
    let mut reader = Reader::new(body);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        match field {
            1 => {
                expect(wire, WIRE_LEN)?;
                span.trace_id = reader.len_delimited()?;
            }
            2 => {
                expect(wire, WIRE_LEN)?;
                span.span_id = reader.len_delimited()?;
            }
            5 => {
                expect(wire, WIRE_LEN)?;
                span.name = utf8(reader.len_delimited()?)?;
            }
            6 => {
                expect(wire, WIRE_VARINT)?;
                span.kind = reader.varint()? as i32;
            }
            7 => {
                expect(wire, WIRE_I64)?;
                span.start_time_unix_nano = reader.fixed64()?;
            }
            8 => {
                expect(wire, WIRE_I64)?;
                span.end_time_unix_nano = reader.fixed64()?;
            }
            // Attributes are read on demand (`Attributes::get`); passing over them is the common case.
            9 => {
                expect(wire, WIRE_LEN)?;
                reader.len_delimited()?;
            }
            15 => {
                expect(wire, WIRE_LEN)?;
                let mut status = Reader::new(reader.len_delimited()?);
                while !status.done() {
                    let (field, wire) = status.key()?;
                    if field == 3 {
                        expect(wire, WIRE_VARINT)?;
                        span.status_code = status.varint()? as i32;
                    } else {
                        status.skip(field, wire, RECURSION_LIMIT - 4)?;
                    }
                }
            }
            _ => reader.skip(field, wire, RECURSION_LIMIT - 3)?,
        }
    }
    Ok(span)
}

/// What [`for_each_metric`] hands over, in request order: each entry's resource, then each of its scopes followed
/// by that scope's metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricsItem<'b> {
    /// A `ResourceMetrics` entry begins.
    Entry {
        /// Its position in the request.
        entry: usize,
        /// Its resource, encoded: the bodies of the resource field, concatenated when it is sent more than once
        /// (decoding them gives what a decoder merges); empty when there is none.
        resource: Cow<'b, [u8]>,
    },
    /// A `ScopeMetrics` of the current entry begins.
    Scope {
        /// Its instrumentation scope, encoded like the resource.
        scope: Cow<'b, [u8]>,
    },
    /// A metric of the current scope.
    Metric(MetricFields<'b>),
}

/// The fields of one metric that name and type it, borrowed from the request.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricFields<'b> {
    /// `name`.
    pub name: &'b str,
    /// `unit`.
    pub unit: &'b str,
    /// Its data, where it is a gauge or a sum sent once.
    pub data: MetricData<'b>,
    /// The whole `Metric` message, for a caller that decodes it.
    pub message: &'b [u8],
}

/// A metric's data as [`for_each_metric`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricData<'b> {
    /// No data.
    None,
    /// A gauge: the body of its `Gauge` message, whose data points [`number_points`] reads.
    Gauge(&'b [u8]),
    /// A sum: the body of its `Sum` message, and its temporality and monotonicity.
    Sum {
        /// The `Sum` message's body.
        body: &'b [u8],
        /// `aggregation_temporality`, the `AggregationTemporality` number.
        temporality: i32,
        /// `is_monotonic`.
        monotonic: bool,
    },
    /// A histogram, an exponential histogram or a summary, or data sent more than once (which decoders merge by
    /// rules of their own): decode [`MetricFields::message`] to read it.
    Other,
}

/// One `NumberDataPoint`, borrowed from the request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NumberPoint<'b> {
    /// Its attributes as sent: the encoded `attributes` fields, tags included, one contiguous run. Equal bytes
    /// decode to equal attributes, which is what lets a caller key its series on them.
    pub attributes: &'b [u8],
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// The value: `as_double`, or `as_int` converted; 0 when there is none.
    pub value: f64,
    /// `flags`.
    pub flags: u32,
    /// The attributes are those the caller expected (see [`number_points`]).
    pub as_expected: bool,
}

/// Calls `visit` with every entry, scope and metric of `request`, an encoded `ExportMetricsServiceRequest`, in
/// order. An entry's resource and a scope's `InstrumentationScope` are handed over first wherever they are in
/// their message. Reads only what it hands over: on a request a decoder accepts it reports what the decoder
/// gives, and it stops at the first error it meets (a request the receiver validated has none).
pub fn for_each_metric<'b, E: From<WireError>>(
    request: &'b [u8],
    mut visit: impl FnMut(MetricsItem<'b>) -> Result<(), E>,
) -> Result<(), E> {
    for_each_entry(request, |entry, body| {
        visit(MetricsItem::Entry {
            entry,
            resource: merged(body, 1)?,
        })?;
        for_each_message(body, 2, RECURSION_LIMIT - 1, |scope_metrics| {
            visit(MetricsItem::Scope {
                scope: merged(scope_metrics, 1)?,
            })?;
            for_each_message(scope_metrics, 2, RECURSION_LIMIT - 2, |message| {
                visit(MetricsItem::Metric(metric(message)?))
            })
        })
    })
}

/// Calls `visit` with the body of every occurrence of message field `field` of `body`, in order, passing over
/// the other fields (`budget`: the recursion budget left at this message, see [`RECURSION_LIMIT`]).
fn for_each_message<'b, E: From<WireError>>(
    body: &'b [u8],
    field: u32,
    budget: u32,
    mut visit: impl FnMut(&'b [u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut reader = Reader::new(body);
    while !reader.done() {
        let (number, wire) = reader.key()?;
        if number != field {
            reader.skip(number, wire, budget)?;
            continue;
        }
        expect(wire, WIRE_LEN)?;
        visit(reader.len_delimited()?)?;
    }
    Ok(())
}

/// The bodies of message field `field` of `body`, concatenated in order (one borrowed when it is sent once).
fn merged(body: &[u8], field: u32) -> Result<Cow<'_, [u8]>, WireError> {
    let mut out: Option<Cow<'_, [u8]>> = None;
    for_each_message(body, field, RECURSION_LIMIT - 1, |part| {
        match &mut out {
            None => out = Some(Cow::Borrowed(part)),
            Some(parts) => parts.to_mut().extend_from_slice(part),
        }
        Ok::<_, WireError>(())
    })?;
    Ok(out.unwrap_or_default())
}

fn metric(message: &[u8]) -> Result<MetricFields<'_>, WireError> {
    let mut fields = MetricFields {
        name: "",
        unit: "",
        data: MetricData::None,
        message,
    };
    let mut data_fields = 0;
    let mut reader = Reader::new(message);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        match field {
            1 => {
                expect(wire, WIRE_LEN)?;
                fields.name = utf8(reader.len_delimited()?)?;
            }
            3 => {
                expect(wire, WIRE_LEN)?;
                fields.unit = utf8(reader.len_delimited()?)?;
            }
            5 | 7 | 9 | 10 | 11 => {
                expect(wire, WIRE_LEN)?;
                let body = reader.len_delimited()?;
                data_fields += 1;
                fields.data = match field {
                    5 => MetricData::Gauge(body),
                    7 => sum(body)?,
                    _ => MetricData::Other,
                };
            }
            _ => reader.skip(field, wire, RECURSION_LIMIT - 3)?,
        }
    }
    if data_fields > 1 {
        fields.data = MetricData::Other;
    }
    Ok(fields)
}

fn sum(body: &[u8]) -> Result<MetricData<'_>, WireError> {
    let (mut temporality, mut monotonic) = (0, false);
    let mut reader = Reader::new(body);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        match field {
            2 => {
                expect(wire, WIRE_VARINT)?;
                temporality = reader.varint()? as i32;
            }
            3 => {
                expect(wire, WIRE_VARINT)?;
                monotonic = reader.varint()? != 0;
            }
            _ => reader.skip(field, wire, RECURSION_LIMIT - 4)?,
        }
    }
    Ok(MetricData::Sum {
        body,
        temporality,
        monotonic,
    })
}

/// Appends the data points of a `Gauge` or `Sum` body (see [`MetricData`]) to `out`. `Ok(false)` when a point's
/// attributes are not one contiguous run (`out` is then incomplete: decode the metric instead).
///
/// `expected(i)` may give the attributes the `i`-th point probably has: the [`NumberPoint::attributes`] of a
/// point read before (a caller that saw the same metric knows them). When the point holds exactly those, they are
/// matched with one comparison instead of being walked field by field, and the point says so
/// ([`NumberPoint::as_expected`]). Whichever runs read before `expected` gives, the points read are the same.
pub fn number_points<'b, 'e>(
    body: &'b [u8],
    out: &mut Vec<NumberPoint<'b>>,
    expected: impl Fn(usize) -> Option<&'e [u8]>,
) -> Result<bool, WireError> {
    let mut reader = Reader::new(body);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        if field != 1 {
            reader.skip(field, wire, RECURSION_LIMIT - 4)?;
            continue;
        }
        expect(wire, WIRE_LEN)?;
        let point = reader.len_delimited()?;
        // The point a few ahead (points of one metric have about the same size), so that memory is read while this
        // one is: a batch reaches the connector long after it left the caches.
        const AHEAD: usize = 3;
        super::wire::prefetch(
            body,
            reader.pos() + (AHEAD - 1) * point.len(),
            point.len() + 64,
        );
        match number_point(point, expected(out.len()))? {
            Some(point) => out.push(point),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// One point; `None` when its attributes are split by other fields.
fn number_point<'b>(
    body: &'b [u8],
    expected: Option<&[u8]>,
) -> Result<Option<NumberPoint<'b>>, WireError> {
    let mut point = NumberPoint {
        attributes: &[],
        time_unix_nano: 0,
        value: 0.0,
        flags: 0,
        as_expected: false,
    };
    // The key of an attribute field (7, length-delimited), and where their one run starts and ends.
    const ATTRIBUTE_KEY: u8 = 7 << 3 | WIRE_LEN;
    let mut run = None;
    let mut reader = Reader::new(body);
    while !reader.done() {
        let at = reader.pos();
        let (field, wire) = reader.key()?;
        match field {
            7 => {
                expect(wire, WIRE_LEN)?;
                if run.is_some() {
                    // A second run: the attributes are split by other fields.
                    return Ok(None);
                }
                // Bytes equal to a run read before are that run again, whole when no attribute follows; one
                // comparison loads them all at once where walking waits for each length in turn.
                let rest = &body[at..];
                match expected {
                    Some(run_bytes)
                        if rest.starts_with(run_bytes)
                            && rest.get(run_bytes.len()) != Some(&ATTRIBUTE_KEY)
                            && !run_bytes.is_empty() =>
                    {
                        reader.advance_to(at + run_bytes.len());
                        point.as_expected = true;
                    }
                    _ => {
                        reader.len_delimited()?;
                        reader.skip_run(ATTRIBUTE_KEY)?;
                    }
                }
                run = Some(at..reader.pos());
            }
            3 => {
                expect(wire, WIRE_I64)?;
                point.time_unix_nano = reader.fixed64()?;
            }
            4 => {
                expect(wire, WIRE_I64)?;
                point.value = f64::from_bits(reader.fixed64()?);
            }
            6 => {
                expect(wire, WIRE_I64)?;
                point.value = reader.fixed64()? as i64 as f64;
            }
            8 => {
                expect(wire, WIRE_VARINT)?;
                point.flags = reader.varint()? as u32;
            }
            _ => reader.skip(field, wire, RECURSION_LIMIT - 5)?,
        }
    }
    if let Some(run) = run {
        point.attributes = &body[run];
    }
    Ok(Some(point))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::{AttributeValue, SpanFields, for_each_span};
    use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use crate::otlp::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
    use crate::otlp::resource::v1::Resource;
    use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use crate::otlp::wire::{WireError, put_bytes};

    fn text(value: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }
    }

    fn attribute(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(value),
            ..Default::default()
        }
    }

    /// A request of one `ResourceSpans` whose body is `body`.
    fn request(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, body);
        out
    }

    fn spans(bytes: &[u8]) -> Vec<(Option<AttributeValue<'_>>, SpanFields<'_>)> {
        let mut out = Vec::new();
        for_each_span(bytes, |resource, span| {
            out.push((resource.attributes.get("service.name")?, span));
            Ok::<_, WireError>(())
        })
        .expect("readable");
        out
    }

    /// Messages sent in parts are merged, as decoders merge them: two encodings one after the other.
    #[test]
    fn a_resource_sent_in_two_parts_has_the_attributes_of_both() {
        let first = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("host.name", text("h1"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "a".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let second = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", text("shop"))],
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = [first.encode_to_vec(), second.encode_to_vec()].concat();
        let bytes = request(&body);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            decoded.resource_spans[0]
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .len(),
            2,
            "prost merges the two"
        );
        let read = spans(&bytes);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].0, Some(AttributeValue::String("shop")));
    }

    #[test]
    fn an_attribute_value_sent_twice_reads_as_decoders_merge_it() {
        let key_value = |key: &str, value: AnyValue| attribute(key, value).encode_to_vec();
        let strings = [key_value("k", text("old")), key_value("", text("new"))].concat();
        let array = |n: i64| AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(any_value::Value::IntValue(n)),
                }],
            })),
        };
        let arrays = [key_value("a", array(1)), key_value("", array(2))].concat();
        let mut span = Vec::new();
        put_bytes(&mut span, 5, b"op");
        put_bytes(&mut span, 9, &strings);
        put_bytes(&mut span, 9, &arrays);
        let mut scope = Vec::new();
        put_bytes(&mut scope, 2, &span);
        let mut body = Vec::new();
        put_bytes(&mut body, 2, &scope);
        let bytes = request(&body);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let attributes = &decoded.resource_spans[0].scope_spans[0].spans[0].attributes;
        let read = spans(&bytes);
        let span = &read[0].1;
        let Some(AttributeValue::Encoded(merged)) = span.attributes.get("k").unwrap() else {
            panic!("parts to merge are handed over encoded");
        };
        assert_eq!(AnyValue::decode(merged.as_ref()).unwrap(), text("new"));
        assert_eq!(attributes[0].value, Some(text("new")));
        let Some(AttributeValue::Encoded(merged)) = span.attributes.get("a").unwrap() else {
            panic!("an array is encoded");
        };
        assert_eq!(
            AnyValue::decode(merged.as_ref()).unwrap(),
            attributes[1].value.clone().unwrap()
        );
        assert_eq!(
            attributes[1].value,
            Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![array(1), array(2)]
                        .into_iter()
                        .flat_map(|v| match v.value {
                            Some(any_value::Value::ArrayValue(a)) => a.values,
                            _ => Vec::new(),
                        })
                        .collect(),
                })),
            }),
            "prost concatenates the arrays"
        );
        // Two strings in one value: the last counts.
        let mut value = Vec::new();
        put_bytes(&mut value, 1, b"first");
        put_bytes(&mut value, 1, b"last");
        let mut key_value = Vec::new();
        put_bytes(&mut key_value, 1, b"twice");
        put_bytes(&mut key_value, 2, &value);
        let mut span = Vec::new();
        put_bytes(&mut span, 9, &key_value);
        let mut scope = Vec::new();
        put_bytes(&mut scope, 2, &span);
        let mut body = Vec::new();
        put_bytes(&mut body, 2, &scope);
        let bytes = request(&body);
        assert_eq!(
            spans(&bytes)[0].1.attributes.get("twice").unwrap(),
            Some(AttributeValue::String("last"))
        );
    }

    #[test]
    fn scalars_sent_twice_keep_the_last_and_a_status_keeps_its_last_code() {
        let span = |name: &str, status: Option<Status>| Span {
            name: name.into(),
            status,
            ..Default::default()
        };
        let error = Status {
            code: 2,
            ..Default::default()
        };
        let message_only = Status {
            message: "m".into(),
            ..Default::default()
        };
        let ok = Status {
            code: 1,
            ..Default::default()
        };
        for (parts, code) in [
            (
                vec![
                    span("a", Some(error.clone())),
                    span("b", Some(message_only)),
                ],
                2,
            ),
            (vec![span("a", Some(error)), span("b", Some(ok))], 1),
        ] {
            let merged: Vec<u8> = parts.iter().flat_map(Message::encode_to_vec).collect();
            let mut scope = Vec::new();
            put_bytes(&mut scope, 2, &merged);
            let mut body = Vec::new();
            put_bytes(&mut body, 2, &scope);
            let bytes = request(&body);
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            let expected = &decoded.resource_spans[0].scope_spans[0].spans[0];
            let read = spans(&bytes);
            assert_eq!(read[0].1.name, "b");
            assert_eq!(read[0].1.name, expected.name);
            assert_eq!(read[0].1.status_code, code);
            assert_eq!(expected.status.as_ref().unwrap().code, code);
        }
    }

    #[test]
    fn broken_bytes_are_an_error_not_a_panic() {
        let mut span = Vec::new();
        put_bytes(&mut span, 5, &[0xff, 0xfe]);
        let mut scope = Vec::new();
        put_bytes(&mut scope, 2, &span);
        let mut body = Vec::new();
        put_bytes(&mut body, 2, &scope);
        let bad_name = request(&body);
        let truncated = &bad_name[..bad_name.len() - 1];
        let mut wrong_wire = Vec::new();
        crate::otlp::wire::put_varint(&mut wrong_wire, 1 << 3); // field 1 as a varint
        crate::otlp::wire::put_varint(&mut wrong_wire, 7);
        for bytes in [bad_name.as_slice(), truncated, &wrong_wire] {
            assert!(for_each_span(bytes, |_, _| Ok::<_, WireError>(())).is_err());
        }
    }

    mod metrics {
        use prost::Message;

        use super::{attribute, text};
        use crate::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
        use crate::otlp::fields::{
            MetricData, MetricsItem, NumberPoint, for_each_metric, number_points,
        };
        use crate::otlp::metrics::v1::{
            Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
            number_data_point,
        };
        use crate::otlp::resource::v1::Resource;
        use crate::otlp::wire::{WireError, nested, put_bytes};

        fn point(device: &str, value: number_data_point::Value) -> NumberDataPoint {
            NumberDataPoint {
                attributes: vec![
                    attribute("device", text(device)),
                    attribute("host", text("h")),
                ],
                time_unix_nano: 7_000_000,
                value: Some(value),
                flags: 1,
                ..Default::default()
            }
        }

        fn items(bytes: &[u8]) -> Vec<MetricsItem<'_>> {
            let mut out = Vec::new();
            for_each_metric(bytes, |item| {
                out.push(item);
                Ok::<_, WireError>(())
            })
            .expect("readable");
            out
        }

        fn points<'b>(body: &'b [u8], expected: Option<&[u8]>) -> (bool, Vec<NumberPoint<'b>>) {
            let mut out = Vec::new();
            let whole = number_points(body, &mut out, |_| expected).expect("readable");
            (whole, out)
        }

        #[test]
        fn a_gauge_and_a_sum_read_in_place() {
            let gauge = Metric {
                name: "gpu.utilization".into(),
                unit: "1".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![
                        point("d0", number_data_point::Value::AsDouble(0.5)),
                        point("d1", number_data_point::Value::AsInt(-3)),
                    ],
                })),
                ..Default::default()
            };
            let sum = Metric {
                name: "requests".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![point("d0", number_data_point::Value::AsInt(9))],
                    aggregation_temporality: 2,
                    is_monotonic: true,
                })),
                ..Default::default()
            };
            let request = ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![attribute("service.name", text("trainer"))],
                        ..Default::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![gauge.clone(), sum],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let bytes = request.encode_to_vec();
            let items = items(&bytes);
            assert_eq!(items.len(), 4, "entry, scope, two metrics");
            let MetricsItem::Entry { entry: 0, resource } = &items[0] else {
                panic!("{:?}", items[0]);
            };
            assert_eq!(
                Resource::decode(resource.as_ref()).unwrap(),
                request.resource_metrics[0].resource.clone().unwrap()
            );
            let MetricsItem::Metric(read) = &items[2] else {
                panic!("{:?}", items[2]);
            };
            assert_eq!((read.name, read.unit), ("gpu.utilization", "1"));
            assert_eq!(Metric::decode(read.message).unwrap(), gauge);
            let MetricData::Gauge(body) = read.data else {
                panic!("{:?}", read.data);
            };
            let (whole, read_points) = points(body, None);
            assert!(whole);
            let values: Vec<_> = read_points.iter().map(|p| p.value).collect();
            assert_eq!(values, [0.5, -3.0]);
            assert!(
                read_points
                    .iter()
                    .all(|p| p.time_unix_nano == 7_000_000 && p.flags == 1)
            );
            let attributes = NumberDataPoint::decode(read_points[1].attributes)
                .unwrap()
                .attributes;
            assert_eq!(
                attributes,
                point("d1", number_data_point::Value::AsInt(0)).attributes
            );
            // Read again expecting the first point's attributes: only the first matches them.
            let (_, again) = points(body, Some(read_points[0].attributes));
            assert_eq!(
                again.iter().map(|p| p.as_expected).collect::<Vec<_>>(),
                [true, false]
            );
            assert_eq!(again[1].attributes, read_points[1].attributes);
            let MetricsItem::Metric(read) = &items[3] else {
                panic!("{:?}", items[3]);
            };
            let MetricData::Sum {
                temporality: 2,
                monotonic: true,
                body,
            } = read.data
            else {
                panic!("{:?}", read.data);
            };
            assert_eq!(points(body, None).1[0].value, 9.0);
        }

        #[test]
        fn split_attributes_and_data_sent_twice_are_left_to_decoders() {
            let one = point("d0", number_data_point::Value::AsDouble(1.0)).encode_to_vec();
            // Attributes, then the flags, then more attributes.
            let mut split = one.clone();
            put_bytes(&mut split, 7, &attribute("late", text("x")).encode_to_vec());
            assert!(
                !points(&nested(&[1], &split), None).0,
                "split attributes are not one run"
            );
            let gauge = nested(&[1], &one);
            assert!(points(&gauge, None).0);
            // A metric with two gauge fields: decoders merge them.
            let mut message = Vec::new();
            put_bytes(&mut message, 1, b"m");
            put_bytes(&mut message, 5, &gauge);
            put_bytes(&mut message, 5, &gauge);
            let request = nested(&[1, 2, 2], &message);
            let items = items(&request);
            let MetricsItem::Metric(read) = &items[2] else {
                panic!("{:?}", items[2]);
            };
            assert_eq!(read.data, MetricData::Other);
        }

        #[test]
        fn a_resource_and_a_scope_sent_in_parts_read_as_their_concatenation() {
            let part = |key: &str| {
                Resource {
                    attributes: vec![attribute(key, text("v"))],
                    ..Default::default()
                }
                .encode_to_vec()
            };
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, &part("a"));
            put_bytes(&mut entry, 2, &[]);
            put_bytes(&mut entry, 1, &part("b"));
            let mut request = Vec::new();
            put_bytes(&mut request, 1, &entry);
            let items = items(&request);
            let MetricsItem::Entry { resource, .. } = &items[0] else {
                panic!("{:?}", items[0]);
            };
            let merged = Resource::decode(resource.as_ref()).unwrap();
            assert_eq!(merged.attributes.len(), 2);
            assert_eq!(
                items[1],
                MetricsItem::Scope {
                    scope: Default::default()
                }
            );
        }
    }
}
