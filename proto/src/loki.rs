//! Grafana Loki's push protocol.
//!
//! * The messages of grafana/loki `pkg/push/push.proto` (package `logproto`), written as prost structs so no
//!   `protoc` is needed: [`PushRequest`], [`StreamAdapter`], [`EntryAdapter`], [`LabelPairAdapter`] and
//!   `google.protobuf.Timestamp` as [`Timestamp`]. Field numbers follow the upstream file; `EntryAdapter.parsed`
//!   (field 4) is query-side only and never sent. These are the reference: the tests decode with them.
//! * [`Push`]: a push being assembled, in a neutral form (streams, entries, structured metadata as ranges of one
//!   byte arena), with two encoders: [`Push::encode_protobuf`] writes `PushRequest` bytes directly (no message
//!   structs, no per-field allocation) and [`Push::encode_json`] writes the JSON push body
//!   (`{"streams":[{"stream":{…},"values":[["<ns>","<line>",{…}]]}]}`, timestamps as strings of nanoseconds).
//!   [`Push::to_message`] builds the reference [`PushRequest`] from the same content, for differential tests.
//!
//! ```
//! use prost::Message;
//! use vigil_proto::loki::{Push, PushRequest};
//!
//! let mut push = Push::default();
//! let stream = push.stream("{service_name=\"api\"}");
//! let entry = push.entry(stream, 1_700_000_000_123_456_789, b"GET / 200");
//! push.metadata(entry, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
//! let mut body = Vec::new();
//! push.encode_protobuf(&mut body);
//! let decoded = PushRequest::decode(body.as_slice()).unwrap();
//! assert_eq!(decoded, push.to_message());
//! assert_eq!(decoded.streams[0].entries[0].line, "GET / 200");
//! ```

use std::ops::Range;

/// `logproto.PushRequest`: the body of `POST /loki/api/v1/push` (block-format snappy).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The streams, each with its entries.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one stream (label set) and its entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// The label set as a LogQL selector: `{service_name="api", level="info"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// The entries, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Server-internal; clients leave it 0.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`: one log line.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    /// When it happened.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The log line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Structured metadata: name/value pairs stored beside the line, not indexed.
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
    /// Query-side only; never sent.
    #[prost(message, repeated, tag = "4")]
    pub parsed: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LabelPairAdapter {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// The timestamp of `nanos` nanoseconds since the Unix epoch (negative values count back from it).
    pub fn from_unix_nanos(nanos: i64) -> Self {
        Timestamp {
            seconds: nanos.div_euclid(1_000_000_000),
            nanos: nanos.rem_euclid(1_000_000_000) as i32,
        }
    }
}

/// A stream of a [`Push`], by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamIndex(usize);

impl StreamIndex {
    /// Its position: streams are numbered from 0 in the order they were added.
    pub fn position(self) -> usize {
        self.0
    }
}

/// An entry of a [`Push`], by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryIndex(usize);

#[derive(Clone, Debug)]
struct Stream {
    labels: String,
    entries: Vec<usize>,
}

#[derive(Clone, Debug)]
struct Entry {
    timestamp: i64,
    line: Range<usize>,
    /// Indexes into `Push::pairs`.
    metadata: Vec<usize>,
}

/// A push being assembled: streams with their entries, the bytes of every line and metadata pair in one arena.
#[derive(Clone, Debug, Default)]
pub struct Push {
    arena: Vec<u8>,
    /// Name and value ranges into `arena`.
    pairs: Vec<(Range<usize>, Range<usize>)>,
    streams: Vec<Stream>,
    entries: Vec<Entry>,
}

impl Push {
    /// Adds a stream with `labels` (a LogQL selector, `{name="value", …}`).
    pub fn stream(&mut self, labels: &str) -> StreamIndex {
        self.streams.push(Stream {
            labels: labels.to_string(),
            entries: Vec::new(),
        });
        StreamIndex(self.streams.len() - 1)
    }

    /// Adds an entry to `stream`; entries are sent in the order added (sort them with [`Push::sort_entries`]).
    /// `line` must be UTF-8: the protobuf field is a string.
    pub fn entry(&mut self, stream: StreamIndex, timestamp_ns: i64, line: &[u8]) -> EntryIndex {
        let start = self.arena.len();
        self.arena.extend_from_slice(line);
        let index = self.entries.len();
        self.entries.push(Entry {
            timestamp: timestamp_ns,
            line: start..self.arena.len(),
            metadata: Vec::new(),
        });
        self.streams[stream.0].entries.push(index);
        EntryIndex(index)
    }

