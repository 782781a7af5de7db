use prost::Message;
use vigil_proto::loki::PushRequest;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vigil_proto::otlp::resource::v1::Resource;

use super::translate::{StreamState, Translator};
use super::{LokiExporterConfig, OldEntryAction, TooLongAction};

const HOUR: i64 = 3_600_000_000_000;
const NOW: i64 = 1_800_000_000_000_000_000;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn record(timestamp: i64, body: &str, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: timestamp as u64,
        severity_number: 17,
        severity_text: String::new(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        attributes,
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Translates and decodes every push with the upstream messages.
fn pushes(
    config: &LokiExporterConfig,
    state: &mut StreamState,
    requests: &[ExportLogsServiceRequest],
) -> (Vec<PushRequest>, super::Adjustments) {
    let (pushes, adjustments) = Translator::new(config).translate(requests, state, NOW);
    let decoded = pushes
        .iter()
        .map(|p| {
            let mut body = Vec::new();
            p.push.encode_protobuf(&mut body);
            PushRequest::decode(body.as_slice()).unwrap()
        })
        .collect();
    (decoded, adjustments)
}

fn metadata(entry: &vigil_proto::loki::EntryAdapter, name: &str) -> Option<String> {
    entry
        .structured_metadata
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.clone())
}

#[test]
fn default_labels_are_few_and_everything_else_is_metadata() {
    let config = LokiExporterConfig::default();
    let (pushes, adjustments) = pushes(
        &config,
        &mut StreamState::default(),
        &[request(
            vec![
                text("service.name", "api"),
                text("deployment.environment", "prod"),
                text("service.instance.id", "uuid-1"),
                text("host.name", "node-7"),
            ],
            vec![
                record(NOW - 2, "second", vec![text("http.route", "/users")]),
                record(NOW - 5, "first", vec![text("request_id", "r-1")]),
            ],
        )],
    );
    assert_eq!(adjustments, super::Adjustments::default());
    assert_eq!(pushes.len(), 1);
    let stream = &pushes[0].streams[0];
    assert_eq!(
        stream.labels,
        "{deployment_environment=\"prod\", level=\"error\", service_name=\"api\"}"
    );
    let lines: Vec<&str> = stream.entries.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(lines, ["first", "second"], "sorted by time");
    let first = &stream.entries[0];
    assert_eq!(metadata(first, "trace_id").unwrap(), "ab".repeat(16));
    assert_eq!(metadata(first, "span_id").unwrap(), "cd".repeat(8));
    assert_eq!(metadata(first, "request_id").unwrap(), "r-1");
    assert_eq!(metadata(first, "service_instance_id").unwrap(), "uuid-1");
    assert_eq!(metadata(first, "host_name").unwrap(), "node-7");
    assert_eq!(
        metadata(&stream.entries[1], "http_route").unwrap(),
        "/users"
    );
}

#[test]
fn a_missing_service_name_is_unknown_service_as_in_loki() {
    let (pushes, _) = pushes(
        &LokiExporterConfig::default(),
        &mut StreamState::default(),
        &[request(vec![], vec![record(NOW, "x", vec![])])],
    );
    assert_eq!(
        pushes[0].streams[0].labels,
        "{level=\"error\", service_name=\"unknown_service\"}"
    );
}

#[test]
fn entries_behind_the_window_are_rewritten_or_dropped_and_counted() {
    for action in [OldEntryAction::Rewrite, OldEntryAction::Drop] {
        let config = LokiExporterConfig {
            old_entries: action,
            ..LokiExporterConfig::default()
        };
        let mut state = StreamState::default();
        let service = || vec![text("service.name", "api")];
        // The first push makes NOW the stream's newest entry.
        pushes(
            &config,
            &mut state,
            &[request(service(), vec![record(NOW, "new", vec![])])],
        );
        let (second, adjustments) = pushes(
            &config,
            &mut state,
            &[request(
                service(),
                vec![
                    record(NOW - 2 * HOUR, "two hours behind", vec![]),
                    record(NOW - HOUR / 2, "within the window", vec![]),
                    record(NOW - 8 * 24 * HOUR, "too old", vec![]),
                    record(NOW + HOUR, "from the future", vec![]),
                ],
            )],
        );
        let entries = &second[0].streams[0].entries;
        let counted: Vec<(&str, &str, u64)> = adjustments
            .entries
            .iter()
            .map(|((reason, action), n)| (*reason, *action, *n))
            .collect();
        match action {
            OldEntryAction::Drop => {
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].line, "within the window");
                assert_eq!(
                    counted,
                    [
                        ("too_far_behind", "dropped", 1),
                        ("too_new", "dropped", 1),
                        ("too_old", "dropped", 1)
                    ]
                );
                assert_eq!(adjustments.dropped(), 3);
            }
            OldEntryAction::Rewrite => {
                assert_eq!(entries.len(), 4);
                let behind = entries
                    .iter()
                    .find(|e| e.line == "two hours behind")
                    .unwrap();
                let stamp = behind.timestamp.unwrap();
                let rewritten = stamp.seconds * 1_000_000_000 + i64::from(stamp.nanos);
                assert!((NOW - HOUR..NOW).contains(&rewritten), "{rewritten}");
                assert_eq!(
                    metadata(behind, "original_timestamp").unwrap(),
                    (NOW - 2 * HOUR).to_string()
                );
                assert_eq!(
                    counted,
                    [
                        ("too_far_behind", "rewritten", 1),
                        ("too_new", "rewritten", 1),
                        ("too_old", "rewritten", 1)
                    ]
                );
                assert_eq!(adjustments.dropped(), 0);
                // Still in time order after the rewrite.
                let times: Vec<i64> = entries
                    .iter()
                    .map(|e| {
                        e.timestamp.unwrap().seconds * 1_000_000_000
                            + i64::from(e.timestamp.unwrap().nanos)
                    })
                    .collect();
                assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
            }
        }
    }
}

