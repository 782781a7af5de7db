//! The MLflow bridge end to end: the example training job, run with `MLFLOW_TRACKING_URI`, against a real
//! MLflow tracking server; every check goes through MLflow's own Python client (`tests/python/mlflow_inspect.py`).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vigil_e2e::{MlflowServer, eventually, workspace_binary, workspace_root};

/// The training job with MLflow on and OTLP off (no collector in these tests).
fn training_job(mlflow: &MlflowServer, experiment: &str, dir: &std::path::Path) -> Command {
    let mut command = Command::new(workspace_binary("training_job"));
    command
        .current_dir(workspace_root())
        .env("MLFLOW_TRACKING_URI", &mlflow.url)
        .env("MLFLOW_EXPERIMENT_NAME", experiment)
        .env("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
        .env("USER", "vigil-tester")
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("VIGIL_LOG_FILE", dir.join("job.jsonl"));
    command
}

fn only_run(report: &Value) -> &Value {
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{report:#}");
    &runs[0]
}

fn steps(run: &Value, key: &str) -> Vec<i64> {
    run["metrics"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no metric {key}: {run:#}"))
        .iter()
        .map(|point| point[0].as_i64().unwrap_or(-1))
        .collect()
}

fn git_head() -> Option<String> {
    let output = Command::new("git")
        .current_dir(workspace_root())
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
fn the_training_example_produces_a_complete_run() {
    let mlflow = MlflowServer::start();
    let dir = tempfile::tempdir().unwrap();
    let output = training_job(&mlflow, "e2e-complete", dir.path())
        .env("EPOCHS", "5")
        .env("EPOCH_DELAY_MS", "150")
        .output()
        .expect("run training_job");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = mlflow.inspect("e2e-complete");
    let run = only_run(&report);
    assert_eq!(run["status"], "FINISHED", "{run:#}");
    assert!(run["end_time"].as_i64() >= run["start_time"].as_i64());
    assert_eq!(run["run_name"], "lightgbm");

    let params = &run["params"];
    assert_eq!(params["learning_rate"], "0.05");
    assert_eq!(params["num_leaves"], "31");
    assert_eq!(params["epochs"], "5");
    assert_eq!(params["model"], "lightgbm");

    let tags = &run["tags"];
    assert_eq!(tags["mlflow.runName"], "lightgbm");
    assert_eq!(tags["mlflow.user"], "vigil-tester");
    assert_eq!(tags["service.name"], "training-job");
    assert!(
        tags["mlflow.source.name"]
            .as_str()
            .is_some_and(|s| s.ends_with("training_job")),
        "{tags:#}"
    );
    assert!(tags["host.name"].as_str().is_some_and(|h| !h.is_empty()));
    if let Some(head) = git_head() {
        assert_eq!(tags["mlflow.source.git.commit"], head.as_str());
    }

    // The loss of each epoch at its step, falling.
    assert_eq!(steps(run, "loss"), vec![1, 2, 3, 4, 5]);
    let losses: Vec<f64> = run["metrics"]["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");

    // System metrics under MLflow's own names, a few samples over the run.
    for key in [
        "system/cpu_utilization_percentage",
        "system/system_memory_usage_megabytes",
        "system/system_memory_usage_percentage",
    ] {
        let samples = steps(run, key);
        assert!(!samples.is_empty(), "{key}");
        assert_eq!(samples[0], 0, "{key} starts at step 0");
    }
    let memory = run["metrics"]["system/system_memory_usage_megabytes"][0][1]
        .as_f64()
        .unwrap();
    assert!(memory > 1.0, "{memory}");

    // The log records as the run's log artifact, JSON lines with trace ids.
    let log = run["logs"]["logs/0.jsonl"]
        .as_str()
        .unwrap_or_else(|| panic!("no logs/0.jsonl: {run:#}"));
    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let started = records
        .iter()
        .find(|r| r["message"] == "Training started")
        .unwrap_or_else(|| panic!("no start record in {log}"));
    assert_eq!(
        started["trace_id"].as_str().map(str::len),
        Some(32),
        "{started}"
    );
    assert!(records.iter().any(|r| r["message"] == "Training completed"));
    assert_eq!(
        records
            .iter()
            .filter(|r| r["message"] == "Epoch finished")
            .count(),
        5
    );
}

#[test]
fn a_failing_run_ends_failed() {
    let mlflow = MlflowServer::start();
    let dir = tempfile::tempdir().unwrap();
    let output = training_job(&mlflow, "e2e-failed", dir.path())
        .env("EPOCHS", "5")
        .env("SIMULATE_TRAINING_FAILURE", "3")
        .output()
        .expect("run training_job");
    assert_eq!(output.status.code(), Some(1));
    let report = mlflow.inspect("e2e-failed");
    let run = only_run(&report);
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(steps(run, "loss"), vec![1, 2]);
    let log = run["logs"]["logs/0.jsonl"].as_str().unwrap_or_default();
    assert!(log.contains("training diverged at epoch 3"), "{log}");
}

#[test]
fn a_run_stopped_by_sigterm_or_sigint_ends_killed() {
    let mlflow = MlflowServer::start();
    for (signal, name, code) in [("TERM", "e2e-sigterm", 143), ("INT", "e2e-sigint", 130)] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = training_job(&mlflow, name, dir.path())
            .env("EPOCHS", "100000")
            .env("EPOCH_DELAY_MS", "50")
            .stderr(Stdio::null())
            .spawn()
            .expect("run training_job");
        let running = eventually(Duration::from_secs(60), || {
            let report = mlflow.inspect(name);
            report["runs"][0]["status"] == "RUNNING"
                && report["runs"][0]["metrics"]["loss"]
                    .as_array()
                    .is_some_and(|points| points.len() >= 2)
        });
        assert!(running, "the run never showed up RUNNING with its loss");
        let killed = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(code), "SIG{signal}");
        let report = mlflow.inspect(name);
        let run = only_run(&report);
        assert_eq!(run["status"], "KILLED", "SIG{signal}: {run:#}");
        assert!(run["end_time"].as_i64().is_some());
        // Every epoch logged before the signal is there once, in order.
        let logged = steps(run, "loss");
        let expected: Vec<i64> = (1..=logged.len() as i64).collect();
        assert_eq!(logged, expected);
    }
}

#[test]
fn mlflow_down_at_start_loses_and_repeats_nothing_once_it_is_back() {
    let mut mlflow = MlflowServer::start();
    mlflow.stop();
    let dir = tempfile::tempdir().unwrap();
    // A job that runs until the test stops it, so it outlives the outage however long the restart takes.
    let mut child = training_job(&mlflow, "e2e-outage", dir.path())
        .env("EPOCHS", "100000")
        .env("EPOCH_DELAY_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run training_job");
    // The job's stderr, line by line, so the test can wait for what it says.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("MLflow is not accepting data"))
    {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the job never said MLflow is down:\n{}", seen.join("\n")));
        seen.push(line);
    }
    // The job goes on while MLflow is down; it comes back after a few seconds.
    mlflow.restart();
    // Epochs logged during the outage arrive, then new ones keep coming.
    let caught_up = eventually(Duration::from_secs(90), || {
        mlflow.inspect("e2e-outage")["runs"][0]["metrics"]["loss"]
            .as_array()
            .is_some_and(|points| points.len() >= 60)
    });
    assert!(caught_up, "{:#}", mlflow.inspect("e2e-outage"));
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let status = child.wait().expect("wait");
    reader.join().expect("stderr reader");
    seen.extend(lines.try_iter());
    assert_eq!(status.code(), Some(143), "{}", seen.join("\n"));
    let report = mlflow.inspect("e2e-outage");
    let run = only_run(&report);
    assert_eq!(run["status"], "KILLED", "{run:#}");
    // Every epoch once, in order, from the first (logged while MLflow was down) to the last.
    let logged = steps(run, "loss");
    assert_eq!(logged, (1..=logged.len() as i64).collect::<Vec<i64>>());
    let log = run["logs"]["logs/0.jsonl"].as_str().unwrap_or_default();
    assert!(
        log.contains("\"Training started\""),
        "the lines from the outage too"
    );
}

#[test]
fn the_seed_logging_yaml_sends_info_records_into_an_mlflow_run() {
    let mlflow = MlflowServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The seed's config as written, its file handler pointed into the temp dir.
    let seed = "logging:\n  version: 1\n\n  formatters:\n    json:\n      class: src.common.logging.formatters.JSONFormatter\n\n    detailed:\n      format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'\n\n  handlers:\n    console:\n      class: logging.StreamHandler\n      formatter: detailed\n      level: INFO\n\n    file:\n      class: logging.handlers.RotatingFileHandler\n      filename: artifacts/logs/app.log\n      maxBytes: 52428800  # 50MB\n      backupCount: 10\n      formatter: json\n      level: DEBUG\n\n    mlflow:\n      class: src.common.logging.handlers.MLflowHandler\n      level: INFO\n\n  root:\n    level: DEBUG\n    handlers: [console, file, mlflow]\n"
        .replace("artifacts/logs/app.log", &dir.path().join("app.log").display().to_string());
    let config = dir.path().join("logging.yaml");
    std::fs::write(&config, seed).unwrap();
    let output = Command::new(workspace_binary("from_yaml"))
        .env("VIGIL_LOGGING_CONFIG", &config)
        .env("MLFLOW_TRACKING_URI", &mlflow.url)
        .env("MLFLOW_EXPERIMENT_NAME", "e2e-yaml")
        .env("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env_remove("RUST_LOG")
        .output()
        .expect("run from_yaml");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A job without a training run gets one run, named after the service, holding its log records.
    let report = mlflow.inspect("e2e-yaml");
    let run = only_run(&report);
    assert_eq!(run["status"], "FINISHED", "{run:#}");
    let log = run["logs"]["logs/0.jsonl"]
        .as_str()
        .unwrap_or_else(|| panic!("no logs/0.jsonl: {run:#}"));
    assert!(log.contains("imported the batch"), "{log}");
    assert!(log.contains("some rows were skipped"), "{log}");
    assert!(
        !log.contains("parsed the batch"),
        "DEBUG is below the handler's INFO: {log}"
    );
    assert!(
        !log.contains("alice@example.com"),
        "masked before any sink: {log}"
    );
    let file = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    assert!(
        file.contains("parsed the batch"),
        "the file handler still gets DEBUG"
    );
}

/// A collector receiving OTLP and exporting everything to MLflow, with a short heartbeat.
fn collector_for(mlflow: &MlflowServer) -> vigil_e2e::Collector {
    vigil_e2e::Collector::start(&format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: '{{grpc}}'}}
      http: {{endpoint: '{{http}}'}}
processors:
  batch: {{timeout: 20ms}}
exporters:
  mlflow:
    tracking_uri: {url}
    heartbeat: 3s
    traces: {{enabled: true}}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [mlflow]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [mlflow]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [mlflow]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
",
        url = mlflow.url
    ))
}

fn python_trainer(
    collector: &vigil_e2e::Collector,
    experiment: &str,
    args: &[&str],
) -> std::process::Output {
    Command::new(vigil_e2e::python())
        .arg(workspace_root().join("tests/python/train_with_otel.py"))
        .arg(&collector.grpc)
        .arg(experiment)
        .args(args)
        .output()
        .expect("run train_with_otel.py")
}

/// MLflow's traces of an experiment, through its Python client (`search_traces`).
fn trace_ids_in_mlflow(mlflow: &MlflowServer, experiment: &str) -> Vec<String> {
    let script = "import sys, json, mlflow\nmlflow.set_tracking_uri(sys.argv[1])\nexp = mlflow.get_experiment_by_name(sys.argv[2])\ntraces = mlflow.search_traces(locations=[exp.experiment_id], return_type='list') if exp else []\nprint(json.dumps([t.info.trace_id for t in traces]))\n";
    let output = Command::new(vigil_e2e::python())
        .args(["-c", script, &mlflow.url, experiment])
        .output()
        .expect("search_traces");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON list")
}

#[test]
fn a_python_job_through_the_collector_becomes_a_run_with_its_trace() {
    let mlflow = MlflowServer::start();
    let collector = collector_for(&mlflow);
    let output = python_trainer(&collector, "py-complete", &["5"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trace_id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let finished = eventually(Duration::from_secs(60), || {
        mlflow.inspect("py-complete")["runs"][0]["status"] == "FINISHED"
    });
    let report = mlflow.inspect("py-complete");
    assert!(finished, "{report:#}");
    let run = only_run(&report);
    assert_eq!(run["params"]["lr"], "0.01");
    assert_eq!(run["params"]["batch_size"], "32");
    assert_eq!(run["tags"]["service.name"], "py-trainer");
    assert_eq!(run["tags"]["mlflow.runName"], "train");
    // Each epoch once, at its step, though the SDK re-exports every gauge value each interval.
    let deadline_ok = eventually(Duration::from_secs(30), || {
        let report = mlflow.inspect("py-complete");
        report["runs"][0]["metrics"]["training.loss"]
            .as_array()
            .is_some_and(|p| p.len() >= 5)
    });
    assert!(deadline_ok);
    let report = mlflow.inspect("py-complete");
    let run = only_run(&report);
    assert_eq!(steps(run, "training.loss"), vec![1, 2, 3, 4, 5]);
    assert_eq!(steps(run, "eval.accuracy"), vec![1, 2, 3, 4, 5]);
    assert!(run["metrics"].get("http.requests").is_none(), "{run:#}");
    let log = run["logs"]["logs/0.jsonl"].as_str().unwrap_or_default();
    assert_eq!(log.matches("done\"").count(), 5, "{log}");
    assert!(log.contains(&trace_id), "{log}");
    // The run's trace, in MLflow's own trace store.
    let traced = eventually(Duration::from_secs(30), || {
        trace_ids_in_mlflow(&mlflow, "py-complete")
            .iter()
            .any(|t| t.contains(&trace_id))
    });
    assert!(traced, "{:?}", trace_ids_in_mlflow(&mlflow, "py-complete"));

    // A failing job's run ends FAILED.
    let output = python_trainer(&collector, "py-failed", &["-2"]);
    assert!(output.status.success());
    let failed = eventually(Duration::from_secs(60), || {
        mlflow.inspect("py-failed")["runs"][0]["status"] == "FAILED"
    });
    assert!(failed, "{:#}", mlflow.inspect("py-failed"));
}

#[test]
fn a_job_killed_with_sigkill_has_its_run_ended_killed_after_the_heartbeat() {
    let mlflow = MlflowServer::start();
    let collector = collector_for(&mlflow);
    let output = python_trainer(&collector, "py-crash", &["10", "--die-after", "3"]);
    assert!(!output.status.success(), "the job killed itself");
    let killed = eventually(Duration::from_secs(60), || {
        mlflow.inspect("py-crash")["runs"][0]["status"] == "KILLED"
    });
    let report = mlflow.inspect("py-crash");
    assert!(killed, "{report:#}");
    let run = only_run(&report);
    assert_eq!(steps(run, "training.loss"), vec![1, 2, 3]);
    assert!(run["end_time"].as_i64().is_some());
}

/// `configs/examples/mlflow.yaml` as shipped (only its ports moved): a Python job becomes a run with its
/// metrics, the same metrics are still on the Prometheus endpoint, and the logs reach the run masked.
#[test]
fn the_shipped_mlflow_example_config_does_what_its_header_says() {
    let mlflow = MlflowServer::start();
    let text = std::fs::read_to_string(workspace_root().join("configs/examples/mlflow.yaml"))
        .unwrap()
        .replace("0.0.0.0:4317", "{grpc}")
        .replace("0.0.0.0:4318", "{http}")
        .replace("127.0.0.1:8888", "{metrics}")
        .replace("0.0.0.0:9464", "{prometheus}")
        .replace("0.0.0.0:13133", "{health}");
    let collector =
        vigil_e2e::Collector::start_with_env(&text, &[("VIGIL_MLFLOW_TRACKING_URI", &mlflow.url)]);
    let output = python_trainer(&collector, "shipped-config", &["3"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let done = eventually(Duration::from_secs(60), || {
        let report = mlflow.inspect("shipped-config");
        report["runs"][0]["status"] == "FINISHED"
            && report["runs"][0]["metrics"]["training.loss"]
                .as_array()
                .is_some_and(|p| p.len() == 3)
    });
    let report = mlflow.inspect("shipped-config");
    assert!(done, "{report:#}");
    let run = only_run(&report);
    assert_eq!(steps(run, "training.loss"), vec![1, 2, 3]);
    // Prometheus still gets the job's metrics.
    let scraped = eventually(Duration::from_secs(30), || {
        vigil_e2e::http("GET", &collector.prometheus, "/metrics", &[], b"")
            .is_ok_and(|r| r.text().contains("training_loss"))
    });
    assert!(scraped);
}

/// An MLflow older than 3.6 (no `/v1/traces`: 404, as its Flask app answers unknown paths) is reported at start
/// on `/readyz`, with the fix, instead of losing the traces silently.
#[test]
fn a_server_without_trace_ingestion_is_reported_at_start() {
    // Not listening yet: the collector starts ready, its probe waiting for the server to answer.
    let (port, held) = vigil_e2e::reserve_port();
    drop(held);
    let url = format!("http://127.0.0.1:{port}");
    let collector = vigil_e2e::Collector::start(&format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: '{{grpc}}'}}
exporters:
  mlflow:
    tracking_uri: {url}
    traces: {{enabled: true}}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  pipelines:
    traces: {{receivers: [otlp], exporters: [mlflow]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
"
    ));
    vigil_e2e::http_server::serve(
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the reserved port"),
        std::sync::Arc::new(|_, _, _| (404, "Not Found".into())),
    );
    let reported = eventually(Duration::from_secs(30), || {
        vigil_e2e::http("GET", &collector.health, "/readyz", &[], b"")
            .is_ok_and(|r| r.status == 503 && r.text().contains("needs MLflow 3.6 or later"))
    });
    assert!(reported, "{}", collector.log());
    let logged = eventually(Duration::from_secs(10), || {
        collector.log().contains("cannot send traces")
    });
    assert!(logged, "{}", collector.log());
}

/// The Rust training example sending OTLP through the collector (no MLflow in the job), killed with SIGKILL:
/// the collector's heartbeat ends its run KILLED.
#[test]
fn the_training_example_killed_with_sigkill_is_ended_killed_by_the_collector() {
    let mlflow = MlflowServer::start();
    let collector = collector_for(&mlflow);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_binary("training_job"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", collector.grpc),
        )
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "mlflow.experiment_name=rust-crash",
        )
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("EPOCHS", "100000")
        .env("EPOCH_DELAY_MS", "50")
        .env("VIGIL_LOG_FILE", dir.path().join("job.jsonl"))
        .env_remove("MLFLOW_TRACKING_URI")
        .stderr(Stdio::null())
        .spawn()
        .expect("run training_job");
    let running = eventually(Duration::from_secs(60), || {
        let report = mlflow.inspect("rust-crash");
        report["runs"][0]["status"] == "RUNNING"
            && report["runs"][0]["metrics"]["training.loss/lightgbm"]
                .as_array()
                .is_some_and(|points| points.len() >= 2)
    });
    assert!(running, "{:#}", mlflow.inspect("rust-crash"));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let killed = eventually(Duration::from_secs(60), || {
        mlflow.inspect("rust-crash")["runs"][0]["status"] == "KILLED"
    });
    let report = mlflow.inspect("rust-crash");
    assert!(killed, "{report:#}");
    let log = only_run(&report)["logs"]["logs/0.jsonl"]
        .as_str()
        .unwrap_or_default();
    assert!(log.contains("Epoch finished"), "{log}");
}
