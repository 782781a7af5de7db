//! Vigil SDK: production-grade telemetry for a Rust program from one call.
//!
//! ```no_run
//! use tracing::info;
//!
//! let _guard = vigil::Builder::new("trainer")
//!     .json_file(vigil::log::file::FileOptions::new("logs/trainer.jsonl"))
//!     .try_init()
//!     .expect("telemetry set up");
//! let span = tracing::info_span!("training", experiment_id = "exp_001");
//! let _entered = span.enter();
//! info!(model_type = "lightgbm", duration_sec = 125.5, final_loss = 0.234, gpu_used = true, "Training completed");
//! ```
//!
//! writes, in `logs/trainer.jsonl`, one line with typed fields, the span's context and the trace ids:
//!
//! ```text
//! {"timestamp":"…","level":"INFO","target":"trainer","message":"Training completed","model_type":"lightgbm",
//!  "duration_sec":125.5,"final_loss":0.234,"gpu_used":true,"experiment_id":"exp_001","trace_id":"…","span_id":"…"}
//! ```
//!
//! Design decision: events are formatted by the caller into thread-local buffers and appended to one bounded
//! buffer that a writer thread drains ([`log::writer`]), instead of allocating a `Vec` per line and sending it
//! through a channel as `tracing-appender` does; the caller pays a copy and an uncontended lock, the thread pays
//! the I/O.
//!
//! The crate root is [`init`], [`init_from_file`], [`shutdown`], [`Builder`], [`Guard`], [`Error`] and the
//! macros; the rest is in modules by concern: [`log`] (handlers, formats, rotating files, log sampling),
//! [`mask`] (secrets and personal data removed before any sink), [`metrics`] (one-line instruments and
//! timings), [`http`] (`tower` layers for servers and clients: spans, context propagation, RED metrics),
//! [`propagation`] (W3C context in headers), [`ml`] (training runs, backtests, MLflow), `health` (checks and
//! the `/healthz` server), `system` (system, process and GPU metrics) and [`config`] (the YAML logging
//! config). Configuration precedence for levels: `RUST_LOG`, then [`Builder::filter`], then the config file,
//! then INFO; exporters follow the standard `OTEL_*` variables.
//!
//! Cargo features (all on by default but `postgres`): `system` (sysinfo and NVML: the `system` module, MLflow
//! system metrics, the disk and GPU health checks), `otlp` (export over OTLP), `health` (the `health` module)
//! and `postgres` (the PostgreSQL health check). Without `otlp`, spans, logs and metrics stay in the process.
#![warn(missing_docs, unreachable_pub)]

mod builder;
pub mod config;
/// Support for [`context!`]; not an API of its own.
#[doc(hidden)]
pub mod context;
#[cfg(feature = "otlp")]
mod export;
mod field;
mod guard;
#[cfg(feature = "health")]
pub mod health;
pub mod http;
pub mod log;
pub mod mask;
pub mod metrics;
pub mod ml;

pub mod propagation;
/// Consistent probability sampling, shared with the collector's samplers; applications use
/// [`Builder::sample_ratio`] or `OTEL_TRACES_SAMPLER`.
#[doc(hidden)]
pub mod sampling;
#[cfg(feature = "system")]
pub mod system;
/// The span filter between `tracing` and OpenTelemetry; plumbing of [`Builder`].
#[doc(hidden)]
pub mod trace;

pub use builder::Builder;
pub use guard::{Guard, shutdown};

/// The pinned OpenTelemetry crates Vigil is built on, so applications use the same versions.
pub use {opentelemetry, opentelemetry_sdk, tracing};

pub use metrics::app::{install_panic_hook, report_error, time, time_async, time_span};

use config::logging::LoggingConfig;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log file or its directory cannot be created or written.
    #[error("log file: {0}")]
    LogFile(#[from] std::io::Error),
    /// The level filter (builder or `RUST_LOG`) does not parse.
    #[error("log level filter `{filter}` is invalid: {reason}")]
    Filter {
        /// The filter text.
        filter: String,
        /// What the parser said.
        reason: String,
    },
    /// Another global subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialised,
    /// The logging config file is invalid; one `file:line:column: key: problem` line per error.
    #[error(transparent)]
    Config(#[from] config::logging::LoggingConfigError),
    /// The masking config is invalid (a bad rule pattern, `hash` without a key).
    #[error("masking config: {0}")]
    Mask(#[from] mask::MaskError),
    /// An `OTEL_*` variable has a value Vigil does not support.
    #[error("{0}")]
    Environment(String),
    /// `OTEL_PROPAGATORS` names a propagator Vigil does not implement.
    #[error(transparent)]
    Propagator(#[from] propagation::UnsupportedPropagator),
    /// The MLflow sender could not start (a tracking URI that is not http(s)).
    #[error("MLflow: {0}")]
    Mlflow(#[from] ml::mlflow::MlflowError),
    /// An OTLP exporter could not be built (bad endpoint, TLS setup).
    #[error("OTLP {signal} exporter: {reason}")]
    Exporter {
        /// `traces`, `logs` or `metrics`.
        signal: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Sets up telemetry from a logging config file (see [`config::logging`] and `configs/logging/default.yaml`);
/// errors name the file, line and column. The service name comes from `OTEL_SERVICE_NAME`, else the file's
/// `service_name`, else the executable's name.
pub fn init_from_file(path: impl AsRef<std::path::Path>) -> Result<Guard, Error> {
    let config = LoggingConfig::from_file(path.as_ref())?;
    let service_name = config.service_name.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "unknown_service".into())
    });
    Builder::new(service_name).logging_config(config).try_init()
}

/// Sets up telemetry for `service_name` with defaults (console logs at INFO; JSON file when `VIGIL_LOG_FILE` is
/// set; `RUST_LOG` and `OTEL_SERVICE_NAME` honoured). Keep the guard alive for the life of the program.
pub fn init(service_name: impl Into<String>) -> Result<Guard, Error> {
    Builder::new(service_name).try_init()
}
