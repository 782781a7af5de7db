//! The MLflow sender against a real tracking server (from the test venv), checked through MLflow's own Python
//! client: MLflow's request limits, how few requests many points take, and a YAML `mlflow` handler.

use std::time::Duration;

use vigil::ml::mlflow::{Mlflow, MlflowConfig, RunStatus};
use vigil_e2e::MlflowServer;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Tests that install their sender as the process's current one (what `TrainingRun` and `record_backtest` use)
/// take turns.
static CURRENT_SENDER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sender(server: &MlflowServer, experiment: &str) -> Mlflow {
    let mut config = MlflowConfig::new(&server.url);
    config.experiment = Some(vigil::ml::mlflow::Experiment::Name(experiment.into()));
    config.system_metrics = None;
    config.handle_signals = false;
    Mlflow::start(config, "sdk-test").expect("start the sender")
}

#[test]
fn oversized_epochs_params_and_tag_sets_are_split_or_cut_never_refused() {
    let server = MlflowServer::start();
    let mlflow = sender(&server, "limits");
    let run = mlflow.start_run("ignored", "limits-run", Vec::new());
    // 5,000 metrics in one epoch.
    let keys: Vec<String> = (0..5000)
        .map(|i| format!("layer_{i:04}.grad_norm"))
        .collect();
    let values: Vec<(&str, f64)> = keys.iter().map(|k| (k.as_str(), 0.5)).collect();
    run.log_metrics(1, &values);
    // A 10,000-character param.
    let long = "p".repeat(10_000);
    run.log_params(&[("config", long.as_str()), ("lr", "0.01")]);
    // 150 tags.
    let tag_keys: Vec<String> = (0..150).map(|i| format!("tag_{i:03}")).collect();
    let tags: Vec<(&str, &str)> = tag_keys.iter().map(|k| (k.as_str(), "v")).collect();
    run.set_tags(&tags);
    run.end(RunStatus::Finished);
    assert!(mlflow.shutdown(TIMEOUT), "not delivered");
    assert_eq!(mlflow.dropped(), 0, "nothing refused or dropped");

    let report = server.inspect_with("limits", &["--latest-only"]);
    let run = &report["runs"][0];
    assert_eq!(run["status"], "FINISHED");
    assert_eq!(run["metrics"].as_object().map(|m| m.len()), Some(5000));
    assert_eq!(run["params"]["lr"], "0.01");
    let config = run["params"]["config"].as_str().unwrap_or_default();
    assert_eq!(config.len(), 6000, "cut to MLflow 3's param limit");
    let tag_count = run["tags"]
        .as_object()
        .map_or(0, |t| t.keys().filter(|k| k.starts_with("tag_")).count());
    assert_eq!(tag_count, 150);
    // MLflow's access log has a line per request: every log-batch was accepted.
    let log = server.log();
    let batches: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("runs/log-batch"))
        .collect();
    assert!(
        batches.len() >= 5,
        "5,000 metrics take five requests:\n{log}"
    );
    assert!(
        batches.iter().all(|l| l.contains("\" 200")),
        "MLflow refused a request:\n{log}"
    );
}

#[test]
fn a_hundred_thousand_points_take_at_most_a_hundred_and_one_requests() {
    let server = MlflowServer::start();
    let mlflow = sender(&server, "volume");
    let run = mlflow.start_run("ignored", "volume-run", Vec::new());
    // 10,000 steps of 10 values, logged as fast as the job can.
    let keys: Vec<String> = (0..10).map(|i| format!("metric_{i}")).collect();
    for step in 0..10_000u64 {
        let values: Vec<(&str, f64)> = keys.iter().map(|k| (k.as_str(), step as f64)).collect();
        run.log_metrics(step, &values);
    }
    run.end(RunStatus::Finished);
    assert!(mlflow.shutdown(TIMEOUT), "not delivered");
    assert_eq!(mlflow.dropped(), 0);
    let requests = mlflow.log_batch_requests();
    eprintln!("100,000 points: {requests} log-batch requests");
    assert!(requests <= 101, "{requests} log-batch requests");
    let log = server.log();
    let accepted = log
        .lines()
        .filter(|l| l.contains("runs/log-batch") && l.contains("\" 200"))
        .count();
    assert_eq!(accepted as u64, requests, "every request accepted:\n{log}");

    let report = server.inspect_with("volume", &["--latest-only"]);
    let run = &report["runs"][0];
    assert_eq!(run["status"], "FINISHED");
    assert_eq!(run["metrics"]["metric_9"], 9999.0);
}