#[test]
fn long_lines_are_truncated_on_a_character_boundary_or_dropped() {
    for action in [TooLongAction::Truncate, TooLongAction::Drop] {
        let config = LokiExporterConfig {
            max_line_size: 10,
            line_too_long: action,
            ..LokiExporterConfig::default()
        };
        let (pushes, adjustments) = pushes(
            &config,
            &mut StreamState::default(),
            &[request(
                vec![],
                vec![record(NOW, "ééééééé", vec![]), record(NOW, "short", vec![])],
            )],
        );
        let entries = &pushes[0].streams[0].entries;
        match action {
            TooLongAction::Truncate => {
                assert_eq!(entries[0].line, "ééééé");
                assert_eq!(metadata(&entries[0], "truncated_from_bytes").unwrap(), "14");
                assert_eq!(adjustments.entries[&("line_too_long", "truncated")], 1);
            }
            TooLongAction::Drop => {
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].line, "short");
                assert_eq!(adjustments.dropped(), 1);
            }
        }
    }
}

#[test]
fn label_caps_move_values_to_metadata_and_the_entry_still_goes_out() {
    let mut config = LokiExporterConfig::default();
    config.labels.attributes = vec!["component".into()];
    config.labels.max_values_per_label = 2;
    let records = ["a", "b", "c", "a"]
        .iter()
        .map(|c| record(NOW, c, vec![text("component", c)]))
        .collect();
    let (pushes, adjustments) = pushes(
        &config,
        &mut StreamState::default(),
        &[request(vec![text("service.name", "api")], records)],
    );
    let mut streams: Vec<(String, Vec<String>)> = pushes[0]
        .streams
        .iter()
        .map(|s| {
            (
                s.labels.clone(),
                s.entries.iter().map(|e| e.line.clone()).collect(),
            )
        })
        .collect();
    streams.sort();
    assert_eq!(
        streams,
        [
            (
                "{component=\"a\", level=\"error\", service_name=\"api\"}".to_string(),
                vec!["a".to_string(), "a".to_string()]
            ),
            (
                "{component=\"b\", level=\"error\", service_name=\"api\"}".to_string(),
                vec!["b".to_string()]
            ),
            (
                "{level=\"error\", service_name=\"api\"}".to_string(),
                vec!["c".to_string()]
            ),
        ]
    );
    let overflowed = pushes[0]
        .streams
        .iter()
        .flat_map(|s| &s.entries)
        .find(|e| e.line == "c")
        .unwrap();
    assert_eq!(metadata(overflowed, "component").unwrap(), "c");
    assert_eq!(adjustments.label_overflow["component"], 1);
}

