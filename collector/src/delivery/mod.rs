//! Delivering to a backend, shared by exporters and the alerting connector's channels: how a failed attempt is
//! classified ([`ExportError`]), how retries are spaced ([`RetrySettings`], [`Backoff`]), and the HTTP client
//! that POSTs with them ([`http`]).

pub mod http;

use std::time::Duration;

// tokio's clock, so retries follow a paused test clock like the rest of the runtime.
use tokio::time::Instant;

use rand::Rng;
use serde::Deserialize;

use crate::component::Checker;

/// Why an export attempt failed, which decides whether it is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportError {
    /// Worth retrying (network error, 429/502/503/504, gRPC UNAVAILABLE…), after at least `retry_after` when
    /// the backend said so.
    Retryable {
        /// What happened.
        message: String,
        /// The backend's `Retry-After` / `RetryInfo`, if any.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (authentication, a refused configuration…); the batch is dropped and counted.
    Permanent {
        /// What happened.
        message: String,
    },
    /// The payload itself is at fault: the batch does not decode, or the backend said it is malformed (HTTP
    /// 400, gRPC `INVALID_ARGUMENT`). A batch of several requests is then sent again one request at a time,
    /// so one bad request costs only its own items (counted as dropped with reason `undecodable`).
    Undecodable {
        /// What happened.
        message: String,
    },
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Retryable { message, .. }
            | ExportError::Permanent { message }
            | ExportError::Undecodable { message } => f.write_str(message),
        }
    }
}

/// A successful export; the backend may still have rejected some items (an OTLP partial success).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// Items the backend said it rejected; they are counted as dropped and never retried.
    pub rejected: u64,
    /// The backend's explanation, when it rejected some (or why some could not be read).
    pub message: String,
    /// Items the exporter itself could not read (a request of the batch that does not decode): counted as
    /// dropped with reason `undecodable` and never retried, while the rest of the batch counts as sent. For
    /// exporters that read each request of a batch on its own (a connector), instead of failing the batch.
    pub undecodable: u64,
}

/// `retry_on_failure`: exponential backoff with jitter for retryable failures.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Retry at all; when off, a failed batch is dropped (and counted) at once.
    pub enabled: bool,
    /// Wait before the first retry.
    #[serde(with = "crate::component::duration")]
    pub initial_interval: Duration,
    /// Longest wait between retries.
    #[serde(with = "crate::component::duration")]
    pub max_interval: Duration,
    /// Give up on a batch after this long (then it is dropped and counted); `0s` retries until shutdown.
    #[serde(with = "crate::component::duration")]
    pub max_elapsed_time: Duration,
    /// Growth of the wait after each retry.
    pub multiplier: f64,
    /// Random spread of each wait, as a fraction (0.5 = ±50%).
    pub randomization_factor: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

impl RetrySettings {
    /// Checks what serde cannot; problems are reported under `path.retry_on_failure`.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.multiplier < 1.0 {
            check.error(
                &format!("{path}.retry_on_failure.multiplier"),
                "must be at least 1.0",
            );
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            check.error(
                &format!("{path}.retry_on_failure.randomization_factor"),
                "must be between 0 and 1",
            );
        }
        if self.initial_interval.is_zero() && self.enabled {
            check.error(
                &format!("{path}.retry_on_failure.initial_interval"),
                "must be longer than 0s",
            );
        }
    }
}

/// Exponential backoff with jitter for one item, by `retry_on_failure`; honours the backend's retry hint.
pub struct Backoff<'a> {
    settings: &'a RetrySettings,
    started: Instant,
    interval: Duration,
}

impl<'a> Backoff<'a> {
    /// Starts the clock.
    pub fn new(settings: &'a RetrySettings) -> Self {
        Backoff {
            settings,
            started: Instant::now(),
            interval: settings.initial_interval,
        }
    }

    /// How long to wait before the next attempt, or `None` when retries are off or out of time.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let wait = retry_after
            .unwrap_or_default()
            .max(jitter(self.interval, self.settings.randomization_factor));
        let limit = self.settings.max_elapsed_time;
        let out_of_time = !limit.is_zero() && self.started.elapsed() + wait > limit;
        if !self.settings.enabled || out_of_time {
            return None;
        }
        self.interval = next_interval(self.interval, self.settings);
        Some(wait)
    }
}

fn next_interval(current: Duration, retry: &RetrySettings) -> Duration {
    current.mul_f64(retry.multiplier).min(retry.max_interval)
}

/// `interval` spread uniformly by ±`factor`, so many clients retrying together do not stay in step.
fn jitter(interval: Duration, factor: f64) -> Duration {
    if factor <= 0.0 {
        return interval;
    }
    let spread = rand::rng().random_range(-factor..=factor);
    interval.mul_f64((1.0 + spread).max(0.0))
}
