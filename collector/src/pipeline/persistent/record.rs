//! The on-disk formats of the persistent queue: records in segment files, entries in acknowledgement files.
//!
//! A segment file `seg-<first seq>.wal` is a sequence of records, each a fixed header and a payload:
//!
//! ```text
//! header (56 bytes, little-endian)        payload
//! magic u32 | header_crc u32              chunk count u32
//! payload_len u32 | payload_crc u32       per chunk: length u32, items u64
//! seq u64 | items u64 | items_before u64  the chunks' bytes, back to back
//! enqueued_unix_ms u64 | signal u8
//! flags u8 | 6 bytes zero
//! ```
//!
//! `flags` is 0 for a record, 1 for a tombstone, 2 for an end marker: a header without payload written after
//! every group of records and overwritten by the next group, so that a reader can tell where a segment's
//! records end from a torn write, even in a recycled segment file whose old records follow.
//!
//! `header_crc` covers the header after itself, `payload_crc` the payload. Two checksums let a reader tell a
//! damaged payload (skip exactly that record, whose item count is known) from a damaged header (search for
//! the next valid header). `items_before` counts every item stored before the record, so the gap between two
//! valid records gives the exact number of items lost between them, whether to damage or a missing segment.
//!
//! An acknowledgement file `seg-<first seq>.ack` holds 16-byte entries `seq u64 | kind u32 | crc u32`: a
//! record was handed to the exporter (`started`), or the exporter finished with it (`done`). Entries are
//! written without fsync: losing one after a power cut only means a record is delivered again.
//!
//! A file `FORMAT` in the queue's directory names the version of these formats (`vigil-queue 1`). A build
//! refuses a directory in a version it does not read instead of taking its records for damage: repairing them
//! would quarantine data a newer build wrote and could still deliver. A directory without the file was written
//! before it existed, in version 1.

use std::collections::HashSet;

use bytes::{Buf, BufMut, Bytes};
use vigil_proto::otlp::Signal;

use crate::pipeline::{Batch, Chunk};

/// The version of the formats this build reads and writes; the next change to a record, a segment or an
/// acknowledgement entry that an older build would misread takes the next number.
pub const FORMAT_VERSION: u32 = 1;
/// The file in a queue's directory that names its format version.
pub const FORMAT_FILE: &str = "FORMAT";
/// What `FORMAT` holds before the version number.
const FORMAT_PREFIX: &str = "vigil-queue ";

/// The contents of a `FORMAT` file naming this build's version.
pub fn encode_format() -> String {
    format!("{FORMAT_PREFIX}{FORMAT_VERSION}\n")
}

/// The version a `FORMAT` file names; `None` when it is not such a file.
pub fn decode_format(contents: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(contents).ok()?;
    let number = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .strip_prefix(FORMAT_PREFIX)?;
    if !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// Marks the start of a record.
pub const MAGIC: u32 = 0x5147_4c56; // "VLGQ" read as little-endian bytes
/// Bytes in a record header.
pub const HEADER_LEN: usize = 56;
/// Bytes in an acknowledgement entry.
pub const ACK_LEN: usize = 16;

/// A record's header, as decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Bytes of payload after the header.
    pub payload_len: u32,
    /// CRC-32 of the payload.
    pub payload_crc: u32,
    /// The record's sequence number, one more than the previous record's.
    pub seq: u64,
    /// Spans, data points or log records in the record.
    pub items: u64,
    /// Items in every record before this one.
    pub items_before: u64,
    /// When the record was written, in milliseconds since the Unix epoch.
    pub enqueued_unix_ms: u64,
    /// The signal of its items.
    pub signal: Signal,
    /// A tombstone: stands for items lost to damage that was repaired; it has no payload to deliver.
    pub tombstone: bool,
    /// An end marker: the segment's records end here (written after each group, overwritten by the next).
    pub end: bool,
}

impl Header {
    /// Bytes of the whole record, header included.
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.payload_len)
    }
}

