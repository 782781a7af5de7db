//! Training runs and backtests as metrics, and as MLflow runs when MLflow is on.

use std::time::{Duration, Instant};

use std::error::Error;

use crate::metrics::app::report_error;
use crate::metrics::{gauge, increment, record_seconds};

/// The states of [`TrainingRun`]'s `training.status` gauge.
const STATUSES: [&str; 3] = ["running", "completed", "failed"];

/// A training run's metrics, all with `experiment_id` and `model` attributes:
/// `training.status{status}` (a state set: 1 for the current status, 0 for the others), `training.epoch`,
/// `training.epochs` and `training.steps` (counters), `training.samples`, `training.samples_per_second`,
/// `training.<metric>` for each named value (`training.loss`), and `training.duration` (seconds) at the end.
/// A run dropped without [`TrainingRun::complete`] counts as failed.
///
/// With MLflow on ([`crate::Builder::mlflow`]), the run is also an MLflow run in the experiment named
/// `experiment_id` (unless `MLFLOW_EXPERIMENT_NAME`/`_ID` says otherwise): `model` and [`TrainingRun::params`]
/// as params, each named value at its epoch or step, and its end as `FINISHED` ([`TrainingRun::complete`]),
/// `FAILED` ([`TrainingRun::fail`] or a panic) or `KILLED` (dropped unfinished, or SIGTERM/SIGINT). Every call
/// only queues; nothing waits on the network.
#[derive(Debug)]
pub struct TrainingRun {
    experiment_id: String,
    model: String,
    started: Instant,
    last: Instant,
    finished: bool,
    mlflow: Option<crate::ml::mlflow::RunHandle>,
}

impl TrainingRun {
    /// Starts a run: `training.status{status="running"}` is 1.
    pub fn start(experiment_id: &str, model: &str) -> Self {
        let run = TrainingRun {
            experiment_id: experiment_id.to_string(),
            model: model.to_string(),
            started: Instant::now(),
            last: Instant::now(),
            finished: false,
            mlflow: crate::ml::mlflow::current().map(|mlflow| {
                mlflow.start_run(
                    experiment_id,
                    model,
                    vec![crate::ml::mlflow::KeyValue::new("model", model)],
                )
            }),
        };
        run.status("running");
        run
    }

    /// Records the run's params (hyperparameters, data version…): MLflow params when MLflow is on, and an
    /// INFO log record either way.
    pub fn params(&mut self, params: &[(&str, &str)]) {
        tracing::info!(params = ?params, "training params");
        if let Some(mlflow) = &self.mlflow {
            mlflow.log_params(params);
        }
    }

    /// Sets MLflow tags on the run (nothing without MLflow).
    pub fn tags(&mut self, tags: &[(&str, &str)]) {
        if let Some(mlflow) = &self.mlflow {
            mlflow.set_tags(tags);
        }
    }

    fn attributes(&self) -> [(&str, &str); 2] {
        [
            ("experiment_id", self.experiment_id.as_str()),
            ("model", self.model.as_str()),
        ]
    }

    fn status(&self, current: &str) {
        for status in STATUSES {
            let [experiment, model] = self.attributes();
            gauge(
                "training.status",
                f64::from(u8::from(status == current)),
                &[experiment, model, ("status", status)],
            );
        }
    }

    fn values(&self, step: u64, values: &[(&str, f64)]) {
        for (name, value) in values {
            gauge(&format!("training.{name}"), *value, &self.attributes());
        }
        if let Some(mlflow) = &self.mlflow {
            mlflow.log_metrics(step, values);
        }
    }

    /// An epoch ended after `samples` samples, with these named values (`loss`, `accuracy`, …).
    pub fn epoch(&mut self, epoch: u64, samples: u64, values: &[(&str, f64)]) {
        increment("training.epochs", 1, &self.attributes());
        gauge("training.epoch", epoch as f64, &self.attributes());
        self.samples(samples);
        self.values(epoch, values);
    }

    /// A step ended after `samples` samples, with these named values.
    pub fn step(&mut self, step: u64, samples: u64, values: &[(&str, f64)]) {
        increment("training.steps", 1, &self.attributes());
        gauge("training.step", step as f64, &self.attributes());
        self.samples(samples);
        self.values(step, values);
    }

    fn samples(&mut self, samples: u64) {
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        increment("training.samples", samples, &self.attributes());
        if seconds > 0.0 {
            gauge(
                "training.samples_per_second",
                samples as f64 / seconds,
                &self.attributes(),
            );
        }
    }

    fn finish(&mut self, status: &str, mlflow_status: crate::ml::mlflow::RunStatus) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.status(status);
        if let Some(mlflow) = &self.mlflow {
            mlflow.end(mlflow_status);
        }
        record_seconds(
            "training.duration",
            self.started.elapsed(),
            &self.attributes(),
        );
    }

    /// The run completed.
    pub fn complete(mut self) {
        self.finish("completed", crate::ml::mlflow::RunStatus::Finished);
    }

    /// The run failed because of `error` (reported with [`report_error`]).
    pub fn fail(mut self, error: &(dyn Error + 'static)) {
        report_error(error);
        self.finish("failed", crate::ml::mlflow::RunStatus::Failed);
    }
}

impl Drop for TrainingRun {
    fn drop(&mut self) {
        // Unwinding from a panic failed the run; a run merely abandoned was stopped from outside.
        let mlflow_status = if std::thread::panicking() {
            crate::ml::mlflow::RunStatus::Failed
        } else {
            crate::ml::mlflow::RunStatus::Killed
        };
        self.finish("failed", mlflow_status);
    }
}

/// Records a finished backtest of `strategy`: `backtest.duration` (seconds), `backtest.trades`, `backtest.pnl`
/// and `backtest.<name>` for each named result (`sharpe`, `max_drawdown`), all with the `strategy` attribute.
///
/// With MLflow on, the backtest is also a finished MLflow run named after the strategy in the experiment
/// `backtests` (unless `MLFLOW_EXPERIMENT_NAME`/`_ID` says otherwise): param `strategy`, metrics
/// `duration_seconds`, `trades`, `pnl` and each named result.
pub fn record_backtest(
    strategy: &str,
    duration: Duration,
    trades: u64,
    pnl: f64,
    results: &[(&str, f64)],
) {
    let attributes = [("strategy", strategy)];
    record_seconds("backtest.duration", duration, &attributes);
    increment("backtests", 1, &attributes);
    gauge("backtest.trades", trades as f64, &attributes);
    gauge("backtest.pnl", pnl, &attributes);
    for (name, value) in results {
        gauge(&format!("backtest.{name}"), *value, &attributes);
    }
    if let Some(mlflow) = crate::ml::mlflow::current() {
        let run = mlflow.start_run(
            "backtests",
            strategy,
            vec![crate::ml::mlflow::KeyValue::new("strategy", strategy)],
        );
        let mut values = vec![
            ("duration_seconds", duration.as_secs_f64()),
            ("trades", trades as f64),
            ("pnl", pnl),
        ];
        values.extend_from_slice(results);
        run.log_metrics(0, &values);
        run.end(crate::ml::mlflow::RunStatus::Finished);
    }
}
