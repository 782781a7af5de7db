//! Differential property test of the direct Loki encoders ([`Push::encode_protobuf`], [`Push::encode_json`])
//! against the reference: the `PushRequest` prost messages of Loki's `push.proto`, built by [`Push::to_message`].
//!
//! Pushes are generated with arbitrary Unicode labels, lines and metadata (empty strings, quotes, control
//! characters and long values included), timestamps over the whole `i64` range, several streams (some left
//! empty), and removals and sorting as the exporter does them. For every case:
//!
//! * the protobuf bytes are exactly what prost writes for the reference message (and decode back to it);
//! * the JSON body parses, and holds the same streams, entries, string timestamps and metadata.
//!
//! `PROPTEST_CASES` sets the number of cases (the suite runs the default 256).

use proptest::prelude::*;
use prost::Message;
use vigil_proto::loki::{Push, PushRequest};

#[derive(Debug, Clone)]
struct Entry {
    stream: usize,
    timestamp: i64,
    line: String,
    metadata: Vec<(String, String)>,
    removed: bool,
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z_]{1,12}",
        any::<String>(),
        "[\"\\\\\n\t\u{1}\u{7f}é😀 ]{0,20}",
        proptest::collection::vec(any::<char>(), 100..400).prop_map(|c| c.into_iter().collect()),
    ]
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(i64::MIN),
        Just(i64::MAX),
        -2_000_000_000i64..2_000_000_000,
        1_700_000_000_000_000_000i64..1_800_000_000_000_000_000,
        any::<i64>(),
    ]
}

fn case() -> impl Strategy<Value = (Vec<String>, Vec<Entry>, bool)> {
    let streams = proptest::collection::vec(text(), 1..5);
    streams.prop_flat_map(|labels| {
        let n = labels.len();
        let entry = (
            0..n,
            timestamp(),
            text(),
            proptest::collection::vec((text(), text()), 0..4),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(stream, timestamp, line, metadata, removed)| Entry {
                stream,
                timestamp,
                line,
                metadata,
                removed,
            });
        (
            Just(labels),
            proptest::collection::vec(entry, 0..30),
            any::<bool>(),
        )
    })
}

fn build(labels: &[String], entries: &[Entry], sort: bool) -> Push {
    let mut push = Push::default();
    let streams: Vec<_> = labels.iter().map(|l| push.stream(l)).collect();
    for entry in entries {
        let stream = streams[entry.stream];
        let index = push.entry(stream, entry.timestamp, entry.line.as_bytes());
        for (name, value) in &entry.metadata {
            push.metadata(index, name, value);
        }
        if entry.removed {
            push.remove(stream, index);
        }
    }
    if sort {
        push.sort_entries();
    }
    push
}

proptest! {
    #[test]
    fn protobuf_is_byte_for_byte_what_prost_writes((labels, entries, sort) in case()) {
        let push = build(&labels, &entries, sort);
        let reference = push.to_message();
        let mut body = Vec::new();
        push.encode_protobuf(&mut body);
        prop_assert_eq!(&body, &reference.encode_to_vec());
        prop_assert_eq!(PushRequest::decode(body.as_slice()).unwrap(), reference);
    }

    #[test]
    fn json_holds_the_same_content((labels, entries, sort) in case()) {
        let push = build(&labels, &entries, sort);
        let reference = push.to_message();
        let mut body = Vec::new();
        push.encode_json(&|stream| vec![("labels".into(), push.labels(stream).to_string())], &mut body);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let streams = value["streams"].as_array().unwrap();
        prop_assert_eq!(streams.len(), reference.streams.len());
        for (json, stream) in streams.iter().zip(&reference.streams) {
            prop_assert_eq!(json["stream"]["labels"].as_str().unwrap(), stream.labels.as_str());
            let values = json["values"].as_array().unwrap();
            prop_assert_eq!(values.len(), stream.entries.len());
            for (json, entry) in values.iter().zip(&stream.entries) {
                let timestamp = entry.timestamp.unwrap();
                let nanos = i128::from(timestamp.seconds) * 1_000_000_000 + i128::from(timestamp.nanos);
                prop_assert_eq!(json[0].as_str().unwrap(), nanos.to_string());
                prop_assert_eq!(json[1].as_str().unwrap(), entry.line.as_str());
                if entry.structured_metadata.is_empty() {
                    prop_assert!(json.get(2).is_none());
                } else {
                    // A JSON object keeps the last of repeated names, as Loki's decoder does.
                    let object = json[2].as_object().unwrap();
                    for pair in &entry.structured_metadata {
                        let last = entry
                            .structured_metadata
                            .iter()
                            .rev()
                            .find(|p| p.name == pair.name)
                            .unwrap();
                        prop_assert_eq!(object[&pair.name].as_str().unwrap(), last.value.as_str());
                    }
                }
            }
        }
    }
}
