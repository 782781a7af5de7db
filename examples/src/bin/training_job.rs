//! A simulated ML training job instrumented with Vigil, written with the calls the README shows: one
//! `Builder`, a span for the run, `vigil::time` for each epoch's duration and `TrainingRun` for the run's
//! metrics.
//!
//! ```sh
//! cargo run --release -p vigil-collector &                 # the collector on 127.0.0.1:4317
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 cargo run -p vigil-examples --bin training_job
//! ```
//!
//! Console logs go to stderr, JSON lines to `logs/training_job.jsonl` (override with `VIGIL_LOG_FILE`), and
//! spans, logs and metrics to the collector over OTLP (gRPC by default; `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` or
//! `http/json` with the collector's port 4318 for OTLP/HTTP).
//!
//! What it exports (Prometheus names after the collector): `training_status{status}` (1 for the current of
//! `running`, `completed`, `failed`), `training_epochs_total`, `training_epoch`, `training_loss`,
//! `training_samples_total`, `training_samples_per_second` and `training_duration_seconds`, all with
//! `experiment_id="exp_001"` and `model="lightgbm"`, and `training_epoch_duration_seconds` (a histogram).
//!
//! With `MLFLOW_TRACKING_URI` set, the run is also an MLflow run (experiment `exp_001` unless
//! `MLFLOW_EXPERIMENT_NAME` says otherwise): params, the loss per epoch, system metrics, the log records as
//! `logs/0.jsonl`, and its end as FINISHED, FAILED or KILLED (SIGTERM/SIGINT). Without it nothing changes.
//!
//! Knobs: `EPOCHS` (default 5); `EPOCH_DELAY_MS` (default 0) slows each epoch down; `SIMULATE_TRAINING_FAILURE=N` makes epoch N fail (the run ends `failed`, the
//! error is logged with its chain and the program exits with status 1); `SIMULATE_CHECKPOINT_FAILURE=1` makes
//! the final checkpoint fail, logged at CRITICAL.

use std::time::Instant;

use tracing::{info, info_span, warn};
use vigil::ml::TrainingRun;

/// Samples in one simulated epoch.
const SAMPLES_PER_EPOCH: u64 = 50_000;

/// The simulated failure.
#[derive(Debug)]
struct DivergedError {
    epoch: u32,
}

impl std::fmt::Display for DivergedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "training diverged at epoch {}", self.epoch)
    }
}

impl std::error::Error for DivergedError {}

/// One epoch of simulated work, returning a number the loss curve is derived from.
fn simulated_epoch() -> f64 {
    let mut acc = 0.0f64;
    for i in 0..200_000u32 {
        acc += f64::from(i % 7).sqrt();
    }
    acc
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log_file =
        std::env::var("VIGIL_LOG_FILE").unwrap_or_else(|_| "logs/training_job.jsonl".into());
    let guard = vigil::Builder::new("training-job")
        .service_version(env!("CARGO_PKG_VERSION"))
        .json_file(vigil::log::file::FileOptions::new(log_file))
        .mlflow(vigil::ml::mlflow::MlflowConfig::from_env())
        .try_init()?;
    vigil::install_panic_hook();
    let epochs: u32 = std::env::var("EPOCHS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(5);
    let fail_at: Option<u32> = std::env::var("SIMULATE_TRAINING_FAILURE")
        .ok()
        .and_then(|e| e.parse().ok());
    let delay = std::time::Duration::from_millis(
        std::env::var("EPOCH_DELAY_MS")
            .ok()
            .and_then(|e| e.parse().ok())
            .unwrap_or(0),
    );

    let started = Instant::now();
    let run_span = info_span!(
        "training_run",
        experiment_id = "exp_001",
        model_type = "lightgbm"
    );
    let entered = run_span.enter();
    let mut run = TrainingRun::start("exp_001", "lightgbm");
    let epochs_text = epochs.to_string();
    run.params(&[
        ("learning_rate", "0.05"),
        ("num_leaves", "31"),
        ("epochs", &epochs_text),
    ]);
    info!(epochs, "Training started");
    let mut loss = 1.0f64;
    for epoch in 1..=epochs {
        let _epoch = info_span!("epoch", epoch).entered();
        let work = vigil::time("training.epoch.duration", simulated_epoch);
        std::thread::sleep(delay);
        loss = loss * 0.7 + (work % 1.0) * 0.001;
        if fail_at == Some(epoch) {
            let error = DivergedError { epoch };
            // Logs the error with its chain, marks the span as failed and sets training.status to failed.
            run.fail(&error);
            drop(_epoch);
            drop(entered);
            flush(&guard);
            return Err(error.into());
        }
        if loss > 0.9 {
            warn!(epoch, loss, "Loss is not improving");
        }
        info!(epoch, loss, "Epoch finished");
        run.epoch(u64::from(epoch), SAMPLES_PER_EPOCH, &[("loss", loss)]);
    }
    info!(
        model_type = "lightgbm",
        experiment_id = "exp_001",
        duration_sec = started.elapsed().as_secs_f64(),
        final_loss = loss,
        gpu_used = false,
        "Training completed"
    );
    run.complete();
    if std::env::var_os("SIMULATE_CHECKPOINT_FAILURE").is_some() {
        vigil::critical!(
            checkpoint = "checkpoints/exp_001/final.bin",
            "Checkpoint could not be saved"
        );
    }
    drop(entered);
    flush(&guard);
    Ok(())
}

/// Exports everything before exiting; the guard's drop would do the same, bounded by its timeout.
fn flush(guard: &vigil::Guard) {
    if !guard.flush() {
        eprintln!(
            "training_job: some telemetry could not be delivered (is the collector running?)"
        );
    }
}
