//! Metrics reach a real Prometheus exactly as Prometheus users expect: scraped from the `prometheus` exporter
//! and pushed by the `prometheusremotewrite` exporter, from the OpenTelemetry Python SDK, the `vigil` SDK, and
//! spans through the `spanmetrics` connector. `promtool check metrics` lints the scrape output.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_e2e::{Collector, Prometheus, http, python, workspace_binary, workspace_root};

const WAIT: Duration = Duration::from_secs(60);

/// OTLP in; spans → spanmetrics → metrics; metrics → the exporter under test.
fn config(exporter: &str) -> String {
    let name = exporter.trim().split(':').next().unwrap_or_default();
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: '{{grpc}}'}}
      http: {{endpoint: '{{http}}'}}
connectors:
  spanmetrics:
    metrics_flush_interval: 500ms
processors:
  batch: {{timeout: 100ms}}
exporters:
  nop:
{exporter}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  pipelines:
    traces: {{receivers: [otlp], exporters: [spanmetrics]}}
    metrics: {{receivers: [otlp, spanmetrics], processors: [batch], exporters: [{name}]}}
    logs: {{receivers: [otlp], exporters: [nop]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
"
    )
}

/// Sends the Python SDK's traces and metrics over OTLP/HTTP; returns its run id (a resource attribute) and the
/// trace id of the span its measurements were recorded in.
fn send_from_python(collector: &Collector) -> (String, String) {
    let run_id = format!("prom-{}", std::process::id());
    let manifest = collector.dir.path().join("manifest.json");
    let output = Command::new(python())
        .arg(workspace_root().join("tests/python/send_otlp.py"))
        .arg("http/protobuf")
        .arg(&collector.http)
        .arg(&manifest)
        .arg(&run_id)
        .output()
        .expect("run the Python client");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("manifest"))
            .expect("manifest JSON");
    let trace_id = manifest["trace_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (run_id, trace_id)
}