fn signal_code(signal: Signal) -> u8 {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

fn signal_of(code: u8) -> Option<Signal> {
    Some(match code {
        0 => Signal::Traces,
        1 => Signal::Metrics,
        2 => Signal::Logs,
        _ => return None,
    })
}

/// Appends one record holding `batch` to `out`, returning its header: the plain form of the record format,
/// kept as the reference that [`encode_parts`] (what the writer uses) is tested against.
#[cfg(test)]
pub fn encode(
    out: &mut Vec<u8>,
    batch: &Batch,
    seq: u64,
    items_before: u64,
    enqueued_unix_ms: u64,
) -> Header {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let payload_start = out.len();
    out.put_u32_le(batch.chunks.len() as u32);
    for chunk in &batch.chunks {
        out.put_u32_le(chunk.bytes.len() as u32);
        out.put_u64_le(chunk.items);
    }
    for chunk in &batch.chunks {
        out.extend_from_slice(&chunk.bytes);
    }
    let payload = &out[payload_start..];
    let header = Header {
        payload_len: payload.len() as u32,
        payload_crc: crc32fast::hash(payload),
        seq,
        items: batch.items,
        items_before,
        enqueued_unix_ms,
        signal: batch.signal,
        tombstone: false,
        end: false,
    };
    write_header(&mut out[start..payload_start], &header);
    header
}

/// A record to be written without copying its chunks: its header and chunk table are appended to a metadata
/// buffer, and the chunks' bytes are referenced. Laid end to end (header and table, then the chunks) the parts
/// are exactly the bytes `encode` (the reference, in tests) writes for the same batch.
pub fn encode_parts(
    meta: &mut Vec<u8>,
    batch: &Batch,
    seq: u64,
    items_before: u64,
    enqueued_unix_ms: u64,
) -> Header {
    let start = meta.len();
    meta.resize(start + HEADER_LEN, 0);
    let table_start = meta.len();
    meta.put_u32_le(batch.chunks.len() as u32);
    for chunk in &batch.chunks {
        meta.put_u32_le(chunk.bytes.len() as u32);
        meta.put_u64_le(chunk.items);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta[table_start..]);
    for chunk in &batch.chunks {
        crc.update(&chunk.bytes);
    }
    let header = Header {
        payload_len: (meta.len() - table_start + batch.byte_len()) as u32,
        payload_crc: crc.finalize(),
        seq,
        items: batch.items,
        items_before,
        enqueued_unix_ms,
        signal: batch.signal,
        tombstone: false,
        end: false,
    };
    write_header(&mut meta[start..table_start], &header);
    header
}

/// Appends a tombstone for `items` items lost before a record (see the module documentation).
pub fn encode_tombstone(out: &mut Vec<u8>, seq: u64, items: u64, items_before: u64) -> Header {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let header = Header {
        payload_len: 0,
        payload_crc: crc32fast::hash(&[]),
        seq,
        items,
        items_before,
        enqueued_unix_ms: 0,
        signal: Signal::Traces,
        tombstone: true,
        end: false,
    };
    write_header(&mut out[start..], &header);
    header
}

/// Appends an end marker: the next record would be `seq`, after `items_before` items.
pub fn encode_end(out: &mut Vec<u8>, seq: u64, items_before: u64) -> Header {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let header = Header {
        payload_len: 0,
        payload_crc: crc32fast::hash(&[]),
        seq,
        items: 0,
        items_before,
        enqueued_unix_ms: 0,
        signal: Signal::Traces,
        tombstone: false,
        end: true,
    };
    write_header(&mut out[start..], &header);
    header
}

fn write_header(into: &mut [u8], header: &Header) {
    let mut fields = &mut into[8..];
    fields.put_u32_le(header.payload_len);
    fields.put_u32_le(header.payload_crc);
    fields.put_u64_le(header.seq);
    fields.put_u64_le(header.items);
    fields.put_u64_le(header.items_before);
    fields.put_u64_le(header.enqueued_unix_ms);
    fields.put_u8(signal_code(header.signal));
    fields.put_u8(match (header.tombstone, header.end) {
        (true, _) => 1,
        (false, true) => 2,
        (false, false) => 0,
    });
    fields.put_bytes(0, 6);
    let crc = crc32fast::hash(&into[8..HEADER_LEN]);
    let mut prefix = &mut into[..8];
    prefix.put_u32_le(MAGIC);
    prefix.put_u32_le(crc);
}

/// Decodes a header, checking its magic and checksum; `None` when these bytes are not a valid header.
pub fn decode_header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let mut prefix = &bytes[..8];
    if prefix.get_u32_le() != MAGIC || prefix.get_u32_le() != crc32fast::hash(&bytes[8..HEADER_LEN])
    {
        return None;
    }
    let mut fields = &bytes[8..HEADER_LEN];
    let payload_len = fields.get_u32_le();
    let payload_crc = fields.get_u32_le();
    let seq = fields.get_u64_le();
    let items = fields.get_u64_le();
    let items_before = fields.get_u64_le();
    let enqueued_unix_ms = fields.get_u64_le();
    let signal = signal_of(fields.get_u8())?;
    let (tombstone, end) = match fields.get_u8() {
        0 => (false, false),
        1 => (true, false),
        2 => (false, true),
        _ => return None,
    };
    Some(Header {
        payload_len,
        payload_crc,
        seq,
        items,
        items_before,
        enqueued_unix_ms,
        signal,
        tombstone,
        end,
    })
}

