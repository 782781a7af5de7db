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

#[test]
fn at_most_fifteen_label_names_besides_service_name() {
    let mut config = LokiExporterConfig::default();
    config.labels.resource = vec!["team".into()];
    let mut resource: Vec<KeyValue> = super::DEFAULT_RESOURCE_LABELS
        .iter()
        .map(|k| text(k, "x"))
        .collect();
    resource.push(text("team", "ml"));
    let (pushes, adjustments) = pushes(
        &config,
        &mut StreamState::default(),
        &[request(resource, vec![record(NOW, "line", vec![])])],
    );
    let stream = &pushes[0].streams[0];
    let names = stream.labels.matches("=\"").count();
    assert_eq!(names, 16, "15 and service_name: {}", stream.labels);
    assert!(stream.labels.contains("service_name=") && stream.labels.contains("level="));
    let entry = &stream.entries[0];
    // The optional label goes first, then the last default names.
    assert_eq!(metadata(entry, "team").unwrap(), "ml");
    let moved: u64 = adjustments.label_overflow.values().sum();
    assert_eq!(moved, 2, "{:?}", adjustments.label_overflow);
}

#[test]
fn optional_resource_labels_are_capped_too() {
    let mut config = LokiExporterConfig::default();
    config.labels.resource = vec!["k8s.node.name".into()];
    config.labels.max_values_per_label = 1;
    let node = |name: &str| {
        request(
            vec![text("k8s.node.name", name)],
            vec![record(NOW, "l", vec![])],
        )
    };
    let (pushes, adjustments) = pushes(
        &config,
        &mut StreamState::default(),
        &[node("a"), node("b"), node("b")],
    );
    let labels: Vec<&str> = pushes[0]
        .streams
        .iter()
        .map(|s| s.labels.as_str())
        .collect();
    assert!(
        labels
            .contains(&"{k8s_node_name=\"a\", level=\"error\", service_name=\"unknown_service\"}"),
        "{labels:?}"
    );
    assert_eq!(adjustments.label_overflow["k8s_node_name"], 2);
}

#[test]
fn timestamps_fall_back_to_observed_time_then_now() {
    let mut observed = record(0, "observed", vec![]);
    observed.observed_time_unix_nano = (NOW - 5) as u64;
    let neither = record(0, "neither", vec![]);
    let (pushes, _) = pushes(
        &LokiExporterConfig::default(),
        &mut StreamState::default(),
        &[request(vec![], vec![observed, neither])],
    );
    let times: Vec<(String, i64)> = pushes[0].streams[0]
        .entries
        .iter()
        .map(|e| {
            let t = e.timestamp.unwrap();
            (
                e.line.clone(),
                t.seconds * 1_000_000_000 + i64::from(t.nanos),
            )
        })
        .collect();
    assert_eq!(
        times,
        [
            ("observed".to_string(), NOW - 5),
            ("neither".to_string(), NOW)
        ]
    );
}

#[test]
fn metadata_is_left_out_when_there_is_nothing_to_say() {
    let mut bare = record(NOW, "bare", vec![]);
    bare.trace_id.clear();
    bare.span_id.clear();
    let mut full = record(NOW, "full", vec![]);
    full.severity_text = "ERROR".into();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![
                ScopeLogs {
                    log_records: vec![bare],
                    ..Default::default()
                },
                ScopeLogs {
                    scope: Some(vigil_proto::otlp::common::v1::InstrumentationScope {
                        name: "lib".into(),
                        ..Default::default()
                    }),
                    log_records: vec![full],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    };
    let (pushes, _) = pushes(
        &LokiExporterConfig::default(),
        &mut StreamState::default(),
        &[request],
    );
    let entries = &pushes[0].streams[0].entries;
    assert!(
        entries[0].structured_metadata.is_empty(),
        "{:?}",
        entries[0]
    );
    let names: Vec<&str> = entries[1]
        .structured_metadata
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["trace_id", "span_id", "severity_text", "scope_name"]
    );
}

