//! The `loki` exporter against a test Loki that speaks Loki's push contract ([`vigil_e2e::loki`]): the example
//! training job and OTLP clients send logs through a collector with `mask` and `loki`; records arrive once, in
//! order per stream, with low-cardinality labels, trace ids as structured metadata and no PII; Loki's refusals
//! and rate limits are counted, never resent.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_e2e::loki::{FakeLoki, TENANT_RATE_LIMITED};
use vigil_e2e::{Collector, eventually, http, workspace_binary, workspace_root};

const WAIT: Duration = Duration::from_secs(30);

fn config(loki: &FakeLoki, extra: &str) -> String {
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: '{{grpc}}'}}
      http: {{endpoint: '{{http}}'}}
processors:
  mask: {{}}
  batch: {{timeout: 20ms}}
exporters:
  loki:
    endpoint: {url}
    tenant_id: team-a
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 20s}}
{extra}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  pipelines:
    logs: {{receivers: [otlp], processors: [mask, batch], exporters: [loki]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
",
        url = loki.url
    )
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// An OTLP/JSON logs request of `service` with records `(timestamp ns, body)`.
fn logs(service: &str, records: &[(i64, String)]) -> Vec<u8> {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(timestamp, body)| {
            serde_json::json!({
                "timeUnixNano": timestamp.to_string(),
                "severityNumber": 9,
                "severityText": "INFO",
                "body": {"stringValue": body},
                "attributes": [{"key": "component", "value": {"stringValue": "loader"}}],
                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spanId": "00f067aa0ba902b7",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": service}},
            {"key": "service.instance.id", "value": {"stringValue": "c8a1f2e4-1d2b-4f5e-9a7b-0c3d2e1f4a5b"}},
            {"key": "deployment.environment", "value": {"stringValue": "e2e"}},
        ]},
        "scopeLogs": [{"scope": {"name": "e2e"}, "logRecords": records}],
    }]}))
    .unwrap()
}

