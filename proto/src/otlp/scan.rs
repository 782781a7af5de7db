//! A zero-copy validator for encoded OTLP export requests.
//!
//! [`scan`] walks the protobuf wire format of an `Export{Trace,Metrics,Logs}ServiceRequest` with the one OTLP
//! schema table ([`super::schema`]) and the shared wire reader ([`super::wire`]), without allocating. It accepts
//! exactly what `prost` decodes, plus OTLP's own rules:
//!
//! * every known field arrives in its wire type (a scalar sent length-delimited is an error, as in `prost`);
//!   unknown fields of every wire type are skipped, groups included, and nesting stays within `prost`'s
//!   recursion limit;
//! * strings are UTF-8, every time they occur (decoders check each occurrence);
//! * trace and span ids are empty or of their fixed length, judged on the last occurrence as decoders keep
//!   it; a span's own trace and span ids must be present and not all zero;
//! * `AnyValue` nesting stays below [`MAX_ANY_VALUE_DEPTH`].
//!
//! It counts the items (spans, data points, log records) and records where each top-level `Resource*` entry
//! lies, so a batch can be split without decoding. A problem inside one item rejects that item alone
//! ([`ResourceEntry::invalid_items`]; [`without_invalid`] rebuilds the request without it); a problem elsewhere
//! in a top-level entry rejects the entry ([`ResourceEntry::error`]); broken framing of the request itself
//! rejects the request. Errors come with the path of the offending field, e.g.
//! `resource_spans[0].scope_spans[0].spans[3].attributes[1].value.string_value: invalid UTF-8 in string`.
//!
//! [`scan_inspecting`] also shows the request's content (attribute keys and values, span and event names,
//! status messages, log bodies) to an [`Inspector`] during the same walk, so a stage that would otherwise walk
//! every request a second time to look for something (the collector's `mask` processor) learns which top-level
//! entries need its attention from the receiver's one walk ([`ResourceEntry::flagged`]).

use std::fmt;
use std::ops::Range;

use super::Signal;
use super::schema::{self, Kind, Schema};
use super::wire::{
    RECURSION_LIMIT, Reader, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT, WireError, put_varint,
};

/// Deepest `AnyValue` nesting (arrays and key-value lists inside each other) a request may carry.
pub const MAX_ANY_VALUE_DEPTH: usize = 32;

/// What a successful scan learned about a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Valid spans, metric data points or log records in the request.
    pub items: u64,
    /// Items that failed validation: inside invalid top-level entries, or invalid on their own.
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
    /// Valid items inside this entry.
    pub items: u64,
    /// Why this entry is invalid, when it is. Its framing was intact, so the other entries stand on their own
    /// and can be accepted (an OTLP partial success).
    pub error: Option<ScanError>,
    /// Items of a valid entry that are invalid on their own (a span with a zero trace id, a log record with a
    /// broken string); the rest of the entry stands without them.
    pub invalid_items: Vec<InvalidItem>,
    /// Whether the [`Inspector`] of [`scan_inspecting`] flagged something in this entry (always `false` for
    /// [`scan`] and for invalid entries).
    pub flagged: bool,
}

/// An item (span, data point, log record) rejected on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidItem {
    /// The item's field in the request (tag and length included).
    pub bytes: Range<usize>,
    /// What is wrong with it.
    pub error: ScanError,
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
    /// The first validation error of any entry or item.
    pub fn first_error(&self) -> Option<&ScanError> {
        self.resources.iter().find_map(|r| {
            r.error
                .as_ref()
                .or_else(|| r.invalid_items.first().map(|item| &item.error))
        })
    }

    /// Whether every entry and item is valid (nothing to reject).
    pub fn all_valid(&self) -> bool {
        self.rejected_items == 0 && self.first_error().is_none()
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

impl From<WireError> for ScanError {
    fn from(error: WireError) -> Self {
        ScanError::new(error.0)
    }
}

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
/// A request whose own framing is broken (a length running past the request, a truncated varint between its
/// entries) is an `Err`. A top-level entry whose framing holds but whose content is invalid is reported in its
/// [`ResourceEntry::error`], an invalid item in [`ResourceEntry::invalid_items`]; their items are counted in
/// [`Summary::rejected_items`].
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
    let root = schema::request(signal);
    let entry_field = &root.fields[0];
    let Kind::Message(resource_schema, _) = entry_field.kind else {
        unreachable!("field 1 of an export request is its resource entries")
    };
    let mut summary = Summary::default();
    let mut reader = Reader::new(buf);
    let mut index = 0usize;
    while !reader.done() {
        let start = reader.pos();
        let (field, wire) = reader.key()?;
        if field != 1 {
            reader.skip(field, wire, RECURSION_LIMIT)?;
            continue;
        }
        let at_entry = |e: ScanError| e.within(entry_field.name, Some(index));
        if wire != WIRE_LEN {
            return Err(at_entry(ScanError::new(format!(
                "wire type {wire}, expected a message"
            ))));
        }
        let body = reader.len_delimited().map_err(|e| at_entry(e.into()))?;
        let body_start = reader.pos() - body.len();
        let mut look = Look {
            inspector: &mut *inspector,
            showing: inspecting,
            flagged: false,
        };
        let mut walk = Walk {
            items: 0,
            invalid: Vec::new(),
        };
        let walked = walk.message(
            body,
            body_start,
            resource_schema,
            RECURSION_LIMIT - 1,
            0,
            &mut look,
        );
        if inspecting && look.inspector.entry_done() {
            look.flagged = true;
        }
        let entry = match walked {
            Ok(()) => {
                let rejected = walk.invalid.len() as u64;
                summary.items += walk.items - rejected;
                summary.rejected_items += rejected;
                for item in &mut walk.invalid {
                    item.error = at_entry(std::mem::replace(&mut item.error, ScanError::new("")));
                }
                ResourceEntry {
                    bytes: start..reader.pos(),
                    items: walk.items - rejected,
                    error: None,
                    invalid_items: walk.invalid,
                    flagged: look.flagged,
                }
            }
            Err(error) => {
                // Count what the client sent in this entry, looking only at structure.
                let items = count_items(body, resource_schema);
                summary.rejected_items += items;
                ResourceEntry {
                    bytes: start..reader.pos(),
                    items: 0,
                    error: Some(at_entry(error)),
                    invalid_items: Vec::new(),
                    flagged: false,
                }
            }
        };
        summary.resources.push(entry);
        index += 1;
    }
    Ok(summary)
}