/// Why a payload could not be turned back into a batch.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The bytes do not match the header's checksum.
    #[error("payload checksum mismatch")]
    Checksum,
    /// The checksum matched but the chunk table does not describe the payload (a bug, or a forged file).
    #[error("payload chunk table is inconsistent")]
    Table,
}

/// Decodes a payload read after `header` into the batch it was written from (chunks are zero-copy slices).
pub fn decode_payload(header: &Header, payload: Bytes) -> Result<Batch, PayloadError> {
    if payload.len() != header.payload_len as usize
        || crc32fast::hash(&payload) != header.payload_crc
    {
        return Err(PayloadError::Checksum);
    }
    let mut table = &payload[..];
    if table.remaining() < 4 {
        return Err(PayloadError::Table);
    }
    let count = table.get_u32_le() as usize;
    if table.remaining() < count.saturating_mul(12) {
        return Err(PayloadError::Table);
    }
    let mut offset = 4 + count * 12;
    let mut batch = Batch::empty(header.signal);
    for _ in 0..count {
        let len = table.get_u32_le() as usize;
        let items = table.get_u64_le();
        let end = offset.checked_add(len).filter(|end| *end <= payload.len());
        let Some(end) = end else {
            return Err(PayloadError::Table);
        };
        batch.push(Chunk::new(payload.slice(offset..end), items));
        offset = end;
    }
    if offset != payload.len() || batch.items != header.items {
        return Err(PayloadError::Table);
    }
    Ok(batch)
}

/// What an acknowledgement entry says about a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckKind {
    /// The record was handed to the exporter.
    Started,
    /// The exporter finished with the record (delivered, or dropped and counted).
    Done,
}

/// Encodes an acknowledgement entry.
pub fn encode_ack(seq: u64, kind: AckKind) -> [u8; ACK_LEN] {
    let mut entry = [0u8; ACK_LEN];
    let mut fields = &mut entry[..12];
    fields.put_u64_le(seq);
    fields.put_u32_le(match kind {
        AckKind::Started => 1,
        AckKind::Done => 2,
    });
    let crc = crc32fast::hash(&entry[..12]);
    (&mut entry[12..]).put_u32_le(crc);
    entry
}

/// What an acknowledgement file says: the records done, and the records started and not done (in flight when
/// the queue was last written).
pub fn ack_state(bytes: &[u8]) -> (HashSet<u64>, HashSet<u64>) {
    let (mut done, mut started) = (HashSet::new(), HashSet::new());
    for (seq, kind) in decode_acks(bytes) {
        match kind {
            AckKind::Started => started.insert(seq),
            AckKind::Done => done.insert(seq),
        };
    }
    started.retain(|seq| !done.contains(seq));
    (done, started)
}

/// Decodes the entries of an acknowledgement file; a torn or damaged entry is skipped (at worst, its record
/// is delivered again).
pub fn decode_acks(bytes: &[u8]) -> impl Iterator<Item = (u64, AckKind)> + '_ {
    bytes.chunks_exact(ACK_LEN).filter_map(|entry| {
        let mut crc = &entry[12..];
        if crc.get_u32_le() != crc32fast::hash(&entry[..12]) {
            return None;
        }
        let mut fields = &entry[..12];
        let seq = fields.get_u64_le();
        let kind = match fields.get_u32_le() {
            1 => AckKind::Started,
            2 => AckKind::Done,
            _ => return None,
        };
        Some((seq, kind))
    })
}

