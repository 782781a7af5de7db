//! What every service measures, a line or two each: timings and errors. Training runs and backtests are in
//! [`crate::ml`].
//!
//! ```no_run
//! use vigil::metrics::app::time;
//!
//! let features = time("feature_build", || vec![1.0, 2.0]);
//! # drop(features);
//! ```

use std::error::Error;
use std::future::Future;
use std::time::{Duration, Instant};

use opentelemetry::trace::Status;
use opentelemetry::trace::TraceContextExt as _;

use super::{increment, record_seconds};

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
    crate::trace::current_context()
        .span()
        .set_status(Status::error(chain));
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
        crate::trace::current_context()
            .span()
            .set_status(Status::error(format!("panic: {message}")));
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
