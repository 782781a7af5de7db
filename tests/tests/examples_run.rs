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