/// The top-level entries of a request already validated by [`scan`]: each entry's bytes (tag and length
/// included) and the items in it, read from the structure alone. Splitting a batch at entries needs no second
/// validation.
pub fn entries(signal: Signal, buf: &[u8]) -> Vec<(Range<usize>, u64)> {
    let root = schema::request(signal);
    let Kind::Message(resource_schema, _) = root.fields[0].kind else {
        unreachable!("field 1 of an export request is its resource entries")
    };
    let mut reader = Reader::new(buf);
    let mut out = Vec::new();
    while !reader.done() {
        let start = reader.pos();
        let Ok((field, wire)) = reader.key() else {
            break;
        };
        if (field, wire) != (1, WIRE_LEN) {
            if reader.skip(field, wire, RECURSION_LIMIT).is_err() {
                break;
            }
            continue;
        }
        let Ok(body) = reader.len_delimited() else {
            break;
        };
        out.push((start..reader.pos(), count_items(body, resource_schema)));
    }
    out
}

/// The items inside a message, following its structure as far as it is readable.
fn count_items(buf: &[u8], schema: &Schema) -> u64 {
    let mut reader = Reader::new(buf);
    let mut items = 0;
    while !reader.done() {
        let Ok((field, wire)) = reader.key() else {
            break;
        };
        let nested = match schema.field(field) {
            Some(f) if wire == WIRE_LEN => match f.kind {
                Kind::Message(inner, _) => Some(inner),
                _ => None,
            },
            _ => None,
        };
        match nested {
            Some(inner) => {
                let Ok(body) = reader.len_delimited() else {
                    break;
                };
                items += if inner.is_item {
                    1
                } else {
                    count_items(body, inner)
                };
            }
            None => {
                if reader.skip(field, wire, RECURSION_LIMIT).is_err() {
                    break;
                }
            }
        }
    }
    items
}

/// The state of one top-level entry's walk.
struct Walk {
    /// Items walked, valid or not.
    items: u64,
    /// Items found invalid on their own.
    invalid: Vec<InvalidItem>,
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
    let mut reader = Reader::new(buf);
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
        } else if reader.skip(field, wire, RECURSION_LIMIT).is_err() {
            break;
        }
    }
    key
}

/// How error messages name a wire type.
fn wire_name(wire: u8) -> &'static str {
    match wire {
        WIRE_VARINT => "a varint",
        WIRE_I64 => "a 64-bit value",
        WIRE_LEN => "length-delimited",
        WIRE_I32 => "a 32-bit value",
        _ => "a group",
    }
}

fn wrong_wire(wire: u8, expected: u8) -> ScanError {
    ScanError::new(format!(
        "wire type {wire} ({}), expected {}",
        wire_name(wire),
        wire_name(expected)
    ))
}

