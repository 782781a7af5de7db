//! Masking encoded OTLP requests in place of decoding them.
//!
//! The walk reads requests with `vigil_proto`'s wire reader and finds what to mask by role in its OTLP schema
//! table (text, attributes, `AnyValue` bodies), the same table the receiver validated the request with, so the
//! two never disagree on where content is. It hands every maskable string to the [`Masker`] as a borrowed
//! `&str`. A request with nothing to mask — nearly all of them — is walked once and
//! returned untouched: no decode, no allocation, no re-encode. Only a message that changed is rewritten, by
//! copying the bytes around the changed field and re-writing the lengths of the messages that contain it.
//!
//! What is masked: resource and scope attributes; span names, attributes, event names and attributes
//! (exception messages and stack traces), link attributes and status messages; log bodies (strings, and
//! key-value bodies by key) and attributes; metric data-point attributes and exemplar attributes. Values of
//! sensitive keys are replaced whatever their type; large integers are checked as digits (card numbers).

use vigil::mask::{Masked, Masker};
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::scan::MAX_ANY_VALUE_DEPTH;
use vigil_proto::otlp::schema::{self, Kind, Schema};
pub use vigil_proto::otlp::wire::WireError;
use vigil_proto::otlp::wire::{
    RECURSION_LIMIT, Reader, WIRE_LEN, WIRE_VARINT, put_bytes, same_bytes, word_at,
};

/// What masking did to one message or value.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to mask.
    Keep,
    /// The new encoding.
    Replace(Vec<u8>),
    /// Remove it (an attribute a `drop` rule hit).
    Drop,
}

/// Integers this large may be card, account or phone numbers.
pub(super) const SCANNED_INTEGER: u64 = 1_000_000_000;

/// An `AnyValue` holding `text`.
fn string_value(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4);
    put_bytes(&mut out, 1, text.as_bytes());
    out
}

/// Masks one encoded export request of `signal`.
pub fn mask_request(signal: Signal, buf: &[u8], masker: &Masker) -> Result<Outcome, WireError> {
    message(
        buf,
        schema::request(signal),
        &mut Walk {
            masker,
            keys: KeyClasses::new(),
        },
    )
}

/// Slots of the per-request memo of key classes (direct-mapped).
const KEY_MEMO: usize = 64;

/// How masking treats the values of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyClass {
    /// On the allow-list: never touched.
    Allowed,
    /// Replaced whole.
    Sensitive,
    /// Masked by content.
    Plain,
}

/// The class of each key seen in one request: the same few keys repeat on every span, so each is judged once.
pub(super) struct KeyClasses<'b> {
    memo: [Option<Remembered<'b>>; KEY_MEMO],
}

/// A judged key, with its [`key_words`] kept beside it: a key of up to 16 bytes is recognised from them
/// without reading the key it was judged as again.
#[derive(Clone, Copy)]
struct Remembered<'b> {
    words: (u64, u64),
    key: &'b [u8],
    class: KeyClass,
}

impl<'b> KeyClasses<'b> {
    pub(super) fn new() -> Self {
        KeyClasses {
            memo: [None; KEY_MEMO],
        }
    }

