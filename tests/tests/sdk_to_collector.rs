//! The `vigil` SDK exports spans, logs and metrics over OTLP (gRPC, HTTP/protobuf and HTTP/JSON) to a real collector: the example training job
//! runs against `vigil-collector`, whose `file` exporter output is checked for resource, trace ids, severity and
//! metric values; the job's own JSON log file carries the same trace ids.

use std::process::Command;

use serde_json::Value;
use vigil_e2e::{Collector, OTLP_TO_FILE, file_exporter_lines, spans, workspace_binary};

fn attribute<'a>(attributes: &'a Value, key: &str) -> Option<&'a Value> {
    attributes
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .map(|kv| &kv["value"])
}

/// Every metric the `file` exporter wrote to `out`.
fn exported_metrics(out: &std::path::Path) -> Vec<Value> {
    file_exporter_lines(out, "metrics")
        .iter()
        .flat_map(|r| r["resourceMetrics"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["scopeMetrics"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["metrics"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Every log record the `file` exporter wrote to `out`.
fn exported_log_records(out: &std::path::Path) -> Vec<Value> {
    file_exporter_lines(out, "logs")
        .iter()
        .flat_map(|r| r["resourceLogs"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["scopeLogs"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["logRecords"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The states set to 1 in a state-set gauge such as `training.status`.
fn current_states(state_set: &Value) -> Vec<&str> {
    state_set["gauge"]["dataPoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["asDouble"] == 1.0)
        .filter_map(|p| attribute(&p["attributes"], "status")?["stringValue"].as_str())
        .collect()
}

#[test]
fn training_job_telemetry_reaches_the_collector_over_grpc() {
    training_job_telemetry_reaches_the_collector("grpc");
}

#[test]
fn training_job_telemetry_reaches_the_collector_over_http_protobuf() {
    training_job_telemetry_reaches_the_collector("http/protobuf");
}

#[test]
fn training_job_telemetry_reaches_the_collector_over_http_json() {
    training_job_telemetry_reaches_the_collector("http/json");
}

fn training_job_telemetry_reaches_the_collector(protocol: &str) {
    let mut collector = Collector::start(OTLP_TO_FILE);
    let job_log = collector.dir.path().join("job.jsonl");
    let endpoint = if protocol == "grpc" {
        collector.grpc.clone()
    } else {
        collector.http.clone()
    };
    let output = Command::new(workspace_binary("training_job"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{endpoint}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("SIMULATE_CHECKPOINT_FAILURE", "1")
        .env("VIGIL_LOG_FILE", &job_log)
        .env("EPOCHS", "3")
        .env("RUST_LOG", "info")
        // The head sampler, keeping everything: the threshold it records must reach the collector.
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "1.0")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=e2e,host.name=from-env",
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("could not be delivered"));
    assert!(collector.stop().success(), "{}", collector.log());
    let out = collector.dir.path().join("out");

    let trace_requests = file_exporter_lines(&out, "traces");
    let resource = &trace_requests[0]["resourceSpans"][0]["resource"]["attributes"];
    assert_eq!(
        attribute(resource, "service.name").unwrap()["stringValue"],
        "training-job"
    );
    // What Prometheus needs for `instance`, and what an operator looks for first.
    let instance = attribute(resource, "service.instance.id").unwrap()["stringValue"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(instance.len(), 36, "a UUID: {instance}");
    assert!(attribute(resource, "process.pid").unwrap()["intValue"].is_string());
    assert_eq!(
        attribute(resource, "service.version").unwrap()["stringValue"],
        env!("CARGO_PKG_VERSION")
    );
    // OTEL_RESOURCE_ATTRIBUTES is honoured, and wins over what the SDK found.
    assert_eq!(
        attribute(resource, "deployment.environment").unwrap()["stringValue"],
        "e2e"
    );
    assert_eq!(
        attribute(resource, "host.name").unwrap()["stringValue"],
        "from-env"
    );
    let all_spans = spans(&trace_requests);
    let run = all_spans
        .iter()
        .find(|s| s["name"] == "training_run")
        .expect("training_run span");
    let epochs: Vec<&Value> = all_spans.iter().filter(|s| s["name"] == "epoch").collect();
    assert_eq!(epochs.len(), 3);
    assert!(
        all_spans.iter().all(|s| s["traceState"] == "ot=th:0"),
        "every span carries the sampling threshold: {:?}",
        all_spans
            .iter()
            .map(|s| &s["traceState"])
            .collect::<Vec<_>>()
    );
    assert!(
        epochs
            .iter()
            .all(|e| e["traceId"] == run["traceId"] && e["parentSpanId"] == run["spanId"])
    );
    assert_eq!(
        attribute(&run["attributes"], "experiment_id").unwrap()["stringValue"],
        "exp_001"
    );

    let records: Vec<Value> = exported_log_records(&out);
    let completed = records
        .iter()
        .find(|r| r["body"]["stringValue"] == "Training completed")
        .expect("the seed's log line is exported");
    assert_eq!(completed["severityNumber"], 9, "INFO");
    assert_eq!(
        completed["traceId"], run["traceId"],
        "logs carry the trace id of their span"
    );
    assert_eq!(completed["spanId"], run["spanId"]);
    assert_eq!(
        attribute(&completed["attributes"], "model_type").unwrap()["stringValue"],
        "lightgbm"
    );
    assert_eq!(
        attribute(&completed["attributes"], "gpu_used").unwrap()["boolValue"],
        false
    );
    let critical = records
        .iter()
        .find(|r| r["body"]["stringValue"] == "Checkpoint could not be saved")
        .expect("the CRITICAL record is exported");
    assert_eq!(critical["severityNumber"], 21, "CRITICAL is OTel FATAL");
    assert_eq!(critical["severityText"], "CRITICAL");
    assert!(
        attribute(&critical["attributes"], "critical").is_none(),
        "the marker field is not an attribute"
    );
    let epoch_line = records
        .iter()
        .find(|r| r["body"]["stringValue"] == "Epoch finished")
        .expect("epoch log records");
    assert_eq!(
        attribute(&epoch_line["attributes"], "experiment_id").unwrap()["stringValue"],
        "exp_001",
        "context bound with a span reaches OTLP log records"
    );
    assert!(attribute(&epoch_line["attributes"], "epoch").unwrap()["intValue"].is_string());
    assert_eq!(epoch_line["severityText"], "INFO");
    assert!(
        attribute(&completed["attributes"], "final_loss").unwrap()["doubleValue"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    let metrics: Vec<Value> = exported_metrics(&out);
    // TrainingRun's metrics, as the README shows them.
    let loss = metrics
        .iter()
        .rfind(|m| m["name"] == "training.loss")
        .expect("loss gauge");
    let loss_point = &loss["gauge"]["dataPoints"][0];
    assert!(loss_point["asDouble"].as_f64().unwrap() < 0.5, "{loss}");
    assert_eq!(
        attribute(&loss_point["attributes"], "model").unwrap()["stringValue"],
        "lightgbm"
    );
    let epochs_counter = metrics
        .iter()
        .rfind(|m| m["name"] == "training.epochs")
        .expect("epochs counter");
    assert_eq!(epochs_counter["sum"]["dataPoints"][0]["asInt"], "3");
    let status = metrics
        .iter()
        .rfind(|m| m["name"] == "training.status")
        .expect("training.status state set");
    let current = current_states(status);
    assert_eq!(current, ["completed"], "{status}");
    let epoch_duration = metrics
        .iter()
        .rfind(|m| m["name"] == "training.epoch.duration")
        .expect("vigil::time's histogram");
    assert_eq!(epoch_duration["unit"], "s");
    assert_eq!(epoch_duration["histogram"]["dataPoints"][0]["count"], "3");

    let dropped = metrics
        .iter()
        .find(|m| m["name"] == "vigil.log.dropped_records")
        .expect("dropped log records are exported as a metric");
    assert_eq!(dropped["sum"]["dataPoints"][0]["asInt"], "0");

    // System and process metrics come without a line of user code.
    let rss = metrics
        .iter()
        .find(|m| m["name"] == "process.memory.usage")
        .expect("process metrics are on by default");
    assert!(rss["gauge"]["dataPoints"][0]["asDouble"].as_f64().unwrap() > 1e6);
    assert_eq!(rss["unit"], "By");
    assert!(
        metrics
            .iter()
            .any(|m| m["name"] == "system.cpu.utilization"),
        "host metrics too"
    );

    // The JSON file sink carries the same correlation ids.
    let file_lines: Vec<Value> = std::fs::read_to_string(&job_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let completed_line = file_lines
        .iter()
        .find(|l| l["message"] == "Training completed")
        .unwrap();
    assert_eq!(completed_line["trace_id"], run["traceId"]);
    assert!(completed_line["duration_sec"].is_f64(), "a typed number");
    assert_eq!(completed_line["experiment_id"], "exp_001");
}

/// The training job with a simulated failure: it exits with status 1 naming the error, `training.status` says
/// `failed` (what the `training_failed` alert rule reads), and the error record carries the run's trace.
#[test]
fn a_failing_training_run_is_reported_as_failed() {
    let mut collector = Collector::start(OTLP_TO_FILE);
    let output = Command::new(workspace_binary("training_job"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env("VIGIL_LOG_FILE", collector.dir.path().join("job.jsonl"))
        .env("EPOCHS", "3")
        .env("SIMULATE_TRAINING_FAILURE", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("training diverged at epoch 2"), "{stderr}");
    assert!(collector.stop().success(), "{}", collector.log());
    let out = collector.dir.path().join("out");
    let metrics: Vec<Value> = exported_metrics(&out);
    let status = metrics
        .iter()
        .rfind(|m| m["name"] == "training.status")
        .expect("training.status state set");
    let current = current_states(status);
    assert_eq!(current, ["failed"], "{status}");
    let epochs = metrics
        .iter()
        .rfind(|m| m["name"] == "training.epochs")
        .expect("epochs counter");
    assert_eq!(
        epochs["sum"]["dataPoints"][0]["asInt"], "1",
        "one epoch completed"
    );
    let trace_requests = file_exporter_lines(&out, "traces");
    let all_spans = spans(&trace_requests);
    let run = all_spans
        .iter()
        .find(|s| s["name"] == "training_run")
        .expect("training_run span");
    let records: Vec<Value> = exported_log_records(&out);
    let error = records
        .iter()
        .find(|r| r["severityText"] == "ERROR")
        .expect("the error is logged");
    assert!(
        error.to_string().contains("training diverged at epoch 2"),
        "{error}"
    );
    assert_eq!(error["traceId"], run["traceId"]);
    let failed_epoch = all_spans
        .iter()
        .find(|s| s["name"] == "epoch" && s["status"]["code"] == 2)
        .expect("the failing epoch's span has an error status");
    assert_eq!(failed_epoch["traceId"], run["traceId"]);
}

/// A collector that accepts connections but never answers (a bound, never-accepting port) must not hang the
/// program: the guard's flush gives up within its timeout and says so.
fn unreachable_collector_does_not_hang_the_program(protocol: &str) {
    let (port, _black_hole) = vigil_e2e::reserve_port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_binary("training_job"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        .env("VIGIL_LOG_FILE", dir.path().join("job.jsonl"))
        .env("EPOCHS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Generous bound: the guard's own limit is 5 s; a hang would be forever.
    let exited = vigil_e2e::eventually(std::time::Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    assert!(
        exited,
        "the job hung on an unresponsive collector ({protocol})"
    );
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("could not be delivered"),
        "the program is told that telemetry was lost"
    );
    // The local file sink is unaffected by the exporter's trouble.
    let lines = std::fs::read_to_string(dir.path().join("job.jsonl")).unwrap();
    assert!(lines.contains("Training completed"));
}

#[test]
fn unreachable_collector_does_not_hang_the_program_over_grpc() {
    unreachable_collector_does_not_hang_the_program("grpc");
}

#[test]
fn unreachable_collector_does_not_hang_the_program_over_http() {
    unreachable_collector_does_not_hang_the_program("http/protobuf");
}