fn post(collector: &Collector, body: &[u8]) {
    let response = http(
        "POST",
        &collector.http,
        "/v1/logs",
        &[("Content-Type", "application/json")],
        body,
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn training_job_logs_reach_loki_once_in_order_with_labels_metadata_and_no_pii() {
    let loki = FakeLoki::start(256 * 1024);
    let mut collector = Collector::start(&config(&loki, ""));
    let output = Command::new(workspace_binary("training_job"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env("VIGIL_LOG_FILE", collector.dir.path().join("job.jsonl"))
        .env("EPOCHS", "3")
        .env("SIMULATE_CHECKPOINT_FAILURE", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A record with PII, as any OTLP client could send it.
    post(
        &collector,
        &logs(
            "billing",
            &[(
                now_ns(),
                "refund for jane.doe@example.com card 4111 1111 1111 1111".into(),
            )],
        ),
    );
    assert!(
        eventually(WAIT, || loki.entry_count() >= 6),
        "{:?}\n{}",
        loki.streams(),
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());

    let streams = loki.streams();
    let job_streams: Vec<(&String, &Vec<vigil_e2e::loki::Stored>)> = streams
        .iter()
        .filter(|(labels, _)| labels.contains("service_name=\"training-job\""))
        .collect();
    let info = job_streams
        .iter()
        .find(|(labels, _)| labels.contains("level=\"info\""))
        .map(|(_, entries)| *entries)
        .expect("an info stream for the job");
    let lines: Vec<&str> = info.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(
        lines.iter().filter(|l| **l == "Epoch finished").count(),
        3,
        "every record once: {lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| **l == "Training completed").count(),
        1
    );
    assert!(
        info.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
        "in order within the stream"
    );
    // The trace id is metadata, the same for every record of the run, and never a label.
    let trace_ids: Vec<&String> = info
        .iter()
        .filter_map(|e| e.metadata.get("trace_id"))
        .collect();
    assert_eq!(trace_ids.len(), info.len());
    assert!(
        trace_ids
            .iter()
            .all(|t| t.len() == 32 && *t == trace_ids[0])
    );
    assert!(streams.keys().all(|labels| !labels.contains("trace_id")
        && !labels.contains("service_instance_id")
        && !labels.contains("experiment_id")));
    let epoch = info.iter().find(|e| e.line == "Epoch finished").unwrap();
    assert_eq!(
        epoch.metadata.get("experiment_id").map(String::as_str),
        Some("exp_001")
    );
    assert!(epoch.metadata.contains_key("service_instance_id"));
    // CRITICAL is its own level stream.
    assert!(
        job_streams
            .iter()
            .any(|(labels, entries)| labels.contains("level=\"critical\"")
                && entries
                    .iter()
                    .any(|e| e.line == "Checkpoint could not be saved")),
        "{:?}",
        streams.keys().collect::<Vec<_>>()
    );
    // The PII record was masked before Loki saw it.
    let billing = streams
        .iter()
        .find(|(labels, _)| labels.contains("service_name=\"billing\""))
        .map(|(labels, entries)| {
            assert!(
                labels.contains("deployment_environment=\"e2e\""),
                "{labels}"
            );
            entries
        })
        .expect("the billing stream");
    let everything = format!("{streams:?}");
    assert!(!everything.contains("jane.doe@example.com"), "{everything}");
    assert!(!everything.contains("4111 1111 1111 1111"), "{everything}");
    assert!(
        billing[0].line.starts_with("refund for "),
        "{}",
        billing[0].line
    );
    // Every request carried the tenant and snappy protobuf.
    for request in loki.requests() {
        assert_eq!(request.tenant.as_deref(), Some("team-a"));
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/x-protobuf")
        );
    }
}

/// Entries shuffled over the last hour and sent in several requests: Loki refuses none of them.
#[test]
fn a_shuffled_one_hour_backlog_is_accepted_whole() {
    let loki = FakeLoki::start(256 * 1024);
    let mut collector = Collector::start(&config(&loki, ""));
    let now = now_ns();
    let minute = 60_000_000_000i64;
    // 59 minutes, in an order that jumps back and forth, 6 requests of 10.
    let mut order: Vec<i64> = (0..60).map(|i| (i * 37) % 60).collect();
    order.rotate_left(7);
    for (request, chunk) in order.chunks(10).enumerate() {
        let records: Vec<(i64, String)> = chunk
            .iter()
            .map(|m| (now - 59 * minute + m * minute, format!("minute {m}")))
            .collect();
        post(&collector, &logs("backlog", &records));
        // Separate pushes: the exporter must keep later ones acceptable after earlier ones moved the window.
        assert!(
            eventually(WAIT, || loki.entry_count() >= (request + 1) * 10),
            "{:?}",
            loki.requests()
        );
    }
    assert_eq!(loki.entry_count(), 60);
    assert!(
        loki.requests().iter().all(|r| r.status == 204),
        "{:?}",
        loki.requests()
    );
    let metrics = collector.metrics();
    assert!(
        !metrics.contains("vigil_loki_rejected_entries_total{"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vigil_loki_adjusted_entries_total{"),
        "{metrics}"
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
}

/// Entries more than Loki's one-hour window behind their stream (a job replaying an old spool after newer
/// lines went out): Loki would refuse them, so the exporter sends them at the oldest accepted time with their
/// `original_timestamp`, and counts it. Nothing is refused or lost.
#[test]
fn entries_behind_the_window_are_rewritten_instead_of_refused() {
    let loki = FakeLoki::start(256 * 1024);
    let mut collector = Collector::start(&config(&loki, ""));
    let now = now_ns();
    post(&collector, &logs("replay", &[(now, "newest".into())]));
    assert!(
        eventually(WAIT, || loki.entry_count() == 1),
        "{:?}",
        loki.requests()
    );
    let hour = 3_600_000_000_000i64;
    let old: Vec<(i64, String)> = (0..4)
        .map(|i| (now - 2 * hour + i, format!("two hours old {i}")))
        .collect();
    post(&collector, &logs("replay", &old));
    assert!(
        eventually(WAIT, || loki.entry_count() == 5),
        "{:?}",
        loki.requests()
    );
    assert!(
        loki.requests().iter().all(|r| r.status == 204),
        "{:?}",
        loki.requests()
    );
    let streams = loki.streams();
    let entries = streams.values().next().unwrap();
    for (i, entry) in entries
        .iter()
        .filter(|e| e.line.starts_with("two hours old"))
        .enumerate()
    {
        assert_eq!(
            entry.metadata.get("original_timestamp"),
            Some(&(now - 2 * hour + i as i64).to_string()),
            "{entry:?}"
        );
        assert!(entry.timestamp > now - hour, "{entry:?}");
    }
    assert_eq!(
        collector.metric(
            "vigil_loki_adjusted_entries_total",
            &["reason=\"too_far_behind\"", "action=\"rewritten\""]
        ),
        4.0,
        "{}",
        collector.metrics()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
}

/// Loki stores the valid entries of a push and answers 400 for the rest: the rejected ones are counted by
/// Loki's reason, the collector exits 3 (data was lost), and nothing is sent twice.
#[test]
fn a_partial_400_is_counted_exactly_and_never_resent() {
    // This Loki accepts lines of at most 30 bytes; the exporter's own limit is the default 256 KB.
    let loki = FakeLoki::start(30);
    let mut collector = Collector::start(&config(&loki, ""));
    let now = now_ns();
    let records: Vec<(i64, String)> = (0..5)
        .map(|i| {
            let body = if i % 2 == 1 {
                format!("line {i} {}", "x".repeat(40))
            } else {
                format!("line {i}")
            };
            (now + i, body)
        })
        .collect();
    post(&collector, &logs("partial", &records));
    assert!(
        eventually(WAIT, || collector.metric(
            "vigil_loki_rejected_entries_total",
            &["reason=\"line_too_long\""]
        ) == 2.0),
        "{}\n{:?}",
        collector.metrics(),
        loki.requests()
    );
    assert_eq!(loki.entry_count(), 3);
    assert_eq!(loki.requests().len(), 1, "a 400 is never resent");
    assert_eq!(loki.requests()[0].status, 400);
    assert_eq!(collector.stop().code(), Some(3), "{}", collector.log());
    assert!(
        collector.log().contains("Loki refused part of a push"),
        "{}",
        collector.log()
    );
}

/// 429 (Loki's tenant rate limit) then 204: the push is retried and delivered once; the log names the tenant
/// limit.
#[test]
fn rate_limited_then_accepted_delivers_once() {
    let loki = FakeLoki::start(256 * 1024);
    loki.answer_next(429, TENANT_RATE_LIMITED);
    loki.answer_next(429, TENANT_RATE_LIMITED);
    let mut collector = Collector::start(&config(&loki, ""));
    let now = now_ns();
    post(
        &collector,
        &logs(
            "limited",
            &[
                (now, "a".into()),
                (now + 1, "b".into()),
                (now + 2, "c".into()),
            ],
        ),
    );
    assert!(
        eventually(WAIT, || loki.entry_count() == 3),
        "{:?}",
        loki.requests()
    );
    let statuses: Vec<u16> = loki.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 204]);
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
    assert!(
        collector.log().contains("429 rate limited (tenant)"),
        "{}",
        collector.log()
    );
}

/// JSON encoding with gzip and a logfmt line, as Loki's JSON push API takes it.
#[test]
fn json_encoding_and_logfmt_lines() {
    let loki = FakeLoki::start(256 * 1024);
    let mut collector = Collector::start(&config(
        &loki,
        "    encoding: json\n    line_format: logfmt\n    labels: {attributes: [component]}",
    ));
    post(
        &collector,
        &logs("json-client", &[(now_ns(), "loaded 3 files".into())]),
    );
    assert!(
        eventually(WAIT, || loki.entry_count() == 1),
        "{:?}",
        loki.requests()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
    let request = &loki.requests()[0];
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.content_encoding.as_deref(), Some("gzip"));
    let streams = loki.streams();
    let (labels, entries) = streams.iter().next().unwrap();
    assert!(labels.contains("component=\"loader\""), "{labels}");
    assert_eq!(entries[0].line, "msg=\"loaded 3 files\"");
    assert_eq!(
        entries[0].metadata.get("trace_id").map(String::as_str),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
}

/// A config promoting an id to a label fails `validate` with the file, line and the reason.
#[test]
fn promoting_trace_id_to_a_label_fails_validate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("loki.yaml");
    std::fs::write(
        &file,
        "receivers:\n  otlp: {}\nexporters:\n  loki:\n    endpoint: http://127.0.0.1:3100\n    labels:\n      attributes:\n        - component\n        - trace_id\nservice:\n  pipelines:\n    logs: {receivers: [otlp], exporters: [loki]}\n",
    )
    .unwrap();
    let output = Command::new(vigil_e2e::collector_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("loki.yaml:9:"), "{stderr}");
    assert!(
        stderr.contains("`trace_id` cannot be a Loki label"),
        "{stderr}"
    );
}

/// `configs/examples/loki.yaml` validates and, with `VIGIL_LOKI_ENDPOINT` pointing at a Loki, delivers logs
/// while still serving metrics as the default config does.
#[test]
fn the_shipped_loki_example_delivers_logs() {
    let loki = FakeLoki::start(256 * 1024);
    let text = std::fs::read_to_string(workspace_root().join("configs/examples/loki.yaml"))
        .unwrap()
        .replace("0.0.0.0:4317", "{grpc}")
        .replace("0.0.0.0:4318", "{http}")
        .replace("0.0.0.0:9464", "{prometheus}")
        .replace("0.0.0.0:13133", "{health}")
        .replace("127.0.0.1:8888", "{metrics}");
    let mut collector =
        Collector::start_with_env(&text, &[("VIGIL_LOKI_ENDPOINT", loki.url.as_str())]);
    post(
        &collector,
        &logs("example", &[(now_ns(), "hello loki".into())]),
    );
    assert!(
        eventually(WAIT, || loki.entry_count() == 1),
        "{}",
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
}

/// 401 and 404 are configuration problems: not retried, counted as lost (exit status 3), and the log says
/// what to fix.
#[test]
fn unauthorized_and_not_found_say_what_to_fix() {
    let loki = FakeLoki::start(256 * 1024);
    loki.answer_next(401, "no org id");
    let mut collector = Collector::start(&config(&loki, ""));
    post(&collector, &logs("auth", &[(now_ns(), "a".into())]));
    assert!(
        eventually(WAIT, || collector.log().contains("401 Unauthorized")),
        "{}",
        collector.log()
    );
    assert_eq!(loki.requests().len(), 1, "a 401 is not retried");
    // /readyz tells the orchestrator (and whoever looks) what is wrong, until a push succeeds again.
    let ready = http("GET", &collector.health, "/readyz", &[], b"").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["status"], "failing", "{body}");
    let problem = body["problems"]["exporter/loki"].as_str().unwrap_or("");
    assert!(problem.contains("401 Unauthorized"), "{body}");
    post(&collector, &logs("auth", &[(now_ns(), "b".into())]));
    assert!(
        eventually(WAIT, || loki.entry_count() == 1),
        "{}",
        collector.log()
    );
    assert!(
        eventually(WAIT, || http("GET", &collector.health, "/readyz", &[], b"")
            .is_ok_and(|r| r.status == 200)),
        "{}",
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(3), "{}", collector.log());
    assert!(
        collector.log().contains("auth.bearer_token"),
        "{}",
        collector.log()
    );

    // An endpoint with a path that is not Loki's: the test Loki answers 404 as Loki's router does.
    let wrong = FakeLoki::start(256 * 1024);
    let text = config(&wrong, "").replace(&wrong.url, &format!("{}/grafana", wrong.url));
    let mut collector = Collector::start(&text);
    post(&collector, &logs("path", &[(now_ns(), "a".into())]));
    assert!(
        eventually(WAIT, || collector.log().contains("404 Not Found")),
        "{}",
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(3), "{}", collector.log());
    assert!(
        collector.log().contains("should be Loki's base URL"),
        "{}",
        collector.log()
    );
    assert_eq!(wrong.entry_count(), 0);
}

/// The OpenTelemetry Python SDK logs inside spans through `mask` and `loki`: every record arrives once, in order
/// per stream, labelled by service, environment and level, with its span's trace id as structured metadata and
/// without the e-mail address it carried.
#[test]
fn python_sdk_logs_reach_loki_once_in_order_with_their_trace_ids_and_no_pii() {
    const RECORDS: usize = 200;
    let loki = FakeLoki::start(256 * 1024);
    let text = config(&loki, "  nop: {}").replace(
        "    logs: {receivers",
        "    traces: {receivers: [otlp], exporters: [nop]}\n    logs: {receivers",
    );
    let mut collector = Collector::start(&text);
    let output = Command::new(vigil_e2e::python())
        .arg(workspace_root().join("tests/python/send_logs_to_loki.py"))
        .arg(&collector.grpc)
        .arg(RECORDS.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        collector.log()
    );
    let trace_ids: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        eventually(WAIT, || loki.entry_count() >= RECORDS),
        "{} of {RECORDS}: {}",
        loki.entry_count(),
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());

    let streams = loki.streams();
    let labels: Vec<&String> = streams.keys().collect();
    assert_eq!(
        labels,
        [
            "{deployment_environment=\"e2e\", level=\"error\", service_name=\"python-loki\"}",
            "{deployment_environment=\"e2e\", level=\"info\", service_name=\"python-loki\"}",
        ]
    );
    let mut seen = vec![0; RECORDS];
    for entries in streams.values() {
        assert!(
            entries.windows(2).all(|w| w[0].timestamp <= w[1].timestamp),
            "out of order"
        );
        for entry in entries {
            let seq: usize = entry.metadata["seq"].parse().unwrap();
            seen[seq] += 1;
            assert_eq!(entry.line, format!("record {seq} for [REDACTED:email]"));
            assert_eq!(
                entry.metadata.get("trace_id").map(String::as_str),
                trace_ids[seq.to_string()].as_str(),
                "record {seq}"
            );
            assert!(
                !format!("{:?}", entry.metadata).contains("example.com"),
                "{entry:?}"
            );
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "each record once: {seen:?}");
}

/// `encoding: otlp` sends the same streams to Loki 3's `/otlp/v1/logs`: with Loki's default OTLP settings the
/// labels are the service and environment, while `service.instance.id` (which Loki would index if it came as a
/// resource attribute) and `level` arrive as structured metadata; the log says how to make `level` a label.
#[test]
fn otlp_encoding_keeps_the_label_decisions_on_lokis_otlp_endpoint() {
    let loki = FakeLoki::start(256 * 1024);
    let mut collector = Collector::start(&config(&loki, "    encoding: otlp"));
    post(
        &collector,
        &logs("otlp-client", &[(now_ns(), "through otlp".into())]),
    );
    assert!(
        eventually(WAIT, || loki.entry_count() == 1),
        "{:?}\n{}",
        loki.requests(),
        collector.log()
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
    let request = &loki.requests()[0];
    assert_eq!(request.path, "/otlp/v1/logs");
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(request.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(request.tenant.as_deref(), Some("team-a"));
    let streams = loki.streams();
    let (labels, entries) = streams.iter().next().unwrap();
    assert_eq!(
        labels,
        "{deployment_environment=\"e2e\", service_name=\"otlp-client\"}"
    );
    let entry = &entries[0];
    assert_eq!(entry.line, "through otlp");
    for (key, value) in [
        ("level", "info"),
        (
            "service_instance_id",
            "c8a1f2e4-1d2b-4f5e-9a7b-0c3d2e1f4a5b",
        ),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("span_id", "00f067aa0ba902b7"),
        ("severity_text", "INFO"),
        ("component", "loader"),
        ("scope_name", "e2e"),
    ] {
        assert_eq!(
            entry.metadata.get(key).map(String::as_str),
            Some(value),
            "{key}: {:?}",
            entry.metadata
        );
    }
    assert!(
        collector.log().contains("index_label"),
        "{}",
        collector.log()
    );
}
