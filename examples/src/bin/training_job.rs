//! A simulated ML training job instrumented with Vigil.
//!
//! ```sh
//! cargo run --release -p vigil-collector &                 # the collector on 127.0.0.1:4317
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 cargo run -p vigil-examples --bin training_job
//! ```
//!
//! Console logs go to stderr, JSON lines to `logs/training_job.jsonl` (override with `VIGIL_LOG_FILE`), and
//! spans, logs and metrics to the collector over OTLP (gRPC by default; `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` or
//! `http/json` with the collector's port 4318 for OTLP/HTTP). `SIMULATE_CHECKPOINT_FAILURE=1` makes the final
//! checkpoint fail, logged at CRITICAL.

use std::time::Instant;

use tracing::{info, info_span, warn};
use vigil::opentelemetry::KeyValue;
use vigil::opentelemetry::global;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log_file =
        std::env::var("VIGIL_LOG_FILE").unwrap_or_else(|_| "logs/training_job.jsonl".into());
    let guard = vigil::Builder::new("training-job")
        .service_version(env!("CARGO_PKG_VERSION"))
        .json_file(vigil::log::file::FileOptions::new(log_file))
        .try_init()?;

    let meter = global::meter("training_job");
    let loss = meter
        .f64_histogram("training.loss")
        .with_description("Loss after each epoch")
        .build();
    let epoch_duration = meter
        .f64_histogram("training.epoch.duration")
        .with_unit("s")
        .with_description("Wall time of one epoch")
        .build();
    let epochs_done = meter
        .u64_counter("training.epochs")
        .with_description("Epochs completed")
        .build();
    let epochs: u32 = std::env::var("EPOCHS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(5);
    let attributes = [
        KeyValue::new("model_type", "lightgbm"),
        KeyValue::new("experiment_id", "exp_001"),
    ];

    let started = Instant::now();
    let run = info_span!(
        "training_run",
        experiment_id = "exp_001",
        model_type = "lightgbm"
    );
    let _run = run.enter();
    info!(epochs, "Training started");
    let mut current_loss = 1.0f64;
    for epoch in 1..=epochs {
        let span = info_span!("epoch", epoch);
        let _entered = span.enter();
        let epoch_started = Instant::now();
        // Simulated work: a deterministic loss curve.
        let mut acc = 0.0f64;
        for i in 0..200_000u32 {
            acc += f64::from(i % 7).sqrt();
        }
        current_loss = current_loss * 0.7 + (acc % 1.0) * 0.001;
        if current_loss > 0.9 {
            warn!(epoch, loss = current_loss, "Loss is not improving");
        }
        info!(epoch, loss = current_loss, "Epoch finished");
        loss.record(current_loss, &attributes);
        epoch_duration.record(epoch_started.elapsed().as_secs_f64(), &attributes);
        epochs_done.add(1, &attributes);
    }
    info!(
        model_type = "lightgbm",
        experiment_id = "exp_001",
        duration_sec = started.elapsed().as_secs_f64(),
        final_loss = current_loss,
        gpu_used = false,
        "Training completed"
    );
    if std::env::var_os("SIMULATE_CHECKPOINT_FAILURE").is_some() {
        vigil::critical!(
            checkpoint = "checkpoints/exp_001/final.bin",
            "Checkpoint could not be saved"
        );
    }
    drop(_run);
    // Export everything before exiting; the guard's drop would do the same, bounded by its timeout.
    if !guard.flush() {
        eprintln!(
            "training_job: some telemetry could not be delivered (is the collector running?)"
        );
    }
    Ok(())
}