/// The README's MLflow snippet is the `vigil::ml::mlflow` module example, which the doc tests compile.
#[test]
fn the_readme_snippet_is_the_compiled_module_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let section = readme
        .split("### MLflow")
        .nth(1)
        .expect("a MLflow section in the README");
    let snippet = section
        .split("```rust\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a rust block");
    let module = std::fs::read_to_string(root.join("src/ml/mlflow/mod.rs")).unwrap();
    let example: String = module
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    for line in snippet.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            example.contains(line),
            "README line not in the compiled example: {line}"
        );
    }
}

#[test]
fn a_panic_fails_the_run_and_an_abandoned_run_is_killed() {
    let server = MlflowServer::start();
    let mlflow = sender(&server, "endings");
    let _turn = CURRENT_SENDER.lock().unwrap_or_else(|p| p.into_inner());
    // The sender `TrainingRun` records into (what `Builder::try_init` installs).
    mlflow.install();
    let panicked = std::thread::spawn(|| {
        let mut run = vigil::ml::TrainingRun::start("ignored", "panics");
        run.epoch(1, 10, &[("loss", 1.0)]);
        panic!("the loss diverged");
    })
    .join();
    assert!(panicked.is_err());
    {
        let mut run = vigil::ml::TrainingRun::start("ignored", "abandoned");
        run.epoch(1, 10, &[("loss", 1.0)]);
    }
    let mut run = vigil::ml::TrainingRun::start("ignored", "completes");
    run.epoch(1, 10, &[("loss", 1.0)]);
    run.complete();
    assert!(mlflow.shutdown(TIMEOUT), "not delivered");
    let report = server.inspect("endings");
    let status = |name: &str| {
        report["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["run_name"] == name)
            .map(|r| r["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(status("panics").as_deref(), Some("FAILED"), "{report:#}");
    assert_eq!(status("abandoned").as_deref(), Some("KILLED"), "{report:#}");
    assert_eq!(
        status("completes").as_deref(),
        Some("FINISHED"),
        "{report:#}"
    );
}

#[test]
fn a_recorded_backtest_is_a_finished_run() {
    let server = MlflowServer::start();
    let mut config = MlflowConfig::new(&server.url);
    config.system_metrics = None;
    config.handle_signals = false;
    let mlflow = Mlflow::start(config, "sdk-test").expect("start the sender");
    let _turn = CURRENT_SENDER.lock().unwrap_or_else(|p| p.into_inner());
    mlflow.install();
    vigil::ml::record_backtest(
        "momentum",
        Duration::from_millis(1500),
        1532,
        12_345.5,
        &[("sharpe", 1.87)],
    );
    assert!(mlflow.shutdown(TIMEOUT), "not delivered");
    let report = server.inspect_with("backtests", &["--latest-only"]);
    let run = &report["runs"][0];
    assert_eq!(run["status"], "FINISHED", "{report:#}");
    assert_eq!(run["run_name"], "momentum");
    assert_eq!(run["params"]["strategy"], "momentum");
    assert_eq!(run["metrics"]["pnl"], 12_345.5);
    assert_eq!(run["metrics"]["trades"], 1532.0);
    assert_eq!(run["metrics"]["sharpe"], 1.87);
    assert_eq!(run["metrics"]["duration_seconds"], 1.5);
}
