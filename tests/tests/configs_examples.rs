//! Every file in `configs/examples/` validates, starts, and does what its header says on a small workload.
//! (`sampling.yaml` has its own test, `example_sampling.rs`; `persistent-queue.yaml` is killed again and again
//! in `persistent_queue.rs`; `stack.yaml`, the local stack's, is run by `stack.rs`.) The files are used as shipped, with only their fixed listen addresses moved to free ports.

use std::time::Duration;

use vigil_e2e::{
    Collector, OTLP_TO_FILE, eventually, file_exporter_lines, http, otlp, spans, workspace_root,
};

/// The shipped file, its addresses moved to the harness's free ports, and a health check added where the file
/// has none (the harness waits on `/readyz`).
fn shipped(name: &str) -> String {
    let mut text = std::fs::read_to_string(workspace_root().join("configs/examples").join(name))
        .unwrap()
        .replace("127.0.0.1:4317", "{grpc}")
        .replace("0.0.0.0:4317", "{grpc}")
        .replace("127.0.0.1:4318", "{http}")
        .replace("0.0.0.0:4318", "{http}")
        .replace("127.0.0.1:8888", "{metrics}")
        .replace("0.0.0.0:8888", "{metrics}")
        .replace("0.0.0.0:9464", "{prometheus}")
        .replace("0.0.0.0:13133", "{health}");
    if !text.contains("health_check") {
        text = text.replace("service:\n", "service:\n  extensions: [health_check]\n");
        text.push_str("extensions:\n  health_check: {endpoint: '{health}'}\n");
    }
    text
}

fn post(collector: &Collector, path: &str, body: &[u8]) {
    let response = http(
        "POST",
        &collector.http,
        path,
        &[("Content-Type", "application/x-protobuf")],
        body,
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

/// "OTLP in, (batch,) discard": everything accepted is counted as sent by `nop`.
fn discards_everything_it_accepts(name: &str) {
    let mut collector = Collector::start(&shipped(name));
    for request in 1..=5 {
        post(&collector, "/v1/traces", &otlp::traces(request, 20));
    }
    assert!(
        eventually(Duration::from_secs(10), || collector
            .metric("vigil_exporter_sent_items_total", &["exporter=\"nop\""])
            == 100.0),
        "{name}: {}",
        collector.metrics()
    );
    assert_eq!(
        collector.stop().code(),
        Some(0),
        "{name}: {}",
        collector.log()
    );
}

#[test]
fn the_benchmark_configs_take_otlp_in_and_discard_it() {
    discards_everything_it_accepts("benchmark-bare.yaml");
    discards_everything_it_accepts("benchmark-nop.yaml");
}

#[test]
fn the_mask_benchmark_config_masks_before_discarding() {
    let mut collector = Collector::start(&shipped("benchmark-mask.yaml"));
    post(&collector, "/v1/traces", &otlp::traces(1, 1));
    let pii = vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![vigil_proto::otlp::trace::v1::ResourceSpans {
            scope_spans: vec![vigil_proto::otlp::trace::v1::ScopeSpans {
                spans: vec![vigil_proto::otlp::trace::v1::Span {
                    trace_id: vec![7; 16],
                    span_id: vec![8; 8],
                    name: "mail bob@example.com".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    post(
        &collector,
        "/v1/traces",
        &prost::Message::encode_to_vec(&pii),
    );
    assert!(eventually(Duration::from_secs(10), || {
        collector.metric("vigil_exporter_sent_items_total", &["exporter=\"nop\""]) == 2.0
            && collector.metric("vigil_mask_replacements_total", &["detector=\"email\""]) == 1.0
    }));
    assert_eq!(collector.stop().code(), Some(0));
}

#[test]
fn jaeger_and_archive_sends_traces_serves_metrics_and_archives_every_signal() {
    let jaeger = Collector::start(OTLP_TO_FILE);
    let archive = tempfile::tempdir().unwrap();
    // RED metrics are flushed every 15 s in the file; the test does not wait that long.
    let config = shipped("jaeger-and-archive.yaml").replace(
        "metrics_flush_interval: 15s",
        "metrics_flush_interval: 200ms",
    );
    let mut collector = Collector::start_with_env(
        &config,
        &[
            ("JAEGER_OTLP_ENDPOINT", jaeger.grpc.as_str()),
            ("VIGIL_ARCHIVE_DIR", archive.path().to_str().unwrap()),
        ],
    );
    post(&collector, "/v1/traces", &otlp::traces(3, 4));
    let logs = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":9,"body":{"stringValue":"archived"}}]}]}]}"#;
    let response = http(
        "POST",
        &collector.http,
        "/v1/logs",
        &[("Content-Type", "application/json")],
        logs,
    )
    .unwrap();
    assert_eq!(response.status, 200);
    // RED metrics from the spans, on the Prometheus endpoint.
    assert!(
        eventually(Duration::from_secs(10), || {
            http("GET", &collector.prometheus, "/metrics", &[], b"")
                .is_ok_and(|r| r.text().contains("traces_span_metrics_calls_total"))
        }),
        "RED metrics are served for Prometheus"
    );
    assert_eq!(collector.stop().code(), Some(0), "{}", collector.log());
    // Traces reached "Jaeger" (any OTLP backend).
    let mut jaeger = jaeger;
    assert_eq!(jaeger.stop().code(), Some(0));
    let sent = spans(&file_exporter_lines(
        &jaeger.dir.path().join("out"),
        "traces",
    ));
    assert_eq!(sent.len(), 4);
    // Every signal is archived.
    assert_eq!(
        spans(&file_exporter_lines(archive.path(), "traces")).len(),
        4
    );
    let archived_logs = file_exporter_lines(archive.path(), "logs");
    assert!(
        archived_logs
            .iter()
            .any(|l| l.to_string().contains("archived"))
    );
    assert!(
        !file_exporter_lines(archive.path(), "metrics").is_empty(),
        "RED metrics archived too"
    );
}