/// Runs the example training job (the `vigil` SDK) against the collector over gRPC.
fn send_from_vigil_sdk(collector: &Collector) {
    let output = Command::new(workspace_binary("training_job"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("VIGIL_LOG_FILE", collector.dir.path().join("job.jsonl"))
        .env("EPOCHS", "3")
        .output()
        .expect("run training_job");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The series both exporters must produce, asserted through PromQL.
fn assert_series(prometheus: &Prometheus, (run_id, trace_id): &(String, String), extra: &str) {
    // Python: a counter with unit `1` keeps its name plus `_total`; a histogram in `s` gets `_seconds`.
    let labels = prometheus.wait_for(
        &format!("e2e_requests_total{{job=\"python-e2e\",route=\"/train\"{extra}}}"),
        5.0,
        WAIT,
    );
    assert_eq!(labels["otel_scope_name"], "vigil.e2e", "{labels:?}");
    assert_eq!(labels["otel_scope_version"], "1.2.3", "{labels:?}");
    assert!(
        !labels.contains_key("vigil_run_id"),
        "resource attributes stay in target_info by default: {labels:?}"
    );
    prometheus.wait_for(
        &format!("e2e_latency_seconds_count{{job=\"python-e2e\"{extra}}}"),
        2.0,
        WAIT,
    );
    prometheus.wait_for(
        &format!("e2e_latency_seconds_sum{{job=\"python-e2e\"{extra}}}"),
        2.0,
        WAIT,
    );
    prometheus.wait_for(
        &format!("e2e_latency_seconds_bucket{{job=\"python-e2e\",le=\"+Inf\"{extra}}}"),
        2.0,
        WAIT,
    );
    // The Python SDK's default bounds are 0, 5, 10, …: both observations (0.5 s, 1.5 s) are in `le="5"`.
    // Like the Go clients, text 0.0.4 and remote write spell it `5`, OpenMetrics `5.0` (Prometheus 3 normalises
    // both to `5.0`).
    prometheus.wait_for(
        &format!("e2e_latency_seconds_bucket{{job=\"python-e2e\",le=~\"5|5[.]0\"{extra}}}"),
        2.0,
        WAIT,
    );
    prometheus.wait_for(
        &format!("e2e_latency_seconds_bucket{{job=\"python-e2e\",le=~\"0|0[.]0\"{extra}}}"),
        0.0,
        WAIT,
    );
    let info = prometheus.wait_for(
        &format!("target_info{{job=\"python-e2e\",vigil_run_id=\"{run_id}\"{extra}}}"),
        1.0,
        WAIT,
    );
    assert_eq!(info["deployment_environment"], "http/protobuf", "{info:?}");
    assert_eq!(info["telemetry_sdk_language"], "python", "{info:?}");
    // The Python SDK recorded its measurements inside the `train` span: its exemplars lead to that trace.
    let mut seen = Vec::new();
    let linked = vigil_e2e::eventually(WAIT, || {
        seen = prometheus.exemplar_trace_ids(&format!(
            "e2e_latency_seconds_bucket{{job=\"python-e2e\"{extra}}}"
        ));
        seen.iter().any(|t| t == trace_id)
    });
    assert!(linked, "exemplar trace ids {seen:?}, want {trace_id}");
    // The vigil SDK: its own counter and histogram, and the system metrics it collects.
    prometheus.wait_for(
        &format!("training_epochs_total{{job=\"training-job\",experiment_id=\"exp_001\",model=\"lightgbm\"{extra}}}"),
        3.0,
        WAIT,
    );
    prometheus.wait_for(
        &format!("training_epoch_duration_seconds_count{{job=\"training-job\"{extra}}}"),
        3.0,
        WAIT,
    );
    prometheus.wait_for(
        &format!("count(process_memory_usage_bytes{{job=\"training-job\"{extra}}} > 0)"),
        1.0,
        WAIT,
    );
    // RED metrics from the Python spans alone: `epoch` ended with an error, `train` did not.
    prometheus.wait_for(
        &format!(
            "traces_span_metrics_calls_total{{service_name=\"python-e2e\",span_name=\"epoch\",span_kind=\"SPAN_KIND_INTERNAL\",status_code=\"STATUS_CODE_ERROR\"{extra}}}"
        ),
        1.0,
        WAIT,
    );
    // The error ratio an `error_rate` alert computes: one of the two Python spans failed.
    prometheus.wait_for(
        &format!(
            "sum(traces_span_metrics_calls_total{{job=\"python-e2e\",status_code=\"STATUS_CODE_ERROR\"{extra}}}) / sum(traces_span_metrics_calls_total{{job=\"python-e2e\",span_kind!=\"\"{extra}}})"
        ),
        0.5,
        WAIT,
    );
    prometheus.wait_for(
        &format!(
            "traces_span_metrics_duration_seconds_count{{service_name=\"python-e2e\",span_name=\"train\",span_kind=\"SPAN_KIND_SERVER\"{extra}}}"
        ),
        1.0,
        WAIT,
    );
}

#[test]
fn a_real_prometheus_scrapes_what_the_python_and_vigil_sdks_send() {
    let mut collector =
        Collector::start(&config("  prometheus/out:\n    endpoint: '{prometheus}'\n"));
    let prometheus = Prometheus::start(&[&collector.prometheus]);
    let sent = send_from_python(&collector);
    send_from_vigil_sdk(&collector);
    assert_series(&prometheus, &sent, "");
    prometheus.wait_for("up{job=\"vigil\"}", 1.0, WAIT);

    // Prometheus negotiated OpenMetrics; an old scraper gets text 0.0.4, and gzip when it asks.
    let om = http(
        "GET",
        &collector.prometheus,
        "/metrics",
        &[
            (
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            ),
            ("Accept-Encoding", "gzip"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert_eq!(om.header("content-encoding"), Some("gzip"));
    let mut body = String::new();
    flate2::read::GzDecoder::new(om.body.as_slice())
        .read_to_string(&mut body)
        .unwrap();
    assert!(body.contains("# TYPE e2e_requests counter\n"), "{body}");
    assert!(body.ends_with("# EOF\n"));
    let text = http("GET", &collector.prometheus, "/metrics", &[], b"").unwrap();
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_promtool_accepts(&text.text());
    assert!(collector.stop().success(), "{}", collector.log());
}

/// OpenTelemetry semantic-convention UpDownCounters the `vigil` SDK reports. Semantic conventions name them
/// `*.count`, so the compatibility rules give `*_count` gauges, which promtool's naming lint dislikes;
/// Prometheus' own OTLP receiver produces the same names, and dashboards query them, so they are kept.
const SEMCONV_COUNT_GAUGES: [&str; 3] = [
    "process_thread_count",
    "process_unix_file_descriptor_count",
    "system_cpu_logical_count",
];

/// `promtool check metrics` finds nothing but base-unit advice for units a client chose, and the `_count`
/// advice on the semantic-convention gauges above.
fn assert_promtool_accepts(exposition: &str) {
    let promtool = std::env::var("VIGIL_PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{promtool}`: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("use base unit"))
        .filter(|l| {
            !(l.contains("should not have \"_count\" suffix")
                && SEMCONV_COUNT_GAUGES
                    .iter()
                    .any(|name| l.starts_with(&format!("{name} "))))
        })
        .collect();
    assert!(
        output.status.success() || (output.status.code() == Some(3) && problems.is_empty()),
        "promtool check metrics: {report}\n--- exposition ---\n{exposition}"
    );
    assert!(problems.is_empty(), "promtool: {problems:?}");
}

#[test]
fn a_real_prometheus_receives_remote_write_with_the_same_names_and_labels() {
    let prometheus = Prometheus::start(&[]);
    let mut collector = Collector::start(&config(&format!(
        "  prometheusremotewrite/out:\n    endpoint: 'http://{}/api/v1/write'\n    external_labels: {{cluster: e2e}}\n    retry_on_failure: {{initial_interval: 100ms}}\n",
        prometheus.address
    )));
    let sent = send_from_python(&collector);
    send_from_vigil_sdk(&collector);
    assert_series(&prometheus, &sent, ",cluster=\"e2e\"");
    assert!(collector.stop().success(), "{}", collector.log());
    let log = collector.log();
    assert!(!log.contains("remote write failed"), "{log}");
    assert!(
        collector_dropped_nothing(&log),
        "the receiver rejected nothing: {log}"
    );
}

fn collector_dropped_nothing(log: &str) -> bool {
    !log.contains("dropped") && !log.contains("rejected")
}

#[test]
fn the_shipped_red_alert_rules_fire_on_spanmetrics_series() {
    let promtool = std::env::var("VIGIL_PROMTOOL_BIN").unwrap_or_else(|_| "promtool".into());
    let output = Command::new(&promtool)
        .args(["test", "rules", "tests/data/red_rules_test.yml"])
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{promtool}`: {e}"));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new(&promtool)
        .args(["check", "config", "configs/prometheus/prometheus.yml"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    // The config names rule files under /etc/prometheus (the container path): only that lookup may fail.
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        report.contains("valid prometheus config file syntax"),
        "{report}"
    );
}