/// Where the next valid header starts in `bytes` at or after `from`, if anywhere: used to resume after a
/// damaged header. A candidate counts only if its whole record fits in `bytes`.
pub fn find_next_header(bytes: &[u8], from: usize) -> Option<(usize, Header)> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + HEADER_LEN <= bytes.len() {
        let window = &bytes[at..];
        let found = window.windows(4).position(|w| w == magic)?;
        let candidate = at + found;
        if let Some(header) = decode_header(&bytes[candidate..])
            && candidate as u64 + header.record_len() <= bytes.len() as u64
        {
            return Some((candidate, header));
        }
        at = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(chunks: &[(&[u8], u64)]) -> Batch {
        let mut batch = Batch::empty(Signal::Logs);
        for (bytes, items) in chunks {
            batch.push(Chunk::new(Bytes::copy_from_slice(bytes), *items));
        }
        batch
    }

    #[test]
    fn a_record_decodes_to_the_batch_it_was_written_from() {
        let original = batch(&[(b"first", 2), (b"", 0), (b"third chunk", 5)]);
        let mut out = Vec::new();
        let header = encode(&mut out, &original, 7, 100, 1_700_000_000_000);
        assert_eq!(out.len() as u64, header.record_len());
        let decoded_header = decode_header(&out).unwrap();
        assert_eq!(decoded_header, header);
        assert_eq!(header.seq, 7);
        assert_eq!(header.items, 7);
        assert_eq!(header.items_before, 100);
        let decoded = decode_payload(&header, Bytes::copy_from_slice(&out[HEADER_LEN..])).unwrap();
        assert_eq!(decoded.signal, Signal::Logs);
        assert_eq!(decoded.items, 7);
        let chunks: Vec<(&[u8], u64)> = decoded
            .chunks
            .iter()
            .map(|c| (&c.bytes[..], c.items))
            .collect();
        assert_eq!(
            chunks,
            vec![(&b"first"[..], 2), (&b""[..], 0), (&b"third chunk"[..], 5)]
        );
    }

    #[test]
    fn acks_round_trip_and_damaged_entries_are_skipped() {
        let mut file = Vec::new();
        file.extend_from_slice(&encode_ack(3, AckKind::Started));
        file.extend_from_slice(&encode_ack(3, AckKind::Done));
        let mut damaged = encode_ack(4, AckKind::Done);
        damaged[2] ^= 1;
        file.extend_from_slice(&damaged);
        file.extend_from_slice(&encode_ack(5, AckKind::Started)[..9]);
        let acks: Vec<_> = decode_acks(&file).collect();
        assert_eq!(acks, vec![(3, AckKind::Started), (3, AckKind::Done)]);
    }

    proptest! {
        /// The parts of a record, laid end to end, are the record `encode` writes.
        #[test]
        fn parts_are_the_encoded_record(
            chunks in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..300), 0u64..50), 0..6),
            seq in any::<u64>(), items_before in any::<u64>(), enqueued in any::<u64>(),
        ) {
            let chunks: Vec<(&[u8], u64)> = chunks.iter().map(|(b, i)| (b.as_slice(), *i)).collect();
            let original = batch(&chunks);
            let mut encoded = Vec::new();
            let header = encode(&mut encoded, &original, seq, items_before, enqueued);
            let mut laid = Vec::new();
            let parts_header = encode_parts(&mut laid, &original, seq, items_before, enqueued);
            for chunk in &original.chunks {
                laid.extend_from_slice(&chunk.bytes);
            }
            prop_assert_eq!(parts_header, header);
            prop_assert_eq!(laid, encoded);
        }

        /// Any single flipped bit in a record is caught by one of the two checksums.
        #[test]
        fn every_flipped_bit_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..200), bit in 0usize..2048) {
            let original = batch(&[(&payload, 3)]);
            let mut out = Vec::new();
            let header = encode(&mut out, &original, 1, 0, 0);
            let bit = bit % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            let intact = match decode_header(&out) {
                None => false,
                Some(h) => h == header
                    && decode_payload(&h, Bytes::copy_from_slice(&out[HEADER_LEN..])).is_ok(),
            };
            prop_assert!(!intact, "flipping bit {} went unnoticed", bit);
        }

        /// After damage anywhere, the next intact record is found again.
        #[test]
        fn resynchronises_after_damage(garbage in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = garbage.clone();
            let header = encode(&mut out, &batch(&[(b"payload", 1)]), 9, 0, 0);
            let found = find_next_header(&out, 0);
            // Garbage might itself contain a valid-looking header only by forging a CRC: vanishingly rare.
            prop_assert_eq!(found, Some((garbage.len(), header)));
        }
    }
}
