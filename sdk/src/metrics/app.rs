//! What ML and backtesting teams measure every day, a line or two each: timings, training runs, backtests and
//! errors.
//!
//! ```no_run
//! use vigil::metrics::app::{TrainingRun, time};
//!
//! let features = time("feature_build", || vec![1.0, 2.0]);
//! let mut run = TrainingRun::start("exp_001", "lightgbm");
//! for epoch in 1..=3u64 {
//!     run.epoch(epoch, 50_000, &[("loss", 0.5 / epoch as f64), ("accuracy", 0.9)]);
//! }
//! run.complete();
//! # drop(features);
//! ```

use std::error::Error;
use std::future::Future;
use std::time::{Duration, Instant};

use opentelemetry::trace::Status;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{gauge, increment, record_seconds};

/// Runs `f` and records how long it took in the histogram `name` (seconds; exported to Prometheus as
/// `<name>_seconds`).
pub fn time<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = f();
    record_seconds(name, started.elapsed(), &[]);
    result
}

/// [`time`], inside a span named `name` (so the timing also appears in the trace).
pub fn time_span<T>(name: &str, f: impl FnOnce() -> T) -> T {
    tracing::info_span!("timed", otel.name = name).in_scope(|| time(name, f))
}

/// Awaits `future` and records how long it took in the histogram `name` (seconds).
pub async fn time_async<F: Future>(name: &str, future: F) -> F::Output {
    let started = Instant::now();
    let output = future.await;
    record_seconds(name, started.elapsed(), &[]);
    output
}

/// Records the time from its creation to its drop (or [`Timer::stop`]) in the histogram `name`.
#[must_use = "the time is recorded when the timer is dropped"]
#[derive(Debug)]
pub struct Timer {
    name: String,
    attributes: Vec<(String, String)>,
    started: Instant,
    recorded: bool,
}

/// Starts a [`Timer`] for the histogram `name`.
pub fn timer(name: &str) -> Timer {
    Timer {
        name: name.to_string(),
        attributes: Vec::new(),
        started: Instant::now(),
        recorded: false,
    }
}

impl Timer {
    /// Adds an attribute to the recorded duration.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.attributes.push((key.to_string(), value.to_string()));
        self
    }

    /// Records now and returns the duration.
    pub fn stop(mut self) -> Duration {
        self.record()
    }

    fn record(&mut self) -> Duration {
        let elapsed = self.started.elapsed();
        if !self.recorded {
            self.recorded = true;
            let attributes: Vec<(&str, &str)> = self
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            record_seconds(&self.name, elapsed, &attributes);
        }
        elapsed
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.record();
    }
}

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
    mlflow: Option<crate::mlflow::RunHandle>,
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
            mlflow: crate::mlflow::current().map(|mlflow| {
                mlflow.start_run(
                    experiment_id,
                    model,
                    vec![crate::mlflow::KeyValue::new("model", model)],
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

    fn finish(&mut self, status: &str, mlflow_status: crate::mlflow::RunStatus) {
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
        self.finish("completed", crate::mlflow::RunStatus::Finished);
    }

    /// The run failed because of `error` (reported with [`report_error`]).
    pub fn fail(mut self, error: &(dyn Error + 'static)) {
        report_error(error);
        self.finish("failed", crate::mlflow::RunStatus::Failed);
    }
}

impl Drop for TrainingRun {
    fn drop(&mut self) {
        // Unwinding from a panic failed the run; a run merely abandoned was stopped from outside.
        let mlflow_status = if std::thread::panicking() {
            crate::mlflow::RunStatus::Failed
        } else {
            crate::mlflow::RunStatus::Killed
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
    if let Some(mlflow) = crate::mlflow::current() {
        let run = mlflow.start_run(
            "backtests",
            strategy,
            vec![crate::mlflow::KeyValue::new("strategy", strategy)],
        );
        let mut values = vec![
            ("duration_seconds", duration.as_secs_f64()),
            ("trades", trades as f64),
            ("pnl", pnl),
        ];
        values.extend_from_slice(results);
        run.log_metrics(0, &values);
        run.end(crate::mlflow::RunStatus::Finished);
    }
}

/// The short type name of an error (`std::io::Error` → `Error`, kept whole when generic), for `error.type`.
fn short_type_name(full: &str) -> &str {
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Logs `error` at ERROR with its chain of causes and a backtrace, marks the current span as failed, and
/// counts it in `errors{error.type}` (the concrete type's name).
pub fn report_error<E: Error + ?Sized + 'static>(error: &E) {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let kind = short_type_name(std::any::type_name::<E>());
    // `exception.stacktrace` is OpenTelemetry's name: one field in JSON and OTLP, indented lines on a console.
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(error.type = kind, error.chain = %chain, exception.stacktrace = %backtrace, "{chain}");
    } else {
        tracing::error!(error.type = kind, error.chain = %chain, "{chain}");
    }
    tracing::Span::current().set_status(Status::error(chain));
    increment("errors", 1, &[("error.type", kind)]);
}

/// Installs a panic hook that logs every panic at CRITICAL with its location and backtrace, marks the current
/// span as failed and counts it in `errors{error.type="panic"}`, then runs the hook that was there before.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::force_capture();
        crate::critical!(panic.location = %location, exception.stacktrace = %backtrace, "panic: {message}");
        tracing::Span::current().set_status(Status::error(format!("panic: {message}")));
        increment("errors", 1, &[("error.type", "panic")]);
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_named_briefly() {
        assert_eq!(short_type_name("std::io::error::Error"), "Error");
        assert_eq!(short_type_name("my_crate::LoadError"), "LoadError");
        assert_eq!(
            short_type_name("core::num::error::ParseIntError"),
            "ParseIntError"
        );
        assert_eq!(short_type_name("Box<dyn core::error::Error>"), "Box");
    }
}
