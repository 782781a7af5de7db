//! Protobuf wire-format primitives shared by every walker of encoded OTLP: the receiver's validation
//! ([`super::scan`]) and the collector's `mask` processor read requests with this one [`Reader`], so what one
//! accepts the other can read.
//!
//! The reader follows `prost`'s decoder exactly where the two could disagree: a 10-byte varint whose last byte
//! is above 1 is invalid, a key above `u32::MAX`, field number 0 and wire types 6 and 7 are invalid, unknown
//! groups are skipped to their matching end tag, a stray end-group tag is an error, and skipping costs one level
//! of `prost`'s recursion budget ([`RECURSION_LIMIT`]).

use std::fmt;

/// Wire type of varints (`int32`, `uint64`, `bool`, enums).
pub const WIRE_VARINT: u8 = 0;
/// Wire type of 8-byte values (`fixed64`, `sfixed64`, `double`).
pub const WIRE_I64: u8 = 1;
/// Wire type of length-delimited values (strings, bytes, messages, packed repeated scalars).
pub const WIRE_LEN: u8 = 2;
/// Wire type that opens a (deprecated) group.
pub const WIRE_START_GROUP: u8 = 3;
/// Wire type that closes a group.
pub const WIRE_END_GROUP: u8 = 4;
/// Wire type of 4-byte values (`fixed32`, `float`).
pub const WIRE_I32: u8 = 5;

/// How deep `prost` lets messages (and skipped groups) nest below the decoded root before it gives up; a walker
/// that accepted deeper input would accept requests the exporters cannot decode.
pub const RECURSION_LIMIT: u32 = 100;

/// Why bytes are not a readable protobuf message. The text names the problem; callers add where it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

/// A cursor over the fields of one encoded message.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every byte has been read.
    #[inline(always)]
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The offset of the next byte to read.
    #[inline(always)]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Reads a varint.
    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64, WireError> {
        // Tags and most lengths fit in one byte, the lengths of most records in two.
        if let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        if let Some(&[low, high]) = self.buf.get(self.pos..self.pos + 2)
            && high < 0x80
        {
            self.pos += 2;
            return Ok(u64::from(low & 0x7f) | u64::from(high) << 7);
        }
        self.varint_slow()
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(WireError("truncated varint"));
            };
            self.pos += 1;
            // The tenth byte holds bit 63 alone: anything above 1 overflows 64 bits, which decoders reject.
            if shift == 9 && byte > 1 {
                return Err(WireError("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (shift * 7);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError("varint longer than 10 bytes"))
    }

    /// Reads a field key: `(field number, wire type)`.
    #[inline(always)]
    pub fn key(&mut self) -> Result<(u32, u8), WireError> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireError("field key larger than 32 bits"));
        }
        let wire = (key & 7) as u8;
        if wire > WIRE_I32 {
            return Err(WireError("invalid wire type (6 or 7)"));
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(WireError("invalid field number 0"));
        }
        Ok((field, wire))
    }

    /// Reads a length-delimited value.
    #[inline(always)]
    pub fn len_delimited(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        if len > (self.buf.len() - self.pos) as u64 {
            return Err(WireError("length runs past the end of its message"));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// Skips the length-delimited fields that follow while their key is the one byte `key` (a field number
    /// below 16): a run of one repeated field, passed over without decoding each key.
    #[inline(always)]
    pub fn skip_run(&mut self, key: u8) -> Result<(), WireError> {
        while self.buf.get(self.pos) == Some(&key) {
            self.pos += 1;
            self.len_delimited()?;
        }
        Ok(())
    }

    /// Moves to `pos`, a position the caller has checked: within the buffer, at or after the current one.
    #[inline(always)]
    pub fn advance_to(&mut self, pos: usize) {
        debug_assert!(pos >= self.pos && pos <= self.buf.len());
        self.pos = pos.clamp(self.pos, self.buf.len());
    }

    /// Reads a little-endian 8-byte value (`fixed64`).
    #[inline(always)]
    pub fn fixed64(&mut self) -> Result<u64, WireError> {
        let Some(bytes) = self.buf.get(self.pos..self.pos + 8) else {
            return Err(WireError("truncated fixed-width field"));
        };
        self.pos += 8;
        let mut value = [0u8; 8];
        value.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(value))
    }

    /// Skips `n` bytes of a fixed-width value.
    #[inline(always)]
    pub fn fixed(&mut self, n: usize) -> Result<(), WireError> {
        if self.buf.len() - self.pos < n {
            return Err(WireError("truncated fixed-width field"));
        }
        self.pos += n;
        Ok(())
    }

    /// Skips the value of an unknown field as `prost` does: any wire type, groups up to their matching end tag.
    /// `budget` is the recursion budget left at this message (see [`RECURSION_LIMIT`]).
    pub fn skip(&mut self, field: u32, wire: u8, budget: u32) -> Result<(), WireError> {
        if budget == 0 {
            return Err(WireError(
                "nested deeper than the decoder's recursion limit",
            ));
        }
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_I64 => self.fixed(8),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_I32 => self.fixed(4),
            WIRE_START_GROUP => loop {
                let (inner, inner_wire) = self.key()?;
                if inner_wire == WIRE_END_GROUP {
                    if inner != field {
                        return Err(WireError("group closed by another field's end tag"));
                    }
                    return Ok(());
                }
                self.skip(inner, inner_wire, budget - 1)?;
            },
            _ => Err(WireError("end-group tag without a group")),
        }
    }
}

