//! The OpenTelemetry Python SDK sends traces, metrics and logs over gRPC, HTTP/protobuf and HTTP/JSON; the
//! `file` exporter's output is checked field by field against what was sent.

use std::process::Command;

use serde_json::Value;
use vigil_e2e::{Collector, file_exporter_lines, python, spans, test_certs, workspace_root};

const CONFIG: &str = "
receivers:
  otlp:
    protocols:
      grpc: {endpoint: '{grpc}'}
      http: {endpoint: '{http}'}
processors:
  batch: {timeout: 50ms}
exporters:
  file: {path: '{dir}/out'}
extensions:
  health_check: {endpoint: '{health}'}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [file]}
    metrics: {receivers: [otlp], processors: [batch], exporters: [file]}
    logs: {receivers: [otlp], processors: [batch], exporters: [file]}
  telemetry:
    metrics: {address: '{metrics}'}
";

fn attribute<'a>(attributes: &'a Value, key: &str) -> &'a Value {
    attributes
        .as_array()
        .and_then(|a| a.iter().find(|kv| kv["key"] == key))
        .map(|kv| &kv["value"])
        .unwrap_or_else(|| panic!("attribute `{key}` missing in {attributes}"))
}

fn send_and_check(protocol: &str) {
    send_and_check_with(protocol, CONFIG, None);
}

