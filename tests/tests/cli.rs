//! The command line: `validate`, `print-default-config`, and start-up errors.

use std::process::Command;

use vigil_e2e::{Collector, collector_binary, http};

#[test]
fn validate_lists_every_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpont: 1.2.3.4:1\nprocessors:\n  batch:\n    timeout: soon\nexporters:\n  nop:\nservice:\n  pipelines:\n    traces: {receivers: [otlp], processors: [batch], exporters: [nop]}\n",
    )
    .unwrap();
    let output = Command::new(collector_binary())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = path.display().to_string();
    assert!(stderr.contains(&format!("{file}:5:9: receivers.otlp.protocols.grpc.endpont: unknown field `endpont`, expected one of `endpoint`")), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:8:5: processors.batch.timeout: `soon` is not a duration"
        )),
        "{stderr}"
    );
}

#[test]
fn validate_accepts_the_shipped_configs() {
    for config in [
        "configs/collector.yaml",
        "configs/examples/jaeger-and-archive.yaml",
        "configs/examples/benchmark-nop.yaml",
        "configs/examples/benchmark-mask.yaml",
        "configs/examples/benchmark-bare.yaml",
        "configs/examples/sampling.yaml",
    ] {
        let path = vigil_e2e::workspace_root().join(config);
        let output = Command::new(collector_binary())
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn print_default_config_round_trips_through_validate() {
    let output = Command::new(collector_binary())
        .arg("print-default-config")
        .output()
        .unwrap();
    assert!(output.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.yaml");
    std::fs::write(&path, &output.stdout).unwrap();
    let check = Command::new(collector_binary())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn embedded_default_config_starts_receives_and_drains() {
    let mut collector = Collector::start("");
    assert_eq!(
        http("GET", &collector.health, "/healthz", &[], b"")
            .unwrap()
            .status,
        200
    );
    let response = http(
        "POST",
        &collector.http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &vigil_e2e::otlp::traces(1, 7),
    )
    .unwrap();
    assert_eq!(response.status, 200);
    let metrics = collector.metrics();
    assert!(
        metrics.contains("# TYPE vigil_exporter_sent_items_total counter"),
        "{metrics}"
    );
    assert!(collector.stop().success());
    assert!(
        collector
            .log()
            .contains("debug exporter: traces 7 spans from e2e, first trace "),
        "{}",
        collector.log()
    );
}

#[test]
fn embedded_default_config_serves_received_metrics_for_prometheus_to_scrape() {
    use prost::Message;
    use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
    use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
    use vigil_proto::otlp::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    use vigil_proto::otlp::resource::v1::Resource;

    let mut collector = Collector::start("");
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("cli-test".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.memory.usage".into(),
                    unit: "By".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsInt(4096)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let response = http(
        "POST",
        &collector.http,
        "/v1/metrics",
        &[("Content-Type", "application/x-protobuf")],
        &request.encode_to_vec(),
    )
    .unwrap();
    assert_eq!(response.status, 200);
    let mut scraped = String::new();
    let found = vigil_e2e::eventually(std::time::Duration::from_secs(10), || {
        scraped = http("GET", &collector.prometheus, "/metrics", &[], b"")
            .map(|r| r.text())
            .unwrap_or_default();
        scraped.contains("queue_memory_usage_bytes{job=\"cli-test\"} 4096.0")
    });
    assert!(found, "{scraped}");
    assert!(
        scraped.contains("# TYPE queue_memory_usage_bytes gauge"),
        "{scraped}"
    );
    assert!(collector.stop().success());
}

#[test]
fn port_in_use_is_a_clear_start_up_error() {
    let (port, _listener) = vigil_e2e::reserve_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        format!("receivers:\n  otlp:\n    protocols:\n      http: {{endpoint: '127.0.0.1:{port}'}}\nexporters:\n  nop:\nservice:\n  pipelines:\n    logs: {{receivers: [otlp], exporters: [nop]}}\n  telemetry:\n    metrics: {{address: null}}\n"),
    )
    .unwrap();
    let output = Command::new(collector_binary())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn collector_logs_are_json_lines_when_configured() {
    let template = "receivers:\n  otlp:\n    protocols:\n      http: {endpoint: '{http}'}\nexporters:\n  nop:\nextensions:\n  health_check: {endpoint: '{health}'}\nservice:\n  extensions: [health_check]\n  pipelines:\n    logs: {receivers: [otlp], exporters: [nop]}\n  telemetry:\n    metrics: {address: '{metrics}'}\n    logs: {level: info, encoding: json}\n";
    let mut collector = Collector::start(template);
    assert!(collector.stop().success());
    let log = collector.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l}: {e}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["message"] == "OTLP/HTTP receiver listening")
        .expect("start-up line");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["endpoint"], collector.http);
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "collector stopped; everything accepted was delivered")
    );
}