impl Walk {
    /// Walks one message of type `schema` whose bytes start at `base` in the request. `budget` is `prost`'s
    /// recursion budget for this message's fields; `any_depth` the `AnyValue` nesting so far.
    fn message<'b, I: Inspector<'b>>(
        &mut self,
        buf: &'b [u8],
        base: usize,
        schema: &Schema,
        budget: u32,
        any_depth: usize,
        look: &mut Look<'_, I>,
    ) -> Result<(), ScanError> {
        if schema.is_item {
            self.items += 1;
        }
        let mut reader = Reader::new(buf);
        // Per-field repetition counters for error paths; no message has more than 16 fields.
        let mut counters = [0u32; 16];
        // The last value of each id field: decoders keep the last one.
        let mut ids: [Option<&[u8]>; 3] = [None; 3];
        while !reader.done() {
            let field_start = reader.pos();
            let (number, wire) = reader.key()?;
            let Some(slot) = schema.slot(number) else {
                reader.skip(number, wire, budget)?;
                continue;
            };
            let field = &schema.fields[slot];
            let name = field.name;
            let index = counters[slot] as usize;
            counters[slot] += 1;
            match field.kind {
                Kind::Varint => {
                    if wire != WIRE_VARINT {
                        return Err(wrong_wire(wire, WIRE_VARINT).within(name, None));
                    }
                    reader
                        .varint()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                }
                Kind::Int => {
                    if wire != WIRE_VARINT {
                        return Err(wrong_wire(wire, WIRE_VARINT).within(name, None));
                    }
                    let value = reader
                        .varint()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                    if look.showing && look.inspector.integer(value as i64) {
                        look.flag();
                    }
                }
                Kind::Fixed64 | Kind::Fixed32 => {
                    let (expected, width) = match field.kind {
                        Kind::Fixed64 => (WIRE_I64, 8),
                        _ => (WIRE_I32, 4),
                    };
                    if wire != expected {
                        return Err(wrong_wire(wire, expected).within(name, None));
                    }
                    reader
                        .fixed(width)
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                }
                Kind::PackedFixed64 if wire == WIRE_I64 => {
                    reader
                        .fixed(8)
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                }
                Kind::PackedVarint if wire == WIRE_VARINT => {
                    reader
                        .varint()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                }
                _ if wire != WIRE_LEN => {
                    return Err(wrong_wire(wire, WIRE_LEN).within(name, None));
                }
                Kind::PackedFixed64 => {
                    let body = reader
                        .len_delimited()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                    if body.len() % 8 != 0 {
                        return Err(ScanError::new(format!(
                            "packed 64-bit values of {} bytes, not a multiple of 8",
                            body.len()
                        ))
                        .within(name, None));
                    }
                }
                Kind::PackedVarint => {
                    let body = reader
                        .len_delimited()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                    let mut values = Reader::new(body);
                    while !values.done() {
                        values
                            .varint()
                            .map_err(|e| ScanError::from(e).within(name, None))?;
                    }
                }
                Kind::Message(inner, repeated) => {
                    let body = reader
                        .len_delimited()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                    let at = |e: ScanError| e.within(name, repeated.then_some(index));
                    if budget == 0 {
                        return Err(at(too_deep()));
                    }
                    let body_start = base + reader.pos() - body.len();
                    let before = self.invalid.len();
                    let walked = self.message(body, body_start, inner, budget - 1, any_depth, look);
                    match walked {
                        Err(error) if inner.is_item => self.invalid.push(InvalidItem {
                            bytes: base + field_start..base + reader.pos(),
                            error: at(error),
                        }),
                        Err(error) => return Err(at(error)),
                        Ok(()) => {
                            for item in &mut self.invalid[before..] {
                                item.error =
                                    at(std::mem::replace(&mut item.error, ScanError::new("")));
                            }
                        }
                    }
                }
                Kind::Attributes => {
                    let body = reader
                        .len_delimited()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                    if budget == 0 {
                        return Err(too_deep().within(name, Some(index)));
                    }
                    let showing = look.showing;
                    if showing {
                        match look.inspector.key(key_of(body)) {
                            Interest::Ignore => look.showing = false,
                            Interest::Flag => look.flag(),
                            Interest::Content => {}
                        }
                    }
                    let body_start = base + reader.pos() - body.len();
                    self.message(
                        body,
                        body_start,
                        &schema::KEY_VALUE,
                        budget - 1,
                        any_depth,
                        look,
                    )
                    .map_err(|e| e.within(name, Some(index)))?;
                    look.showing = showing && !look.flagged;
                }
                Kind::AnyValue => {
                    let body = reader
                        .len_delimited()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                    if budget == 0 {
                        return Err(too_deep().within(name, None));
                    }
                    if any_depth >= MAX_ANY_VALUE_DEPTH {
                        return Err(ScanError::new(format!(
                            "AnyValue nested deeper than {MAX_ANY_VALUE_DEPTH} levels"
                        ))
                        .within(name, None));
                    }
                    let body_start = base + reader.pos() - body.len();
                    self.message(
                        body,
                        body_start,
                        &schema::ANY_VALUE,
                        budget - 1,
                        any_depth + 1,
                        look,
                    )
                    .map_err(|e| e.within(name, None))?;
                }
                Kind::Str | Kind::Text => {
                    let body = reader
                        .len_delimited()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                    if !is_utf8(body) {
                        return Err(ScanError::new("invalid UTF-8 in string").within(name, None));
                    }
                    if matches!(field.kind, Kind::Text) && look.showing && look.inspector.text(body)
                    {
                        look.flag();
                    }
                }
                Kind::Bytes => {
                    reader
                        .len_delimited()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                }
                Kind::Id { index, .. } => {
                    let body = reader
                        .len_delimited()
                        .map_err(|e| ScanError::from(e).within(name, None))?;
                    ids[index] = Some(body);
                }
            }
        }
        if schema.has_ids {
            check_ids(schema, &ids)?;
        }
        Ok(())
    }
}

