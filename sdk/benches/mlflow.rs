//! What MLflow costs the training loop: one `TrainingRun::epoch` call with three named values, without MLflow
//! and with it, and the MLflow share alone (`RunHandle::log_metrics`). The sender points at a port where
//! nothing listens, so the figures also show that no call waits on the network: the job only queues.
//!
//! `cargo bench -p vigil --bench mlflow`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::ml::TrainingRun;
use vigil::ml::mlflow::{Mlflow, MlflowConfig};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("training_epoch_3_values");
    let values = [("loss", 0.25), ("accuracy", 0.91), ("lr", 0.001)];
    let mut epoch = 0u64;

    let mut without = TrainingRun::start("bench", "baseline");
    group.bench_function("without_mlflow", |b| {
        b.iter(|| {
            epoch += 1;
            without.epoch(black_box(epoch), 512, &values);
        })
    });

    // Port 9 (discard) on loopback: connections are refused, the sender retries in the background.
    let mut config = MlflowConfig::new("http://127.0.0.1:9");
    config.system_metrics = None;
    config.handle_signals = false;
    let mlflow = Mlflow::start(config, "bench").expect("sender");
    mlflow.install();
    let mut with = TrainingRun::start("bench", "with-mlflow");
    group.bench_function("with_mlflow", |b| {
        b.iter(|| {
            epoch += 1;
            with.epoch(black_box(epoch), 512, &values);
        })
    });

    let run = mlflow.start_run("bench", "handle", Vec::new());
    group.bench_function("mlflow_share_log_metrics", |b| {
        b.iter(|| {
            epoch += 1;
            run.log_metrics(black_box(epoch), &values);
        })
    });
    group.finish();
    eprintln!(
        "commands dropped because the queue was full (the server never answered): {}",
        mlflow.dropped()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