fn send_and_check_with(protocol: &str, config: &str, ca_file: Option<&std::path::Path>) {
    let mut collector = Collector::start(config);
    let endpoint = if protocol == "grpc" {
        collector.grpc.clone()
    } else {
        collector.http.clone()
    };
    let manifest_path = collector.dir.path().join("manifest.json");
    let script = workspace_root().join("tests/python/send_otlp.py");
    let mut command = Command::new(python());
    if let Some(ca) = ca_file {
        // `requests` lets these variables override a session's CA file (psf/requests#3829).
        command
            .env("VIGIL_CA_FILE", ca)
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE");
    }
    let output = command
        .arg(&script)
        .args([protocol, &endpoint])
        .arg(&manifest_path)
        .arg(format!("run-{protocol}"))
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python client failed over {protocol}: {}\ncollector log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        collector.log()
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let status = collector.stop();
    assert!(
        status.success(),
        "collector exit {status}: {}",
        collector.log()
    );
    let out = collector.dir.path().join("out");

    // Traces: ids in lower-case hex, typed attributes, kind/status/event, resource and scope.
    let trace_requests = file_exporter_lines(&out, "traces");
    let all_spans = spans(&trace_requests);
    assert_eq!(all_spans.len(), 2, "{all_spans:?}");
    let train = all_spans
        .iter()
        .find(|s| s["name"] == "train")
        .expect("span train");
    let epoch = all_spans
        .iter()
        .find(|s| s["name"] == "epoch")
        .expect("span epoch");
    assert_eq!(train["traceId"], manifest["trace_id"]);
    assert_eq!(train["spanId"], manifest["parent_span_id"]);
    assert_eq!(epoch["spanId"], manifest["child_span_id"]);
    assert_eq!(epoch["parentSpanId"], manifest["parent_span_id"]);
    assert_eq!(train["kind"], 2, "SERVER is the integer 2");
    assert_eq!(epoch["status"]["code"], 2, "ERROR is the integer 2");
    assert_eq!(epoch["status"]["message"], "diverged");
    assert_eq!(epoch["events"][0]["name"], "checkpoint");
    assert_eq!(
        attribute(&epoch["events"][0]["attributes"], "step")["intValue"],
        "7"
    );
    let attrs = &train["attributes"];
    assert_eq!(attribute(attrs, "model.type")["stringValue"], "lightgbm");
    assert_eq!(
        attribute(attrs, "epochs")["intValue"],
        "42",
        "int64 travels as a string"
    );
    assert_eq!(attribute(attrs, "loss")["doubleValue"], 0.234);
    assert_eq!(attribute(attrs, "gpu")["boolValue"], true);
    assert_eq!(attribute(attrs, "unicode")["stringValue"], "данные ✓");
    assert_eq!(
        attribute(attrs, "tags")["arrayValue"]["values"][1]["stringValue"],
        "b"
    );
    assert!(
        train["startTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1_600_000_000_000_000_000
    );
    let resource = &trace_requests[0]["resourceSpans"][0];
    assert_eq!(
        attribute(&resource["resource"]["attributes"], "service.name")["stringValue"],
        "python-e2e"
    );
    assert_eq!(
        attribute(&resource["resource"]["attributes"], "vigil.run_id")["stringValue"],
        format!("run-{protocol}")
    );
    assert_eq!(resource["scopeSpans"][0]["scope"]["name"], "vigil.e2e");
    assert_eq!(resource["scopeSpans"][0]["scope"]["version"], "1.2.3");

    // Logs: body, severity (WARNING → 13), structured attributes and trace correlation.
    let log_requests = file_exporter_lines(&out, "logs");
    let records: Vec<&Value> = log_requests
        .iter()
        .flat_map(|r| r["resourceLogs"].as_array().unwrap())
        .flat_map(|r| r["scopeLogs"].as_array().unwrap())
        .flat_map(|s| s["logRecords"].as_array().unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = records[0];
    assert_eq!(record["body"]["stringValue"], manifest["log_body"]);
    assert_eq!(record["severityNumber"], 13);
    assert_eq!(record["traceId"], manifest["trace_id"]);
    assert_eq!(record["spanId"], manifest["child_span_id"]);
    assert_eq!(
        attribute(&record["attributes"], "experiment_id")["stringValue"],
        "exp_001"
    );

    // Metrics: the monotonic sum and the histogram with their values.
    let metric_requests = file_exporter_lines(&out, "metrics");
    let metrics: Vec<&Value> = metric_requests
        .iter()
        .flat_map(|r| r["resourceMetrics"].as_array().unwrap())
        .flat_map(|r| r["scopeMetrics"].as_array().unwrap())
        .flat_map(|s| s["metrics"].as_array().unwrap())
        .collect();
    let counter = metrics
        .iter()
        .find(|m| m["name"] == "e2e.requests")
        .expect("counter");
    let point = &counter["sum"]["dataPoints"][0];
    assert_eq!(point["asInt"], manifest["counter_total"].to_string());
    assert_eq!(counter["sum"]["isMonotonic"], true);
    assert_eq!(
        counter["sum"]["aggregationTemporality"], 2,
        "CUMULATIVE is the integer 2"
    );
    assert_eq!(
        attribute(&point["attributes"], "route")["stringValue"],
        "/train"
    );
    let histogram = metrics
        .iter()
        .find(|m| m["name"] == "e2e.latency")
        .expect("histogram");
    assert_eq!(histogram["unit"], "s");
    let point = &histogram["histogram"]["dataPoints"][0];
    assert_eq!(point["count"], manifest["histogram_count"].to_string());
    assert_eq!(point["sum"], manifest["histogram_sum"]);
}

#[test]
fn python_sdk_over_grpc() {
    send_and_check("grpc");
}

#[test]
fn python_sdk_over_http_protobuf() {
    send_and_check("http/protobuf");
}

#[test]
fn python_sdk_over_http_json() {
    send_and_check("http/json");
}

#[test]
fn python_sdk_over_tls_on_both_transports() {
    let certs = tempfile::tempdir().unwrap();
    let certs = test_certs(certs.path());
    let (cert, key) = (&certs.cert, &certs.key);
    let tls = format!(
        "tls: {{cert_file: '{}', key_file: '{}'}}",
        cert.display(),
        key.display()
    );
    let config = CONFIG
        .replace(
            "grpc: {endpoint: '{grpc}'}",
            &format!("grpc: {{endpoint: '{{grpc}}', {tls}}}"),
        )
        .replace(
            "http: {endpoint: '{http}'}",
            &format!("http: {{endpoint: '{{http}}', {tls}}}"),
        );
    send_and_check_with("grpc", &config, Some(&certs.ca));
    send_and_check_with("http/protobuf", &config, Some(&certs.ca));
}

/// The README's Python steps as written: `examples/python/app.py`, with the packages of
/// `examples/python/requirements.txt` and only `OTEL_EXPORTER_OTLP_ENDPOINT` set, delivers its spans, metrics and
/// logs, the logs carrying their spans' trace ids.
#[test]
fn the_readme_python_example_delivers_traces_metrics_and_logs() {
    // The example's requirements are what the test venv has installed.
    let wanted =
        std::fs::read_to_string(workspace_root().join("examples/python/requirements.txt")).unwrap();
    let installed =
        std::fs::read_to_string(workspace_root().join("tests/python/requirements.txt")).unwrap();
    for line in wanted
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        assert!(
            installed.lines().any(|l| l == line),
            "{line} is not in the test venv"
        );
    }
    let mut collector = Collector::start(CONFIG);
    let output = Command::new(python())
        .arg(workspace_root().join("examples/python/app.py"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.http),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(collector.stop().success(), "{}", collector.log());
    let out = collector.dir.path().join("out");
    let checkout: Vec<Value> = spans(&file_exporter_lines(&out, "traces"))
        .into_iter()
        .filter(|s| s["name"] == "checkout")
        .collect();
    assert_eq!(checkout.len(), 5);
    assert_eq!(
        checkout.iter().filter(|s| s["status"]["code"] == 2).count(),
        1
    );
    let metrics = file_exporter_lines(&out, "metrics")
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    assert!(
        metrics.contains("orders.processed") && metrics.contains("order.amount"),
        "{metrics}"
    );
    let logs = file_exporter_lines(&out, "logs");
    let records: Vec<&Value> = logs
        .iter()
        .flat_map(|r| r["resourceLogs"].as_array().into_iter().flatten())
        .flat_map(|r| r["scopeLogs"].as_array().into_iter().flatten())
        .flat_map(|s| s["logRecords"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(records.len(), 5, "{logs:?}");
    let trace_ids: Vec<&Value> = checkout.iter().map(|s| &s["traceId"]).collect();
    assert!(
        records.iter().all(|r| trace_ids.contains(&&r["traceId"])),
        "{records:?}"
    );
}