    /// Adds a structured-metadata pair to `entry`.
    pub fn metadata(&mut self, entry: EntryIndex, name: &str, value: &str) {
        let name_start = self.arena.len();
        self.arena.extend_from_slice(name.as_bytes());
        let value_start = self.arena.len();
        self.arena.extend_from_slice(value.as_bytes());
        self.pairs
            .push((name_start..value_start, value_start..self.arena.len()));
        self.entries[entry.0].metadata.push(self.pairs.len() - 1);
    }

    /// Changes the timestamp of `entry`.
    pub fn set_timestamp(&mut self, entry: EntryIndex, timestamp_ns: i64) {
        self.entries[entry.0].timestamp = timestamp_ns;
    }

    /// The timestamp of `entry`.
    pub fn timestamp(&self, entry: EntryIndex) -> i64 {
        self.entries[entry.0].timestamp
    }

    /// The line of `entry`.
    pub fn line(&self, entry: EntryIndex) -> &[u8] {
        &self.arena[self.entries[entry.0].line.clone()]
    }

    /// The structured metadata of `entry`, as `(name, value)` pairs in the order they were added.
    pub fn metadata_of(&self, entry: EntryIndex) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.entries[entry.0].metadata.iter().map(|&pair| {
            let (name, value) = &self.pairs[pair];
            (self.text(name), self.text(value))
        })
    }

    /// The entries of `stream`, in sending order.
    pub fn entries(&self, stream: StreamIndex) -> impl Iterator<Item = EntryIndex> + '_ {
        self.streams[stream.0]
            .entries
            .iter()
            .map(|&i| EntryIndex(i))
    }

    /// Takes `entry` out of its stream: it is not sent.
    pub fn remove(&mut self, stream: StreamIndex, entry: EntryIndex) {
        self.streams[stream.0].entries.retain(|&i| i != entry.0);
    }

    /// Sorts every stream's entries by timestamp (stable: equal timestamps keep their order), as Loki's
    /// per-stream ordering rules want.
    pub fn sort_entries(&mut self) {
        let entries = &self.entries;
        for stream in &mut self.streams {
            stream.entries.sort_by_key(|&i| entries[i].timestamp);
        }
    }

    /// Bytes of lines and metadata held so far (a push's size before encoding, near enough for batching).
    pub fn byte_len(&self) -> usize {
        self.arena.len()
    }

    /// Number of entries that will be sent.
    pub fn entry_count(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }

    /// The labels of `stream`.
    pub fn labels(&self, stream: StreamIndex) -> &str {
        &self.streams[stream.0].labels
    }

    /// Every stream, by index.
    pub fn stream_indexes(&self) -> impl Iterator<Item = StreamIndex> {
        (0..self.streams.len()).map(StreamIndex)
    }

    fn text(&self, range: &Range<usize>) -> &[u8] {
        &self.arena[range.clone()]
    }

    /// The encoded length of an `EntryAdapter`'s fields (without its own tag and length).
    fn entry_len(&self, entry: &Entry) -> usize {
        let timestamp = timestamp_len(entry.timestamp);
        let mut len = 1 + varint_len(timestamp as u64) + timestamp;
        len += string_field_len(entry.line.len());
        for &pair in &entry.metadata {
            len += field_len(self.pair_len(pair));
        }
        len
    }

    fn pair_len(&self, pair: usize) -> usize {
        let (name, value) = &self.pairs[pair];
        string_field_len(name.len()) + string_field_len(value.len())
    }

    /// Appends the `PushRequest` to `out`, streams without entries left out. Each entry's length is computed
    /// once: the stream's length is their sum.
    pub fn encode_protobuf(&self, out: &mut Vec<u8>) {
        // Lines and metadata plus a few bytes of framing per entry and pair.
        out.reserve(self.arena.len() + 16 * self.entries.len() + 4 * self.pairs.len());
        let mut lengths: Vec<usize> = Vec::new();
        for stream in self.streams.iter().filter(|s| !s.entries.is_empty()) {
            lengths.clear();
            lengths.extend(
                stream
                    .entries
                    .iter()
                    .map(|&index| self.entry_len(&self.entries[index])),
            );
            let stream_len = string_field_len(stream.labels.len())
                + lengths.iter().map(|&len| field_len(len)).sum::<usize>();
            out.push(0x0a); // streams = 1, length-delimited
            put_varint(out, stream_len as u64);
            put_string_field(out, 0x0a, stream.labels.as_bytes()); // labels = 1
            for (&index, &entry_len) in stream.entries.iter().zip(&lengths) {
                let entry = &self.entries[index];
                out.push(0x12); // entries = 2
                put_varint(out, entry_len as u64);
                let timestamp = Timestamp::from_unix_nanos(entry.timestamp);
                out.push(0x0a); // timestamp = 1
                put_varint(out, timestamp_len(entry.timestamp) as u64);
                if timestamp.seconds != 0 {
                    out.push(0x08);
                    put_varint(out, timestamp.seconds as u64);
                }
                if timestamp.nanos != 0 {
                    out.push(0x10);
                    put_varint(out, timestamp.nanos as u64);
                }
                put_string_field(out, 0x12, self.text(&entry.line)); // line = 2
                for &pair in &entry.metadata {
                    let (name, value) = &self.pairs[pair];
                    out.push(0x1a); // structuredMetadata = 3
                    put_varint(out, self.pair_len(pair) as u64);
                    put_string_field(out, 0x0a, self.text(name));
                    put_string_field(out, 0x12, self.text(value));
                }
            }
        }
    }

    /// Appends the JSON push body to `out`. `stream_labels` gives each stream's labels as pairs (JSON streams
    /// are objects, not selector strings).
    pub fn encode_json(
        &self,
        stream_labels: &dyn Fn(StreamIndex) -> Vec<(String, String)>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"{\"streams\":[");
        let mut first_stream = true;
        for (index, stream) in self.streams.iter().enumerate() {
            if stream.entries.is_empty() {
                continue;
            }
            if !first_stream {
                out.push(b',');
            }
            first_stream = false;
            out.extend_from_slice(b"{\"stream\":{");
            for (i, (name, value)) in stream_labels(StreamIndex(index)).iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(out, name.as_bytes());
                out.push(b':');
                json_string(out, value.as_bytes());
            }
            out.extend_from_slice(b"},\"values\":[");
            for (i, &entry_index) in stream.entries.iter().enumerate() {
                let entry = &self.entries[entry_index];
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"[\"");
                out.extend_from_slice(entry.timestamp.to_string().as_bytes());
                out.extend_from_slice(b"\",");
                json_string(out, self.text(&entry.line));
                if !entry.metadata.is_empty() {
                    out.extend_from_slice(b",{");
                    for (j, &pair) in entry.metadata.iter().enumerate() {
                        let (name, value) = &self.pairs[pair];
                        if j > 0 {
                            out.push(b',');
                        }
                        json_string(out, self.text(name));
                        out.push(b':');
                        json_string(out, self.text(value));
                    }
                    out.push(b'}');
                }
                out.push(b']');
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
    }

    /// The reference message with the same content as [`Push::encode_protobuf`] writes.
    pub fn to_message(&self) -> PushRequest {
        let text = |range: &Range<usize>| String::from_utf8_lossy(self.text(range)).into_owned();
        PushRequest {
            streams: self
                .streams
                .iter()
                .filter(|s| !s.entries.is_empty())
                .map(|stream| StreamAdapter {
                    labels: stream.labels.clone(),
                    entries: stream
                        .entries
                        .iter()
                        .map(|&i| {
                            let entry = &self.entries[i];
                            EntryAdapter {
                                timestamp: Some(Timestamp::from_unix_nanos(entry.timestamp)),
                                line: text(&entry.line),
                                structured_metadata: entry
                                    .metadata
                                    .iter()
                                    .map(|&pair| {
                                        let (name, value) = &self.pairs[pair];
                                        LabelPairAdapter {
                                            name: text(name),
                                            value: text(value),
                                        }
                                    })
                                    .collect(),
                                parsed: Vec::new(),
                            }
                        })
                        .collect(),
                    hash: 0,
                })
                .collect(),
        }
    }
}