#[test]
fn the_window_edges_are_accepted_as_loki_accepts_them() {
    let config = LokiExporterConfig::default();
    let mut state = StreamState::default();
    let service = || vec![text("service.name", "api")];
    pushes(
        &config,
        &mut state,
        &[request(service(), vec![record(NOW, "new", vec![])])],
    );
    let week = 7 * 24 * HOUR;
    let (_, adjustments) = pushes(
        &config,
        &mut state,
        &[
            request(
                service(),
                vec![record(NOW - HOUR, "exactly the window", vec![])],
            ),
            request(
                vec![text("service.name", "other")],
                vec![record(NOW - week, "exactly the age", vec![])],
            ),
            request(
                service(),
                vec![record(NOW + 600_000_000_000, "exactly the grace", vec![])],
            ),
        ],
    );
    assert_eq!(adjustments, super::Adjustments::default());
    // Rewritten too-old entries land a minute inside the age limit.
    let (old, _) = pushes(
        &config,
        &mut StreamState::default(),
        &[request(
            service(),
            vec![record(NOW - 2 * week, "ancient", vec![])],
        )],
    );
    let t = old[0].streams[0].entries[0].timestamp.unwrap();
    assert_eq!(
        t.seconds * 1_000_000_000 + i64::from(t.nanos),
        NOW - week + 60_000_000_000
    );
}

#[test]
fn a_push_whose_entries_were_all_dropped_is_not_sent() {
    let config = LokiExporterConfig {
        old_entries: OldEntryAction::Drop,
        ..LokiExporterConfig::default()
    };
    let (pushes, adjustments) = pushes(
        &config,
        &mut StreamState::default(),
        &[request(
            vec![],
            vec![record(NOW - 30 * 24 * HOUR, "ancient", vec![])],
        )],
    );
    assert!(pushes.is_empty());
    assert_eq!(adjustments.dropped(), 1);
}

#[test]
fn lines_at_the_limit_stay_whole_and_cuts_back_off_to_a_character() {
    for (max, body, expected) in [
        (10, "0123456789", "0123456789"),
        (9, "ééééééé", "éééé"),
        (1, "é", ""),
    ] {
        let config = LokiExporterConfig {
            max_line_size: max,
            ..LokiExporterConfig::default()
        };
        let (pushes, _) = pushes(
            &config,
            &mut StreamState::default(),
            &[request(vec![], vec![record(NOW, body, vec![])])],
        );
        let entry = &pushes[0].streams[0].entries[0];
        assert_eq!(entry.line, expected, "max {max}");
        assert_eq!(
            metadata(entry, "truncated_from_bytes").is_some(),
            body != expected
        );
    }
}

#[test]
fn attribute_values_as_text() {
    use super::translate::any_text;
    let bytes = |b: &[u8]| AnyValue {
        value: Some(any_value::Value::BytesValue(b.to_vec())),
    };
    // RFC 4648 test vectors.
    for (input, expected) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foobar", "Zm9vYmFy"),
        (&[0xff, 0xfe, 0x00][..], "//4A"),
    ] {
        assert_eq!(any_text(&bytes(input)), expected);
    }
}

#[test]
fn logfmt_quotes_only_what_needs_it() {
    let config = LokiExporterConfig {
        line_format: super::LineFormat::Logfmt,
        ..LokiExporterConfig::default()
    };
    let attributes = vec![
        text("plain", "ok"),
        text("space", "a b"),
        text("equals", "a=b"),
        text("quote", "a\"b"),
        text("control", "a\tb"),
        text("empty", ""),
    ];
    let (pushes, _) = pushes(
        &config,
        &mut StreamState::default(),
        &[request(vec![], vec![record(NOW, "done", attributes)])],
    );
    assert_eq!(
        pushes[0].streams[0].entries[0].line,
        r#"msg=done plain=ok space="a b" equals="a=b" quote="a\"b" control="a\tb" empty="""#
    );
}