#[test]
fn max_streams_sends_new_streams_with_the_default_labels_only() {
    let mut config = LokiExporterConfig::default();
    config.labels.attributes = vec!["component".into()];
    config.max_streams = 2;
    let records = ["a", "b", "c"]
        .iter()
        .map(|c| record(NOW, c, vec![text("component", c)]))
        .collect();
    let mut state = StreamState::default();
    let (pushes, adjustments) = pushes(
        &config,
        &mut state,
        &[request(vec![text("service.name", "api")], records)],
    );
    assert_eq!(pushes[0].streams.len(), 3, "a, b and the default stream");
    assert!(
        pushes[0]
            .streams
            .iter()
            .any(|s| s.labels == "{level=\"error\", service_name=\"api\"}")
    );
    assert_eq!(adjustments.label_overflow["component"], 1);
    assert_eq!(state.cardinality.stream_count(), 3);
}

#[test]
fn pushes_are_split_by_entries_and_by_tenant() {
    let config = LokiExporterConfig {
        max_batch_entries: 2,
        tenant_id: Some("default".into()),
        tenant_id_attribute: Some("tenant".into()),
        ..LokiExporterConfig::default()
    };
    let records = |n: usize| {
        (0..n)
            .map(|i| record(NOW + i as i64, "x", vec![]))
            .collect()
    };
    let (pushes, _) = Translator::new(&config).translate(
        &[
            request(vec![text("tenant", "team-a")], records(3)),
            request(vec![], records(1)),
        ],
        &mut StreamState::default(),
        NOW,
    );
    let mut shape: Vec<(Option<String>, usize)> = pushes
        .iter()
        .map(|p| (p.tenant.clone(), p.push.entry_count()))
        .collect();
    shape.sort();
    assert_eq!(
        shape,
        [
            (Some("default".into()), 1),
            (Some("team-a".into()), 1),
            (Some("team-a".into()), 2)
        ]
    );
}

#[test]
fn line_formats() {
    for (format, expected) in [
        (super::LineFormat::Raw, "disk full"),
        (
            super::LineFormat::Json,
            r#"{"body":"disk full","path":"/data x"}"#,
        ),
        (
            super::LineFormat::Logfmt,
            r#"msg="disk full" path="/data x""#,
        ),
    ] {
        let config = LokiExporterConfig {
            line_format: format,
            ..LokiExporterConfig::default()
        };
        let (pushes, _) = pushes(
            &config,
            &mut StreamState::default(),
            &[request(
                vec![],
                vec![record(NOW, "disk full", vec![text("path", "/data x")])],
            )],
        );
        let entry = &pushes[0].streams[0].entries[0];
        assert_eq!(entry.line, expected);
        // Attributes are in the line or in the metadata, not both.
        assert_eq!(
            metadata(entry, "path").is_some(),
            format == super::LineFormat::Raw
        );
    }
}

#[test]
fn streams_idle_for_two_windows_are_forgotten() {
    let config = LokiExporterConfig::default();
    let mut state = StreamState::default();
    let service = || vec![text("service.name", "api")];
    // The stream's newest entry is 3 hours old: Loki has flushed it.
    pushes(
        &config,
        &mut state,
        &[request(
            service(),
            vec![record(NOW - 3 * HOUR, "old", vec![])],
        )],
    );
    // An entry older than that newest minus the window is then accepted as it is.
    let (second, adjustments) = pushes(
        &config,
        &mut state,
        &[request(
            service(),
            vec![record(NOW - 5 * HOUR, "older", vec![])],
        )],
    );
    assert_eq!(adjustments, super::Adjustments::default());
    let stamp = second[0].streams[0].entries[0].timestamp.unwrap();
    assert_eq!(
        stamp.seconds * 1_000_000_000 + i64::from(stamp.nanos),
        NOW - 5 * HOUR
    );
    // A stream seen within the window is remembered.
    pushes(
        &config,
        &mut state,
        &[request(
            service(),
            vec![record(NOW - HOUR, "recent", vec![])],
        )],
    );
    let (_, adjustments) = pushes(
        &config,
        &mut state,
        &[request(
            service(),
            vec![record(NOW - 3 * HOUR, "behind", vec![])],
        )],
    );
    assert_eq!(adjustments.entries[&("too_far_behind", "rewritten")], 1);
}