fn varint_len(value: u64) -> usize {
    // 7 bits per byte; 0 still takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited field of `len` bytes, with its one-byte tag and its length.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A proto3 string field: left out when empty.
fn string_field_len(len: usize) -> usize {
    if len == 0 { 0 } else { field_len(len) }
}

fn put_string_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The encoded length of a `Timestamp`'s fields (zero fields are left out, as proto3 does).
fn timestamp_len(nanos: i64) -> usize {
    let timestamp = Timestamp::from_unix_nanos(nanos);
    let mut len = 0;
    if timestamp.seconds != 0 {
        len += 1 + varint_len(timestamp.seconds as u64);
    }
    if timestamp.nanos != 0 {
        len += 1 + varint_len(timestamp.nanos as u64);
    }
    len
}

/// Writes `text` as a JSON string, quotes included (invalid UTF-8 is replaced, as JSON needs text).
pub fn json_string(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    let text = String::from_utf8_lossy(text);
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn field_numbers_match_push_proto() {
        // Hand-encoded from push.proto: StreamAdapter{labels=1, entries=2}, EntryAdapter{timestamp=1, line=2,
        // structuredMetadata=3}, LabelPairAdapter{name=1, value=2}, Timestamp{seconds=1, nanos=2}.
        let mut push = Push::default();
        let stream = push.stream("{a=\"b\"}");
        let entry = push.entry(stream, 1_000_000_002, b"hi");
        push.metadata(entry, "k", "v");
        let mut body = Vec::new();
        push.encode_protobuf(&mut body);
        let expected: &[u8] = &[
            0x0a, 29, // streams
            0x0a, 7, b'{', b'a', b'=', b'"', b'b', b'"', b'}', // labels
            0x12, 18, // entries
            0x0a, 4, 0x08, 1, 0x10, 2, // timestamp {seconds 1, nanos 2}
            0x12, 2, b'h', b'i', // line
            0x1a, 6, 0x0a, 1, b'k', 0x12, 1, b'v', // structuredMetadata
        ];
        assert_eq!(body, expected);
        assert_eq!(body, push.to_message().encode_to_vec());
        let second = push.entry(stream, 0, b"");
        push.metadata(second, "x", "1");
        push.metadata(second, "y", "2");
        let pairs: Vec<_> = push.metadata_of(second).collect();
        assert_eq!(pairs, [(&b"x"[..], &b"1"[..]), (&b"y"[..], &b"2"[..])]);
        assert_eq!(push.metadata_of(entry).count(), 1);
    }

    #[test]
    fn negative_and_zero_timestamps_round_trip() {
        for nanos in [0, 1, -1, 999_999_999, -1_000_000_001, i64::MAX, i64::MIN] {
            let mut push = Push::default();
            let stream = push.stream("{a=\"b\"}");
            push.entry(stream, nanos, b"");
            let mut body = Vec::new();
            push.encode_protobuf(&mut body);
            assert_eq!(
                PushRequest::decode(body.as_slice()).unwrap(),
                push.to_message(),
                "{nanos}"
            );
        }
    }

    #[test]
    fn json_body_has_string_timestamps_and_metadata_objects() {
        let mut push = Push::default();
        let stream = push.stream("{job=\"svc\"}");
        push.entry(stream, 1_570_818_238_000_000_000, b"log line");
        let second = push.entry(stream, 1_570_818_238_000_000_001, b"line \"2\"\n");
        push.metadata(second, "trace_id", "0242ac12");
        push.stream("{empty=\"yes\"}");
        let mut body = Vec::new();
        push.encode_json(&|_| vec![("job".into(), "svc".into())], &mut body);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"streams": [{"stream": {"job": "svc"}, "values": [
                ["1570818238000000000", "log line"],
                ["1570818238000000001", "line \"2\"\n", {"trace_id": "0242ac12"}],
            ]}]})
        );
    }

    #[test]
    fn entries_can_be_retimed_and_removed() {
        let mut push = Push::default();
        let a = push.stream("{s=\"a\"}");
        let b = push.stream("{s=\"b\"}");
        assert_eq!((a.position(), b.position()), (0, 1));
        let first = push.entry(a, 5, b"one");
        let second = push.entry(a, 6, b"two");
        push.entry(b, 7, b"three");
        assert_eq!(push.byte_len(), 11);
        push.set_timestamp(first, 9);
        assert_eq!(push.timestamp(first), 9);
        assert_eq!(push.timestamp(second), 6);
        push.remove(a, second);
        assert_eq!(push.entries(a).collect::<Vec<_>>(), [first]);
        assert_eq!(push.entry_count(), 2);
        assert_eq!(
            push.stream_indexes()
                .map(|s| push.labels(s).to_string())
                .collect::<Vec<_>>(),
            ["{s=\"a\"}", "{s=\"b\"}"]
        );
        let message = push.to_message();
        assert_eq!(message.streams[0].entries.len(), 1);
        assert_eq!(
            message.streams[0].entries[0].timestamp,
            Some(Timestamp::from_unix_nanos(9))
        );
    }

    #[test]
    fn json_escapes_like_json_and_lists_every_label() {
        let mut out = Vec::new();
        json_string(&mut out, b"a\nb\rc\td\"e\\f\x01");
        assert_eq!(out, b"\"a\\nb\\rc\\td\\\"e\\\\f\\u0001\"");
        let mut push = Push::default();
        let stream = push.stream("{a=\"1\", b=\"2\"}");
        push.entry(stream, 1, b"x");
        let mut body = Vec::new();
        push.encode_json(
            &|_| vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            &mut body,
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value["streams"][0]["stream"],
            serde_json::json!({"a": "1", "b": "2"})
        );
    }

    #[test]
    fn sorting_is_per_stream_and_stable() {
        let mut push = Push::default();
        let a = push.stream("{s=\"a\"}");
        let b = push.stream("{s=\"b\"}");
        push.entry(a, 30, b"a3");
        push.entry(b, 10, b"b1");
        push.entry(a, 10, b"a1");
        push.entry(a, 10, b"a1bis");
        push.sort_entries();
        let lines: Vec<&[u8]> = push.entries(a).map(|e| push.line(e)).collect();
        assert_eq!(lines, [&b"a1"[..], b"a1bis", b"a3"]);
        assert_eq!(push.entry_count(), 4);
    }
}