#[test]
fn validate_takes_the_file_as_an_argument_too_and_speaks_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(
        &path,
        "receivers:\n  otlp:\nprocessors:\n  batch: {send_batch_sise: 100, timeout: soon}\n  batch/2: {send_batch_max_size: lots}\nexporters:\n  nop:\nservice:\n  pipelines:\n    traces: {receivers: [otlp], processors: [batch, batch/2], exporters: [nop]}\n",
    )
    .unwrap();
    let output = Command::new(collector_binary())
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("did you mean `send_batch_size`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid type: string \"lots\", expected a whole number"),
        "{stderr}"
    );
    // Both problems of the first batch processor, in one run.
    assert!(
        stderr.contains("processors.batch.timeout: `soon` is not a duration"),
        "{stderr}"
    );
    let shipped = vigil_e2e::workspace_root().join("configs/collector.yaml");
    let output = Command::new(collector_binary())
        .arg("validate")
        .arg(&shipped)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("collector.yaml: valid"));
}

#[test]
fn the_default_config_prints_every_record_with_vigil_debug_verbosity_detailed() {
    let mut collector = Collector::start_with_env("", &[("VIGIL_DEBUG_VERBOSITY", "detailed")]);
    let response = http(
        "POST",
        &collector.http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &vigil_e2e::otlp::traces(1, 2),
    )
    .unwrap();
    assert_eq!(response.status, 200);
    assert!(collector.stop().success());
    let log = collector.log();
    assert!(log.contains("Span #1"), "{log}");
    assert!(log.contains("    Name           : op-1"), "{log}");
    assert!(
        log.contains("     -> http.route: Str(/v1/predict)"),
        "{log}"
    );
}

/// Every self-metric a collector running every kind of component serves is named in the README.
#[test]
fn the_readme_lists_every_self_metric() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "groups: [{name: g, rules: [{record: calls, expr: 'sum(traces_span_metrics_calls_total)'}]}]\n",
    )
    .unwrap();
    let config = "
receivers:
  otlp:
    protocols:
      grpc: {endpoint: '{grpc}'}
      http: {endpoint: '{http}'}
processors:
  batch: {}
  mask: {}
  memory_limiter: {limit_mib: 4096}
  probabilistic_sampler: {sampling_percentage: 50}
  tail_sampling: {decision_wait: 100ms, policies: [{name: all, type: always_sample}]}
exporters:
  nop:
  prometheus: {endpoint: '{prometheus}'}
  # Nothing listens on port 9: its data waits; only its self-metrics matter here.
  mlflow: {tracking_uri: 'http://127.0.0.1:9'}
connectors:
  spanmetrics: {metrics_flush_interval: 100ms}
  alerting: {rule_files: ['RULES'], evaluation_interval: 100ms}
extensions:
  health_check: {endpoint: '{health}'}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], processors: [memory_limiter, mask, probabilistic_sampler, batch], exporters: [nop, spanmetrics]}
    traces/tail: {receivers: [otlp], processors: [tail_sampling], exporters: [nop]}
    metrics: {receivers: [otlp, spanmetrics], processors: [batch], exporters: [prometheus, alerting]}
    metrics/alerts: {receivers: [alerting], exporters: [nop]}
    logs: {receivers: [otlp], processors: [probabilistic_sampler], exporters: [nop, mlflow]}
  telemetry:
    metrics: {address: '{metrics}'}
"
    .replace("RULES", &rules.display().to_string());
    let mut collector = Collector::start(&config);
    let response = http(
        "POST",
        &collector.http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &vigil_e2e::otlp::traces(1, 3),
    )
    .unwrap();
    assert_eq!(response.status, 200);
    let metrics = collector.metrics();
    assert!(collector.stop().success());
    let readme = std::fs::read_to_string(vigil_e2e::workspace_root().join("README.md")).unwrap();
    let served: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| name.starts_with("vigil_"))
        .collect();
    assert!(served.len() >= 20, "{served:?}");
    let missing: Vec<&&str> = served
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}")))
        .collect();
    assert!(
        missing.is_empty(),
        "self-metrics missing from the README: {missing:?}"
    );
}

/// The README's dependency snippet names the SDK as this workspace does: the package name, the repository, and
/// the SDK's folder for a path dependency.
#[test]
fn the_readme_dependency_snippet_matches_the_workspace() {
    let root = vigil_e2e::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let sdk = std::fs::read_to_string(root.join("sdk/Cargo.toml")).unwrap();
    let repository = workspace
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .unwrap()
        .trim_matches('"');
    assert!(sdk.contains("name = \"vigil\""));
    let snippet = format!("vigil = {{ git = \"{repository}\", package = \"vigil\" }}");
    assert!(readme.contains(&snippet), "README should say: {snippet}");
    assert!(readme.contains("vigil = { path = \"../vigil/sdk\" }"));
    assert!(
        root.join("sdk/Cargo.toml").exists(),
        "the path snippet points at sdk/"
    );
}
