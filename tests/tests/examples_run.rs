//! The example programs run against a real collector and send what their docs say.

use std::process::Command;

use serde_json::Value;
use vigil_e2e::{
    Collector, OTLP_TO_FILE, file_exporter_lines, spans, workspace_binary, workspace_root,
};

fn metric_names(dir: &std::path::Path) -> String {
    file_exporter_lines(dir, "metrics")
        .iter()
        .map(Value::to_string)
        .collect()
}

#[test]
fn the_backtest_example_sends_one_span_and_the_results_per_strategy() {
    let mut collector = Collector::start(OTLP_TO_FILE);
    let output = Command::new(workspace_binary("backtest"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env("STRATEGIES", "sma_5_20,sma_10_50")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("Backtest finished").count(), 2, "{stderr}");
    assert!(!stderr.contains("WARNING cannot export"), "{stderr}");
    assert!(collector.stop().success(), "{}", collector.log());
    let out = collector.dir.path().join("out");
    let backtests: Vec<Value> = spans(&file_exporter_lines(&out, "traces"))
        .into_iter()
        .filter(|s| s["name"] == "backtest")
        .collect();
    assert_eq!(backtests.len(), 2);
    let metrics = metric_names(&out);
    for name in [
        "backtest.duration",
        "backtest.trades",
        "backtest.pnl",
        "backtest.sharpe",
        "backtest.max_drawdown",
        "sma_10_50",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
}

#[test]
fn the_yaml_configured_example_follows_its_file() {
    let mut collector = Collector::start(OTLP_TO_FILE);
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("app.log");
    // The shipped default config, with its file handler pointed into the temp dir.
    let config = std::fs::read_to_string(workspace_root().join("configs/logging/default.yaml"))
        .unwrap()
        .replace("artifacts/logs/app.log", &log_file.display().to_string());
    let config_path = dir.path().join("logging.yaml");
    std::fs::write(&config_path, config).unwrap();
    let output = Command::new(workspace_binary("from_yaml"))
        .env("VIGIL_LOGGING_CONFIG", &config_path)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let console = String::from_utf8_lossy(&output.stderr);
    // The console handler: INFO and up, in the file's format, e-mail masked.
    assert!(
        console.contains(" - INFO - imported the batch"),
        "{console}"
    );
    assert!(
        !console.contains("parsed the batch"),
        "DEBUG is below the console's level: {console}"
    );
    assert!(!console.contains("alice@example.com"), "{console}");
    // The file handler: DEBUG and up, JSON lines.
    let file = std::fs::read_to_string(&log_file).unwrap();
    let lines: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "parsed the batch"),
        "{file}"
    );
    assert!(lines.iter().all(|l| l["batch_id"] == "b-7"), "{file}");
    // The otlp handler: INFO and up, to the collector.
    assert!(collector.stop().success());
    let records = file_exporter_lines(&collector.dir.path().join("out"), "logs")
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    assert!(records.contains("imported the batch") && records.contains("some rows were skipped"));
    assert!(!records.contains("parsed the batch"));
}

#[test]
fn the_http_service_example_traces_a_request_across_its_downstream_call() {
    use std::io::{BufRead, BufReader};
    let mut collector = Collector::start(OTLP_TO_FILE);
    let mut service = Command::new(workspace_binary("http_service"))
        .env("VIGIL_HTTP_ADDR", "127.0.0.1:0")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(service.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let address = first
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    let order = vigil_e2e::http("GET", &address, "/orders/42", &[], b"").unwrap();
    assert_eq!(order.status, 200, "{}", order.text());
    assert_eq!(order.text(), "order 42: 1 in stock\n");
    let health = vigil_e2e::http("GET", &address, "/health", &[], b"").unwrap();
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(
        health.text().contains("\"otlp_collector\""),
        "{}",
        health.text()
    );
    // SIGTERM: the service drains and flushes its telemetry.
    // SAFETY: kill(2) on the child we started.
    unsafe {
        kill(service.id() as i32, 15);
    }
    let output = service.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(collector.stop().success());
    let out = collector.dir.path().join("out");
    let all = spans(&file_exporter_lines(&out, "traces"));
    let find = |name: &str| {
        all.iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no span `{name}` in {all:?}"))
    };
    let server = find("GET /orders/{id}");
    let client = find("GET");
    let downstream = find("GET /inventory/{id}");
    let attribute = |span: &Value, key: &str| {
        span["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == key)
            .map(|a| a["value"]["stringValue"].clone())
            .unwrap_or_default()
    };
    assert_eq!(attribute(server, "url.path"), "/orders/42");
    assert_eq!(attribute(server, "http.route"), "/orders/{id}");
    assert_eq!(client["traceId"], server["traceId"]);
    assert_eq!(
        downstream["traceId"], server["traceId"],
        "the trace continues downstream"
    );
    assert_eq!(client["parentSpanId"], server["spanId"]);
    assert_eq!(downstream["parentSpanId"], client["spanId"]);
    let metrics = metric_names(&out);
    assert!(
        metrics.contains("http.server.request.duration"),
        "{metrics}"
    );
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}