    /// How `masker` treats the values of `key`.
    #[inline]
    pub(super) fn class(&mut self, masker: &Masker, key: &'b [u8]) -> KeyClass {
        let words = key_words(key);
        // Both ends and the length, mixed: keys like `attribute.key.0` … `.9` must not share slots.
        let mixed = words.0 ^ words.1.rotate_left(23) ^ (key.len() as u64).rotate_right(8);
        let slot = (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % KEY_MEMO;
        if let Some(known) = self.memo[slot]
            && known.words == words
            && known.key.len() == key.len()
            && (key.len() <= 16 || same_bytes(known.key, key))
        {
            return known.class;
        }
        self.judge(masker, key, words, slot)
    }

    /// [`KeyClasses::class`] of a key not in the memo: judged by `masker`, then remembered in `slot`.
    #[cold]
    #[inline(never)]
    fn judge(
        &mut self,
        masker: &Masker,
        key: &'b [u8],
        words: (u64, u64),
        slot: usize,
    ) -> KeyClass {
        // Keys were validated as UTF-8 on receipt; a key that is not is masked by content only.
        let text = std::str::from_utf8(key).unwrap_or_default();
        let class = if masker.is_allowed(text) {
            KeyClass::Allowed
        } else if masker.is_sensitive_key(text) {
            KeyClass::Sensitive
        } else {
            KeyClass::Plain
        };
        self.memo[slot] = Some(Remembered { words, key, class });
        class
    }
}

/// Two words that, with its length, tell a key of up to 16 bytes from every other: its first and last eight
/// bytes (overlapping), its first and last four for keys of 4 to 7 bytes, its bytes for shorter ones.
#[inline(always)]
fn key_words(key: &[u8]) -> (u64, u64) {
    let word = |at: usize| word_at(key, at);
    let half = |at: usize| {
        u64::from(u32::from_le_bytes(
            key[at..at + 4].try_into().expect("4 bytes"),
        ))
    };
    match key.len() {
        8.. => (word(0), word(key.len() - 8)),
        4..8 => (half(0), half(key.len() - 4)),
        _ => (
            key.iter()
                .rev()
                .fold(0, |packed, &byte| packed << 8 | u64::from(byte)),
            0,
        ),
    }
}

/// One request's walk: the engine, and the classes of the keys seen.
struct Walk<'m, 'b> {
    masker: &'m Masker,
    keys: KeyClasses<'b>,
}

impl<'b> Walk<'_, 'b> {
    fn class(&mut self, key: &'b [u8]) -> KeyClass {
        self.keys.class(self.masker, key)
    }
}

/// Masks a message of type `schema` (fields found by role in the one OTLP schema table the receiver validated
/// the request with); rewrites it only from the first field that changed.
fn message<'b>(
    buf: &'b [u8],
    schema: &'static Schema,
    walk: &mut Walk<'_, 'b>,
) -> Result<Outcome, WireError> {
    let mut reader = Reader::new(buf);
    let mut rewrite = Rewrite { buf, out: None };
    while !reader.done() {
        let field_start = reader.pos();
        let (number, wire) = reader.key()?;
        let kind = schema.field(number).map(|field| field.kind);
        let outcome = match kind {
            Some(Kind::Message(..) | Kind::Text | Kind::Attributes | Kind::AnyValue)
                if wire == WIRE_LEN =>
            {
                let body = reader.len_delimited()?;
                match kind {
                    Some(Kind::Message(inner, _)) => message(body, inner, walk)?,
                    Some(Kind::Text) => text(body, walk),
                    Some(Kind::Attributes) => attribute(body, walk, 0)?,
                    _ => any_value(body, false, walk, 0)?,
                }
            }
            _ => {
                reader.skip(number, wire, RECURSION_LIMIT)?;
                Outcome::Keep
            }
        };
        rewrite.record(number, field_start..reader.pos(), outcome);
    }
    Ok(rewrite.finish())
}

/// A message being rewritten from its first changed field on; untouched while nothing changes.
struct Rewrite<'a> {
    buf: &'a [u8],
    out: Option<Vec<u8>>,
}

impl Rewrite<'_> {
    /// Accounts for field `field`, which spans `bytes` of the message, after masking gave `outcome`.
    fn record(&mut self, field: u32, bytes: std::ops::Range<usize>, outcome: Outcome) {
        if matches!(outcome, Outcome::Keep) {
            if let Some(out) = &mut self.out {
                out.extend_from_slice(&self.buf[bytes]);
            }
            return;
        }
        let buf = self.buf;
        let out = self.out.get_or_insert_with(|| {
            let mut fresh = Vec::with_capacity(buf.len() + 32);
            fresh.extend_from_slice(&buf[..bytes.start]);
            fresh
        });
        if let Outcome::Replace(new) = outcome {
            put_bytes(out, field, &new);
        }
    }

    fn finish(self) -> Outcome {
        self.out.map_or(Outcome::Keep, Outcome::Replace)
    }
}

fn text(body: &[u8], walk: &mut Walk<'_, '_>) -> Outcome {
    if !walk.masker.may_change(body) {
        return Outcome::Keep;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Outcome::Keep;
    };
    match walk.masker.text(text) {
        std::borrow::Cow::Borrowed(_) => Outcome::Keep,
        std::borrow::Cow::Owned(masked) => Outcome::Replace(masked.into_bytes()),
    }
}