fn too_deep() -> ScanError {
    ScanError::new("messages nested deeper than the decoder's recursion limit")
}

/// OTLP's rules on the last value of each id field of a message.
fn check_ids(schema: &Schema, ids: &[Option<&[u8]>; 3]) -> Result<(), ScanError> {
    for field in schema.fields {
        let Kind::Id {
            len,
            required,
            index,
        } = field.kind
        else {
            continue;
        };
        let value = ids[index].unwrap_or_default();
        if value.is_empty() {
            if required {
                return Err(
                    ScanError::new("missing (a span needs its id)").within(field.name, None)
                );
            }
            continue;
        }
        if value.len() != len {
            return Err(
                ScanError::new(format!("id is {} bytes, expected {len}", value.len()))
                    .within(field.name, None),
            );
        }
        if required && value.iter().all(|&b| b == 0) {
            return Err(
                ScanError::new("all-zero id (OTLP says it is invalid)").within(field.name, None)
            );
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

/// The valid part of a scanned request: its valid top-level entries, each without its invalid items, as one
/// encoded request. Messages that held a removed item get their lengths rewritten; everything else is copied.
pub fn without_invalid(request: &[u8], summary: &Summary) -> Vec<u8> {
    let mut out = Vec::with_capacity(request.len());
    for entry in summary.resources.iter().filter(|e| e.error.is_none()) {
        let removed: Vec<Range<usize>> = entry
            .invalid_items
            .iter()
            .map(|i| i.bytes.clone())
            .collect();
        copy_without(request, entry.bytes.clone(), &removed, &mut out);
    }
    out
}

/// Copies the fields in `range` of `buf` to `out`, leaving out the fields whose ranges are in `removed` and
/// re-encoding the length-delimited fields that contain one.
fn copy_without(buf: &[u8], range: Range<usize>, removed: &[Range<usize>], out: &mut Vec<u8>) {
    let inside = |r: &Range<usize>| removed.iter().any(|x| x.start >= r.start && x.end <= r.end);
    if !inside(&range) {
        out.extend_from_slice(&buf[range]);
        return;
    }
    let mut reader = Reader::new(&buf[range.clone()]);
    while !reader.done() {
        let start = range.start + reader.pos();
        // The range was validated by the scan; a failure here would be a bug, so the rest is copied as is.
        let Ok((number, wire)) = reader.key() else {
            out.extend_from_slice(&buf[start..range.end]);
            return;
        };
        let key_end = range.start + reader.pos();
        if wire != WIRE_LEN {
            if reader.skip(number, wire, RECURSION_LIMIT).is_err() {
                out.extend_from_slice(&buf[start..range.end]);
                return;
            }
            out.extend_from_slice(&buf[start..range.start + reader.pos()]);
            continue;
        }
        let Ok(body) = reader.len_delimited() else {
            out.extend_from_slice(&buf[start..range.end]);
            return;
        };
        let end = range.start + reader.pos();
        let field = start..end;
        if removed.contains(&field) {
            continue;
        }
        if !inside(&field) {
            out.extend_from_slice(&buf[field]);
            continue;
        }
        let body_range = end - body.len()..end;
        let mut inner = Vec::with_capacity(body.len());
        copy_without(buf, body_range, removed, &mut inner);
        out.extend_from_slice(&buf[start..key_end]);
        put_varint(out, inner.len() as u64);
        out.extend_from_slice(&inner);
    }
}

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
        // The span with the broken name is rejected alone; its sibling stands.
        assert_eq!((summary.items, summary.rejected_items), (1, 1));
        assert_eq!(
            summary.first_error().unwrap().to_string(),
            "resource_spans[0].scope_spans[0].spans[1].name: invalid UTF-8 in string"
        );
    }

    #[test]
    fn one_bad_entry_leaves_the_others_valid() {
        let mut request = traces(&[2, 3, 1]);
        // A broken resource attribute spoils its whole entry.
        request.resource_spans[1].resource = Some(crate::otlp::resource::v1::Resource {
            attributes: vec![attr("host.name", "BROKEN")],
            ..Default::default()
        });
        let mut bytes = request.encode_to_vec();
        let at = bytes.windows(6).position(|w| w == b"BROKEN").unwrap();
        bytes[at] = 0xc3;
        let summary = scan(Signal::Traces, &bytes).unwrap();
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

#[cfg(test)]
mod strictness {
    //! What the walker must agree on with `prost`, one regression per finding of the data-loss report.
    use super::*;
    use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn spans(names: &[&str]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: names
                        .iter()
                        .map(|name| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            name: name.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// The report's reproducer: `start_time_unix_nano` sent as a varint. It was acknowledged, then broke the
    /// exporter's decode of every batch it joined.
    #[test]
    fn a_fixed64_field_sent_as_a_varint_is_rejected() {
        let bytes = hex(
            "0a2a122812260a1001010101010101010101010101010101120802020202020202022a06706f69736f6e3805",
        );
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
        let summary = scan(Signal::Traces, &bytes).unwrap();
        assert_eq!((summary.items, summary.rejected_items), (0, 1));
        assert_eq!(
            summary.first_error().unwrap().to_string(),
            "resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano: \
             wire type 0 (a varint), expected a 64-bit value"
        );
    }

    #[test]
    fn an_unknown_group_field_is_skipped_as_prost_skips_it() {
        let mut bytes = spans(&["a"]).encode_to_vec();
        // Field 99 as a group holding field 1 = 7, closed by field 99's end tag.
        bytes.extend_from_slice(&[0x9b, 0x06, 0x08, 0x07, 0x9c, 0x06]);
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_ok());
        assert_eq!(scan(Signal::Traces, &bytes).unwrap().items, 1);
    }

    #[test]
    fn a_repeated_id_counts_by_its_last_value() {
        let mut request = spans(&["a"]);
        request.resource_spans[0].scope_spans[0].spans[0].span_id = vec![7; 3];
        let mut bytes = request.encode_to_vec();
        // A second span_id (valid) appended inside the span: the decoder keeps it.
        let span_end = bytes.len();
        bytes.extend_from_slice(&[0x12, 0x08, 3, 3, 3, 3, 3, 3, 3, 3]);
        // Grow the three enclosing lengths by 10 (each is one byte here).
        for at in [1, 3, 5] {
            bytes[at] += 10;
        }
        assert_eq!(bytes.len(), span_end + 10);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            decoded.resource_spans[0].scope_spans[0].spans[0].span_id,
            vec![3; 8]
        );
        let summary = scan(Signal::Traces, &bytes).unwrap();
        assert_eq!(
            (summary.items, summary.rejected_items),
            (1, 0),
            "{summary:?}"
        );
        assert!(summary.all_valid());
    }

    #[test]
    fn zero_and_missing_span_ids_reject_their_span_alone() {
        let mut request = spans(&["ok", "zero trace", "no span id", "ok too"]);
        let list = &mut request.resource_spans[0].scope_spans[0].spans;
        list[1].trace_id = vec![0; 16];
        list[2].span_id = Vec::new();
        let bytes = request.encode_to_vec();
        let summary = scan(Signal::Traces, &bytes).unwrap();
        assert_eq!((summary.items, summary.rejected_items), (2, 2));
        assert!(!summary.all_valid());
        assert_eq!(
            summary.resources[0].items, 2,
            "the entry counts its valid items"
        );
        assert_eq!(summary.resources[0].invalid_items.len(), 2);
        assert_eq!(
            summary.first_error().unwrap().to_string(),
            "resource_spans[0].scope_spans[0].spans[1].trace_id: all-zero id (OTLP says it is invalid)"
        );
        let valid = without_invalid(&bytes, &summary);
        let decoded = ExportTraceServiceRequest::decode(valid.as_slice()).unwrap();
        let names: Vec<&str> = decoded.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["ok", "ok too"]);
        // What is left scans clean.
        let again = scan(Signal::Traces, &valid).unwrap();
        assert_eq!((again.items, again.rejected_items), (2, 0));
    }

    #[test]
    fn entity_refs_are_checked() {
        use crate::otlp::common::v1::EntityRef;
        use crate::otlp::resource::v1::Resource;
        let mut request = spans(&["a"]);
        request.resource_spans[0].resource = Some(Resource {
            entity_refs: vec![EntityRef {
                r#type: "BROKEN".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut bytes = request.encode_to_vec();
        let at = bytes.windows(6).position(|w| w == b"BROKEN").unwrap();
        bytes[at] = 0xff;
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
        let summary = scan(Signal::Traces, &bytes).unwrap();
        assert_eq!(summary.items, 0);
        assert_eq!(
            summary.first_error().unwrap().to_string(),
            "resource_spans[0].resource.entity_refs[0].type: invalid UTF-8 in string"
        );
    }

    #[test]
    fn an_invalid_entry_without_items_still_makes_the_request_not_all_valid() {
        use crate::otlp::resource::v1::Resource;
        let mut request = spans(&[]);
        request.resource_spans[0].scope_spans.clear();
        request.resource_spans[0].resource = Some(Resource {
            attributes: vec![crate::otlp::string_attribute("host.name", "BROKEN")],
            ..Default::default()
        });
        let mut bytes = request.encode_to_vec();
        let at = bytes.windows(6).position(|w| w == b"BROKEN").unwrap();
        bytes[at] = 0xff;
        let summary = scan(Signal::Traces, &bytes).unwrap();
        assert_eq!((summary.items, summary.rejected_items), (0, 0));
        assert!(
            !summary.all_valid(),
            "an entry was rejected, even with nothing in it"
        );
    }

    #[test]
    fn an_overflowing_varint_is_rejected() {
        // Span kind (field 6) as a 10-byte varint whose last byte is 2.
        let mut request = spans(&["a"]);
        request.resource_spans[0].scope_spans[0].spans[0].kind = 1;
        let bytes = request.encode_to_vec();
        let at = bytes.windows(2).position(|w| w == [0x30, 0x01]).unwrap();
        let mut broken = bytes[..at + 1].to_vec();
        broken.extend_from_slice(&[0xff; 9]);
        broken.push(0x02);
        broken.extend_from_slice(&bytes[at + 2..]);
        for at in [1, 3, 5] {
            broken[at] += 9;
        }
        assert!(ExportTraceServiceRequest::decode(broken.as_slice()).is_err());
        assert_eq!(scan(Signal::Traces, &broken).unwrap().items, 0);
    }

    #[test]
    fn errors_name_the_entry_and_the_expected_wire_type() {
        // Entry 1's resource is broken: its path says so.
        let mut request = spans(&["a"]);
        request
            .resource_spans
            .push(request.resource_spans[0].clone());
        request.resource_spans[1].resource = Some(crate::otlp::resource::v1::Resource {
            attributes: vec![crate::otlp::string_attribute("k", "BROKEN")],
            ..Default::default()
        });
        let mut bytes = request.encode_to_vec();
        let at = bytes.windows(6).position(|w| w == b"BROKEN").unwrap();
        bytes[at] = 0xff;
        let summary = scan(Signal::Traces, &bytes).unwrap();
        assert!(
            summary
                .first_error()
                .unwrap()
                .to_string()
                .starts_with("resource_spans[1].resource.attributes[0]"),
            "{:?}",
            summary.first_error()
        );
        // A string sent as a varint, and a fixed32 sent as a varint.
        for (field, expected) in [
            (
                &[0x28u8, 0x01][..],
                "name: wire type 0 (a varint), expected length-delimited",
            ),
            (
                &[0x80, 0x01, 0x01][..],
                "flags: wire type 0 (a varint), expected a 32-bit value",
            ),
        ] {
            let mut span = Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                ..Default::default()
            }
            .encode_to_vec();
            span.extend_from_slice(field);
            let (mut scope, mut resource, mut request) = (Vec::new(), Vec::new(), Vec::new());
            crate::otlp::wire::put_bytes(&mut scope, 2, &span);
            crate::otlp::wire::put_bytes(&mut resource, 2, &scope);
            crate::otlp::wire::put_bytes(&mut request, 1, &resource);
            let summary = scan(Signal::Traces, &request).unwrap();
            let error = summary.first_error().unwrap().to_string();
            assert!(error.ends_with(expected), "{error}");
        }
    }

    #[test]
    fn repeated_numbers_are_accepted_packed_or_one_by_one() {
        use crate::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
        use crate::otlp::wire::{put_bytes, put_varint};
        // A histogram point whose bucket counts (fixed64) come one by one, and an exponential one whose bucket
        // counts (uint64) come one by one: both forms are valid protobuf.
        let mut point = Vec::new();
        for count in [3u64, 4] {
            put_varint(&mut point, (6 << 3) | 1);
            point.extend_from_slice(&count.to_le_bytes());
        }
        let mut buckets = Vec::new();
        for count in [5u64, 6] {
            put_varint(&mut buckets, 2 << 3);
            put_varint(&mut buckets, count);
        }
        let mut exp_point = Vec::new();
        put_bytes(&mut exp_point, 8, &buckets);
        let (mut histogram, mut exp_histogram) = (Vec::new(), Vec::new());
        put_bytes(&mut histogram, 1, &point);
        put_bytes(&mut exp_histogram, 1, &exp_point);
        let mut metric = Vec::new();
        put_bytes(&mut metric, 9, &histogram);
        let mut exp_metric = Vec::new();
        put_bytes(&mut exp_metric, 10, &exp_histogram);
        let mut scope = Vec::new();
        put_bytes(&mut scope, 2, &metric);
        put_bytes(&mut scope, 2, &exp_metric);
        let (mut resource, mut request) = (Vec::new(), Vec::new());
        put_bytes(&mut resource, 2, &scope);
        put_bytes(&mut request, 1, &resource);
        let decoded = ExportMetricsServiceRequest::decode(request.as_slice()).unwrap();
        let summary = scan(Signal::Metrics, &request).unwrap();
        assert_eq!(
            (summary.items, summary.rejected_items),
            (2, 0),
            "{decoded:?}"
        );

        // Packed bucket counts whose last varint is cut short: the decoder refuses them, so does the walk.
        let mut packed = Vec::new();
        put_bytes(&mut packed, 2, &[0x05, 0x80]);
        let mut point = Vec::new();
        put_bytes(&mut point, 8, &packed);
        let (mut histogram, mut metric, mut scope, mut resource, mut request) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        put_bytes(&mut histogram, 1, &point);
        put_bytes(&mut metric, 10, &histogram);
        put_bytes(&mut scope, 2, &metric);
        put_bytes(&mut resource, 2, &scope);
        put_bytes(&mut request, 1, &resource);
        assert!(ExportMetricsServiceRequest::decode(request.as_slice()).is_err());
        let summary = scan(Signal::Metrics, &request).unwrap();
        assert_eq!((summary.items, summary.rejected_items), (0, 1));
    }

    #[test]
    fn entries_split_a_request_as_the_scan_does() {
        let mut request = spans(&["a", "b"]);
        request
            .resource_spans
            .push(request.resource_spans[0].clone());
        request.resource_spans[1].scope_spans[0].spans.pop();
        let mut bytes = request.encode_to_vec();
        // An unknown top-level field between the entries is skipped.
        let first_end = scan(Signal::Traces, &bytes).unwrap().resources[0].bytes.end;
        bytes.splice(first_end..first_end, [0xf8, 0x01, 0x05]);
        let summary = scan(Signal::Traces, &bytes).unwrap();
        let split = entries(Signal::Traces, &bytes);
        let expected: Vec<_> = summary
            .resources
            .iter()
            .map(|e| (e.bytes.clone(), e.items))
            .collect();
        assert_eq!(split, expected);
        assert_eq!(split.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }

    #[test]
    fn an_invalid_entry_is_counted_by_its_structure_alone() {
        // The resource is broken, so the entry is rejected; its two spans are counted, and a `spans` field sent
        // as a varint in front of them is skipped, not read as a message.
        let mut request = spans(&["a", "b"]);
        request.resource_spans[0].resource = Some(crate::otlp::resource::v1::Resource {
            attributes: vec![crate::otlp::string_attribute("k", "BROKEN")],
            ..Default::default()
        });
        let mut bytes = request.encode_to_vec();
        let at = bytes.windows(6).position(|w| w == b"BROKEN").unwrap();
        bytes[at] = 0xff;
        let mut scope = vec![0x10, 0x05];
        let decoded =
            ExportTraceServiceRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        for span in &decoded.resource_spans[0].scope_spans[0].spans {
            crate::otlp::wire::put_bytes(&mut scope, 2, &span.encode_to_vec());
        }
        // The entry starts after its one-byte tag and length; its first field is the resource.
        let resource_end = {
            let mut reader = Reader::new(&bytes[2..]);
            reader.key().unwrap();
            reader.len_delimited().unwrap();
            2 + reader.pos()
        };
        let mut entry = bytes[2..resource_end].to_vec();
        crate::otlp::wire::put_bytes(&mut entry, 2, &scope);
        let mut broken = Vec::new();
        crate::otlp::wire::put_bytes(&mut broken, 1, &entry);
        let summary = scan(Signal::Traces, &broken).unwrap();
        assert!(summary.resources[0].error.is_some());
        assert_eq!(summary.rejected_items, 2);
    }

    /// Records the keys an inspector is shown.
    struct Keys(Vec<Vec<u8>>);

    impl<'b> Inspector<'b> for Keys {
        fn key(&mut self, key: &'b [u8]) -> Interest {
            self.0.push(key.to_vec());
            Interest::Content
        }
        fn text(&mut self, _: &'b [u8]) -> bool {
            false
        }
        fn integer(&mut self, _: i64) -> bool {
            false
        }
    }

    #[test]
    fn the_inspector_is_shown_the_key_decoders_keep() {
        use crate::otlp::wire::{put_bytes, put_varint};
        let value = |text: &str| {
            let mut any = Vec::new();
            put_bytes(&mut any, 1, text.as_bytes());
            any
        };
        let long_value = "v".repeat(200);
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            // key, value: the common shape, at the one-byte length limits.
            (
                {
                    let mut kv = Vec::new();
                    put_bytes(&mut kv, 1, &[b'k'; 127]);
                    put_bytes(&mut kv, 2, &value("x"));
                    kv
                },
                vec![b'k'; 127],
            ),
            (
                {
                    let mut kv = Vec::new();
                    put_bytes(&mut kv, 1, &[b'k'; 128]);
                    put_bytes(&mut kv, 2, &value("x"));
                    kv
                },
                vec![b'k'; 128],
            ),
            (
                {
                    let mut kv = Vec::new();
                    put_bytes(&mut kv, 1, &[b'k'; 200]);
                    kv
                },
                vec![b'k'; 200],
            ),
            (
                {
                    let mut kv = Vec::new();
                    put_bytes(&mut kv, 1, b"short");
                    put_bytes(&mut kv, 2, &value(&long_value));
                    kv
                },
                b"short".to_vec(),
            ),
            // The key sent twice, with the value between: the last one counts.
            (
                {
                    let mut kv = Vec::new();
                    put_bytes(&mut kv, 1, b"note");
                    put_bytes(&mut kv, 2, &value("x"));
                    put_bytes(&mut kv, 1, b"password");
                    kv
                },
                b"password".to_vec(),
            ),
            // Key, a 4-byte value, then an empty key: the empty one counts.
            (
                {
                    let mut kv = Vec::new();
                    put_bytes(&mut kv, 1, b"a");
                    put_bytes(&mut kv, 2, &value("xy"));
                    put_bytes(&mut kv, 1, b"");
                    kv
                },
                Vec::new(),
            ),
            // Value first, an unknown varint field, then the key.
            (
                {
                    let mut kv = Vec::new();
                    put_bytes(&mut kv, 2, &value("x"));
                    put_varint(&mut kv, 9 << 3);
                    put_varint(&mut kv, 1);
                    put_bytes(&mut kv, 1, b"late");
                    kv
                },
                b"late".to_vec(),
            ),
        ];
        for (kv, expected) in cases {
            let mut span = Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                ..Default::default()
            }
            .encode_to_vec();
            put_bytes(&mut span, 9, &kv);
            let (mut scope, mut resource, mut request) = (Vec::new(), Vec::new(), Vec::new());
            put_bytes(&mut scope, 2, &span);
            put_bytes(&mut resource, 2, &scope);
            put_bytes(&mut request, 1, &resource);
            let decoded = ExportTraceServiceRequest::decode(request.as_slice()).unwrap();
            let decoded_key = decoded.resource_spans[0].scope_spans[0].spans[0].attributes[0]
                .key
                .clone();
            assert_eq!(decoded_key.as_bytes(), expected.as_slice());
            let mut keys = Keys(Vec::new());
            scan_inspecting(Signal::Traces, &request, &mut keys).unwrap();
            assert_eq!(keys.0, [expected]);
        }
    }

    #[test]
    fn nothing_under_an_ignored_key_is_shown_and_showing_resumes_after_it() {
        use crate::otlp::common::v1::{AnyValue, KeyValue, KeyValueList, any_value::Value};
        struct Seen(Vec<String>);
        impl<'b> Inspector<'b> for Seen {
            fn key(&mut self, key: &'b [u8]) -> Interest {
                self.0.push(format!("key {}", String::from_utf8_lossy(key)));
                if key == b"allowed" {
                    Interest::Ignore
                } else {
                    Interest::Content
                }
            }
            fn text(&mut self, text: &'b [u8]) -> bool {
                self.0.push(String::from_utf8_lossy(text).into_owned());
                false
            }
            fn integer(&mut self, _: i64) -> bool {
                false
            }
        }
        let mut request = spans(&["span"]);
        request.resource_spans[0].scope_spans[0].spans[0].attributes = vec![
            KeyValue {
                key: "allowed".into(),
                value: Some(AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: vec![
                            crate::otlp::string_attribute("inner", "hidden"),
                            crate::otlp::string_attribute("inner2", "hidden too"),
                        ],
                    })),
                }),
                ..Default::default()
            },
            crate::otlp::string_attribute("after", "shown"),
        ];
        let bytes = request.encode_to_vec();
        let mut seen = Seen(Vec::new());
        scan_inspecting(Signal::Traces, &bytes, &mut seen).unwrap();
        assert_eq!(seen.0, ["span", "key allowed", "key after", "shown"]);
    }

    /// At the nesting limits, the walk agrees with `prost` exactly: with and without an unknown field in the
    /// innermost message (which spends the decoder's last unit of recursion budget).
    #[test]
    fn at_the_nesting_limits_the_walk_agrees_with_the_decoder() {
        use crate::otlp::wire::{put_bytes, put_varint};
        for kvlist in [true, false] {
            for depth in 26..=34 {
                // Where an unknown varint field goes: nowhere, the innermost AnyValue, the innermost KeyValue.
                for unknown in [0, 1, 2] {
                    let mut value = Vec::new();
                    put_bytes(&mut value, 1, b"leaf");
                    if unknown == 1 {
                        put_varint(&mut value, 15 << 3);
                        put_varint(&mut value, 1);
                    }
                    for level in 1..depth {
                        let mut outer = Vec::new();
                        if kvlist {
                            let mut kv = Vec::new();
                            put_bytes(&mut kv, 1, b"k");
                            put_bytes(&mut kv, 2, &value);
                            if unknown == 2 && level == 1 {
                                put_varint(&mut kv, 15 << 3);
                                put_varint(&mut kv, 1);
                            }
                            let mut list = Vec::new();
                            put_bytes(&mut list, 1, &kv);
                            put_bytes(&mut outer, 6, &list);
                        } else {
                            let mut array = Vec::new();
                            put_bytes(&mut array, 1, &value);
                            put_bytes(&mut outer, 5, &array);
                        }
                        value = outer;
                    }
                    let mut attribute = Vec::new();
                    put_bytes(&mut attribute, 1, b"deep");
                    put_bytes(&mut attribute, 2, &value);
                    let mut span = Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        ..Default::default()
                    }
                    .encode_to_vec();
                    put_bytes(&mut span, 9, &attribute);
                    let (mut scope, mut resource, mut request) =
                        (Vec::new(), Vec::new(), Vec::new());
                    put_bytes(&mut scope, 2, &span);
                    put_bytes(&mut resource, 2, &scope);
                    put_bytes(&mut request, 1, &resource);
                    let decodes = ExportTraceServiceRequest::decode(request.as_slice()).is_ok();
                    let accepted = scan(Signal::Traces, &request).unwrap().items == 1;
                    assert_eq!(
                        accepted,
                        decodes && depth <= MAX_ANY_VALUE_DEPTH,
                        "kvlist {kvlist}, depth {depth}, unknown field {unknown}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_schema_has_more_fields_than_the_walk_counts() {
        for schema in crate::otlp::schema::ALL {
            assert!(schema.fields.len() <= 16, "{}", schema.name);
            for (slot, field) in schema.fields.iter().enumerate() {
                assert_eq!(schema.slot(field.number), Some(slot), "{}", schema.name);
            }
        }
    }
}