/// Asks the processor to bring `bytes[from..from + len]` into cache ahead of reading it (a hint: nothing is read,
/// and out-of-range parts are ignored). A reader that walks a large buffer once after it has left the caches
/// (a batch reaching its exporter) would otherwise wait on memory at every record.
#[inline(always)]
pub fn prefetch(bytes: &[u8], from: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let end = from.saturating_add(len).min(bytes.len());
        let mut at = from;
        while at < end {
            // SAFETY: a prefetch is a hint that never faults and reads nothing into the program; the address
            // is within `bytes` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(at).cast::<i8>()) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, from, len);
}

/// The eight bytes of `bytes` from `at`, as one word.
#[inline(always)]
pub fn word_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// `a == b`, without a call into the C library's `memcmp` for the short strings (attribute keys, service and
/// span names) that walkers compare per item: for those, the call costs more than the comparison.
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = word_at;
    match a.len() {
        0..=7 => a.iter().zip(b).all(|(x, y)| x == y),
        // Two overlapping words cover 8 to 16 bytes, four cover 17 to 32.
        8..=16 => {
            let last = a.len() - 8;
            word(a, 0) == word(b, 0) && word(a, last) == word(b, last)
        }
        17..=32 => {
            let (third, last) = (a.len() - 16, a.len() - 8);
            (word(a, 0) ^ word(b, 0))
                | (word(a, 8) ^ word(b, 8))
                | (word(a, third) ^ word(b, third))
                | (word(a, last) ^ word(b, last))
                == 0
        }
        _ => a == b,
    }
}

/// Appends `value` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a length-delimited field.
pub fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `inner` as the innermost of nested length-delimited fields: `path` lists their numbers, outermost first
/// (`nested(&[1, 2, 2], metric)` is a metrics request of one entry, one scope and that metric). What tests that
/// build requests by hand, with fields real encoders would not write, nest their parts with.
pub fn nested(path: &[u32], inner: &[u8]) -> Vec<u8> {
    path.iter().rev().fold(inner.to_vec(), |body, &field| {
        let mut out = Vec::with_capacity(body.len() + 10);
        put_bytes(&mut out, field, &body);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_tells_apart_strings_differing_in_any_byte_at_any_length() {
        for len in 0..48 {
            let key: Vec<u8> = (0..len as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_bytes(&key, &key.clone()), "{len} bytes");
            for at in 0..len {
                let mut other = key.clone();
                other[at] ^= 0x20;
                assert!(!same_bytes(&key, &other), "{len} bytes, byte {at} differs");
            }
            assert!(!same_bytes(&key, &key[..len.saturating_sub(1)]) || len == 0);
        }
    }

    #[test]
    fn a_ten_byte_varint_may_only_set_bit_63() {
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(Reader::new(&max).varint(), Ok(u64::MAX));
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            Reader::new(&over).varint(),
            Err(WireError("varint overflows 64 bits"))
        );
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        assert_eq!(
            Reader::new(&[0x80]).varint(),
            Err(WireError("truncated varint"))
        );
    }

    #[test]
    fn keys_are_checked_as_prost_checks_them() {
        assert_eq!(Reader::new(&[0x0a]).key(), Ok((1, WIRE_LEN)));
        assert!(Reader::new(&[0x02]).key().is_err(), "field 0");
        assert!(Reader::new(&[0x0e]).key().is_err(), "wire type 6");
        assert!(Reader::new(&[0x0f]).key().is_err(), "wire type 7");
        // 2^32 as a key.
        assert!(Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x10]).key().is_err());
    }

    #[test]
    fn groups_are_skipped_to_their_own_end_tag() {
        // Field 5 group holding field 1 varint 7 and a nested field 6 group, then field 5's end tag.
        let group = [0x08, 0x07, 0x33, 0x34, 0x2c];
        let mut reader = Reader::new(&group);
        reader.skip(5, WIRE_START_GROUP, 10).unwrap();
        assert!(reader.done());
        // Closed by field 6's end tag instead.
        let mut wrong = Reader::new(&[0x08, 0x07, 0x34]);
        assert!(wrong.skip(5, WIRE_START_GROUP, 10).is_err());
        // Unclosed.
        assert!(
            Reader::new(&[0x08, 0x07])
                .skip(5, WIRE_START_GROUP, 10)
                .is_err()
        );
        // A stray end tag.
        assert!(Reader::new(&[]).skip(5, WIRE_END_GROUP, 10).is_err());
        // Nested groups spend the budget.
        assert!(Reader::new(&group).skip(5, WIRE_START_GROUP, 1).is_err());
        assert!(Reader::new(&[0x07]).skip(1, WIRE_VARINT, 0).is_err());
    }

    #[test]
    fn a_wire_error_shows_its_problem() {
        assert_eq!(
            WireError("truncated varint").to_string(),
            "truncated varint"
        );
    }

    #[test]
    fn put_bytes_writes_key_length_and_body() {
        let mut out = Vec::new();
        put_bytes(&mut out, 2, b"abc");
        assert_eq!(out, [0x12, 3, b'a', b'b', b'c']);
        let mut long = Vec::new();
        put_varint(&mut long, 300);
        assert_eq!(long, [0xac, 0x02]);
    }
}