/// A `KeyValue` (key = 1, value = 2): allowed keys pass, sensitive keys have their value replaced whole, other
/// values are masked by content. The key is the last field 1, as decoders keep it; every field 2 is masked,
/// since decoders merge repeated values and a secret in the first would survive a mask of the last alone.
fn attribute<'b>(
    buf: &'b [u8],
    walk: &mut Walk<'_, 'b>,
    depth: usize,
) -> Result<Outcome, WireError> {
    let mut reader = Reader::new(buf);
    let mut key: &[u8] = &[];
    let mut values = 0;
    // Where the first value field lies: nearly every attribute has exactly one, masked in this one pass.
    let mut first: Option<(std::ops::Range<usize>, &'b [u8])> = None;
    while !reader.done() {
        let field_start = reader.pos();
        let (field, wire) = reader.key()?;
        match (field, wire) {
            (1, WIRE_LEN) => key = reader.len_delimited()?,
            (2, WIRE_LEN) => {
                let body = reader.len_delimited()?;
                first.get_or_insert((field_start..reader.pos(), body));
                values += 1;
            }
            _ => reader.skip(field, wire, RECURSION_LIMIT)?,
        }
    }
    let Some((first_range, first_body)) = first else {
        return Ok(Outcome::Keep);
    };
    let class = walk.class(key);
    if class == KeyClass::Allowed {
        return Ok(Outcome::Keep);
    }
    let mask_value = |body: &'b [u8], walk: &mut Walk<'_, 'b>| -> Result<Outcome, WireError> {
        Ok(if class == KeyClass::Sensitive {
            match walk.masker.replace_whole(&value_text(body)) {
                Masked::Keep(replacement) => Outcome::Replace(string_value(&replacement)),
                Masked::Drop => Outcome::Drop,
            }
        } else {
            any_value(body, true, walk, depth)?
        })
    };
    let mut rewrite = Rewrite { buf, out: None };
    if values == 1 {
        let outcome = mask_value(first_body, walk)?;
        if outcome == Outcome::Drop {
            return Ok(Outcome::Drop);
        }
        rewrite.record(2, first_range.clone(), outcome);
        if let Some(out) = &mut rewrite.out {
            out.extend_from_slice(&buf[first_range.end..]);
        }
        return Ok(rewrite.finish());
    }
    // Decoders merge repeated values: every one is masked.
    let mut reader = Reader::new(buf);
    while !reader.done() {
        let field_start = reader.pos();
        let (field, wire) = reader.key()?;
        if (field, wire) != (2, WIRE_LEN) {
            reader.skip(field, wire, RECURSION_LIMIT)?;
            rewrite.record(field, field_start..reader.pos(), Outcome::Keep);
            continue;
        }
        let outcome = mask_value(reader.len_delimited()?, walk)?;
        if outcome == Outcome::Drop {
            return Ok(Outcome::Drop);
        }
        rewrite.record(field, field_start..reader.pos(), outcome);
    }
    Ok(rewrite.finish())
}

/// The text of a scalar `AnyValue`, for `hash` and `partial` of a sensitive key's value.
fn value_text(buf: &[u8]) -> String {
    let mut reader = Reader::new(buf);
    while !reader.done() {
        let Ok((field, wire)) = reader.key() else {
            break;
        };
        match (field, wire) {
            (1, WIRE_LEN) => {
                if let Ok(bytes) = reader.len_delimited() {
                    return String::from_utf8_lossy(bytes).into_owned();
                }
                break;
            }
            (3, WIRE_VARINT) => {
                if let Ok(number) = reader.varint() {
                    return (number as i64).to_string();
                }
                break;
            }
            (field, wire) => {
                if reader.skip(field, wire, RECURSION_LIMIT).is_err() {
                    break;
                }
            }
        }
    }
    String::new()
}