/// `encoding: otlp`: one resource per stream, its attributes the stream's labels under their attribute names,
/// ids back in the record's own fields, every other value a log attribute.
#[test]
fn otlp_requests_carry_the_streams_as_resources() {
    let config = LokiExporterConfig {
        labels: super::LabelsConfig {
            attributes: vec!["component".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let translator = Translator::new(&config);
    let mut info = record(NOW - 2, "second", vec![text("component", "db")]);
    info.severity_number = 9;
    info.severity_text = "INFO".into();
    let mut error = record(NOW - 1, "boom", vec![text("component", "db")]);
    error.span_id = vec![1, 2, 3];
    error.trace_id = vec![7; 8];
    let mut early = record(NOW - 3, "first", vec![text("component", "db")]);
    early.severity_number = 9;
    let (pushes, _) = translator.translate(
        &[request(
            vec![text("service.name", "api"), text("k8s.pod.name", "api-7f9")],
            vec![info, error, early],
        )],
        &mut StreamState::default(),
        NOW,
    );
    let otlp = super::otlp::to_request(&pushes[0], &translator);
    let mut resources: Vec<_> = otlp
        .resource_logs
        .iter()
        .map(|r| {
            let attributes: Vec<(String, String)> = r
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        super::translate::any_text(kv.value.as_ref().unwrap()),
                    )
                })
                .collect();
            (attributes, &r.scope_logs[0].log_records)
        })
        .collect();
    resources.sort_by(|a, b| a.0.cmp(&b.0));
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        resources[0].0,
        pairs(&[
            ("component", "db"),
            ("level", "error"),
            ("service.name", "api")
        ])
    );
    assert_eq!(
        resources[1].0,
        pairs(&[
            ("component", "db"),
            ("level", "info"),
            ("service.name", "api")
        ])
    );
    let infos = resources[1].1;
    let bodies: Vec<String> = infos
        .iter()
        .map(|r| super::translate::any_text(r.body.as_ref().unwrap()))
        .collect();
    assert_eq!(
        bodies,
        ["first", "second"].map(String::from),
        "sorted by time"
    );
    let second = &infos[1];
    assert_eq!(second.time_unix_nano, (NOW - 2) as u64);
    assert_eq!(second.trace_id, vec![0xab; 16]);
    assert_eq!(second.span_id, vec![0xcd; 8]);
    assert_eq!(second.severity_text, "INFO");
    let attributes: Vec<&str> = second.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert!(attributes.contains(&"k8s_pod_name"), "{attributes:?}");
    assert!(!attributes.contains(&"trace_id"), "{attributes:?}");
    // A span id that is not 8 bytes is not an id Loki can take back: it stays an attribute.
    let boom = &resources[0].1[0];
    assert!(boom.span_id.is_empty());
    assert!(boom.attributes.iter().any(|kv| kv.key == "span_id"));
    assert!(
        boom.trace_id.is_empty(),
        "an 8-byte trace id is not a trace id"
    );
    assert!(boom.attributes.iter().any(|kv| kv.key == "trace_id"));
}

#[test]
fn label_names_are_the_defaults_level_and_the_chosen_attributes() {
    let mut config = LokiExporterConfig::default();
    let names = config.label_names();
    assert!(names.contains("service_name") && names.contains("level"));
    assert!(names.contains("deployment_environment") && names.contains("k8s_namespace_name"));
    assert!(!names.contains("service_instance_id"));
    config.default_labels = false;
    config.labels.level = false;
    config.labels.resource = vec!["k8s.node.name".into()];
    config.labels.attributes = vec!["http.route".into()];
    assert_eq!(
        config.label_names().into_iter().collect::<Vec<_>>(),
        ["http_route", "k8s_node_name", "service_name"]
    );
}

#[test]
fn empty_credentials_and_headers_are_left_out() {
    let config: LokiExporterConfig = serde_json::from_value(serde_json::json!({
        "endpoint": "http://loki:3100",
        "auth": {"username": "", "password": "", "bearer_token": ""},
        "headers": {"x-scope-orgid": "a", "authorization": ""}
    }))
    .unwrap();
    assert_eq!(config.auth, super::LokiAuth::default());
    let pairs = crate::exporter::header_pairs(&config.headers);
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].0, "x-scope-orgid");
    let config: LokiExporterConfig = serde_json::from_value(serde_json::json!({
        "endpoint": "http://loki:3100",
        "auth": {"username": "123", "password": "token"}
    }))
    .unwrap();
    assert_eq!(config.auth.username.as_deref(), Some("123"));
    assert_eq!(config.auth.password.as_deref(), Some("token"));
}