/// An `AnyValue`: strings are masked (as attribute values when `keyed`, else as free text), integers checked as digits, arrays element by
/// element and key-value lists by their own keys.
fn any_value<'b>(
    buf: &'b [u8],
    keyed: bool,
    walk: &mut Walk<'_, 'b>,
    depth: usize,
) -> Result<Outcome, WireError> {
    if depth > MAX_ANY_VALUE_DEPTH {
        return Err(WireError("AnyValue nested too deep"));
    }
    let mut reader = Reader::new(buf);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        let outcome = match (field, wire) {
            (1, WIRE_LEN) => {
                let body = reader.len_delimited()?;
                // Nearly every value is clean: found so on the bytes, before any UTF-8 check.
                if !walk.masker.may_change(body) {
                    continue;
                }
                let Ok(text) = std::str::from_utf8(body) else {
                    continue;
                };
                scalar(text, keyed, walk)
            }
            (3, WIRE_VARINT) => {
                let number = reader.varint()? as i64;
                if number.unsigned_abs() < SCANNED_INTEGER {
                    continue;
                }
                scalar(&number.to_string(), keyed, walk)
            }
            (5, WIRE_LEN) => {
                let body = reader.len_delimited()?;
                match array(body, keyed, walk, depth + 1)? {
                    Outcome::Replace(bytes) => {
                        let mut out = Vec::with_capacity(bytes.len() + 4);
                        put_bytes(&mut out, 5, &bytes);
                        Outcome::Replace(out)
                    }
                    other => other,
                }
            }
            (6, WIRE_LEN) => {
                let body = reader.len_delimited()?;
                match key_value_list(body, walk, depth + 1)? {
                    Outcome::Replace(bytes) => {
                        let mut out = Vec::with_capacity(bytes.len() + 4);
                        put_bytes(&mut out, 6, &bytes);
                        Outcome::Replace(out)
                    }
                    other => other,
                }
            }
            _ => {
                reader.skip(field, wire, RECURSION_LIMIT)?;
                continue;
            }
        };
        // An AnyValue is a oneof: the field just read is its value.
        return Ok(outcome);
    }
    Ok(Outcome::Keep)
}

/// A string (or an integer's digits): an attribute value (`keyed`) or free text (a log body); a change makes it a
/// string `AnyValue`.
fn scalar(text: &str, keyed: bool, walk: &mut Walk<'_, '_>) -> Outcome {
    // A keyed value's key was already classified (allowed, sensitive) by the attribute that holds it.
    let masked = if keyed {
        walk.masker.content(text)
    } else {
        Masked::Keep(walk.masker.text(text))
    };
    match masked {
        Masked::Keep(std::borrow::Cow::Borrowed(_)) => Outcome::Keep,
        Masked::Keep(std::borrow::Cow::Owned(masked)) => Outcome::Replace(string_value(&masked)),
        Masked::Drop => Outcome::Drop,
    }
}

/// An `ArrayValue` (values = 1): each element masked under the array's key; an element a `drop` rule hits is
/// removed.
fn array<'b>(
    buf: &'b [u8],
    keyed: bool,
    walk: &mut Walk<'_, 'b>,
    depth: usize,
) -> Result<Outcome, WireError> {
    repeated(buf, walk, |body, walk| any_value(body, keyed, walk, depth))
}

/// A `KeyValueList` (values = 1): each entry masked by its own key.
fn key_value_list<'b>(
    buf: &'b [u8],
    walk: &mut Walk<'_, 'b>,
    depth: usize,
) -> Result<Outcome, WireError> {
    repeated(buf, walk, |body, walk| attribute(body, walk, depth))
}

/// Masks every field-1 element of a message with `each`, rewriting from the first change.
fn repeated<'b>(
    buf: &'b [u8],
    walk: &mut Walk<'_, 'b>,
    mut each: impl FnMut(&'b [u8], &mut Walk<'_, 'b>) -> Result<Outcome, WireError>,
) -> Result<Outcome, WireError> {
    let mut reader = Reader::new(buf);
    let mut rewrite = Rewrite { buf, out: None };
    while !reader.done() {
        let field_start = reader.pos();
        let (field, wire) = reader.key()?;
        let outcome = if field == 1 && wire == WIRE_LEN {
            each(reader.len_delimited()?, walk)?
        } else {
            reader.skip(field, wire, RECURSION_LIMIT)?;
            Outcome::Keep
        };
        rewrite.record(1, field_start..reader.pos(), outcome);
    }
    Ok(rewrite.finish())
}

#[cfg(test)]
mod tests {
    use super::key_words;

    #[test]
    fn key_words_tell_apart_short_keys_differing_in_any_byte() {
        for len in 0..=16 {
            let key: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            for at in 0..len {
                let mut other = key.clone();
                other[at] ^= 0x20;
                assert_ne!(
                    key_words(&key),
                    key_words(&other),
                    "{len} bytes, byte {at} differs"
                );
            }
        }
    }
}
