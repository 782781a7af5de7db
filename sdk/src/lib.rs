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
//! Modules by concern: [`log`] (formatters, async writer, rotating file), [`trace`] (spans to OpenTelemetry),
//! [`metrics`] (one-line instruments), [`export`] (OTLP over gRPC or HTTP), [`propagation`] (W3C context, HTTP server layer),
//! [`config`] (the YAML logging config). Configuration precedence for levels: `RUST_LOG`, then
//! [`Builder::filter`], then the config file, then INFO; exporters follow the standard `OTEL_*` variables.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod context;
pub mod export;
pub mod health;
pub mod log;
pub mod mask;
pub mod metrics;
pub mod mlflow;
pub mod propagation;
pub mod sampling;
pub mod system;
pub mod trace;

/// The pinned OpenTelemetry crates Vigil is built on, so applications use the same versions.
pub use {opentelemetry, opentelemetry_sdk, tracing};

pub use metrics::app::{install_panic_hook, report_error, time, time_async, time_span};

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use config::logging::{Format, Handler, LoggingConfig, Sink};
use log::clock::{Clock, SystemClock};
use log::file::{FileOptions, RotatingFile};
use log::json::JsonLayer;
use log::text::TextLayer;
use log::writer::{AsyncWriter, FullPolicy};
use mask::MaskConfig;

/// Builds an `opentelemetry-otlp` exporter over the signal's transport. The HTTP client is hyper's, created inside
/// the SDK's own export runtime, so it never looks for a reactor on a thread that has none.
macro_rules! otlp_exporter {
    ($builder:expr, $transport:expr, $signal:literal) => {{
        let endpoint =
            export::endpoint_without_scheme($signal, $transport, |name| std::env::var(name).ok());
        match ($transport.http_protocol(), endpoint) {
            (None, None) => $builder.with_tonic().build(),
            (None, Some(endpoint)) => $builder.with_tonic().with_endpoint(endpoint).build(),
            (Some(protocol), None) => $builder.with_http().with_protocol(protocol).build(),
            (Some(protocol), Some(endpoint)) => $builder
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(endpoint)
                .build(),
        }
    }};
}

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
    #[error("{0}")]
    Config(String),
    /// The masking config is invalid (a bad rule pattern, `hash` without a key).
    #[error("masking config: {0}")]
    Mask(#[from] mask::MaskError),
    /// An `OTEL_*` variable has a value Vigil does not support.
    #[error("{0}")]
    Environment(String),
    /// The MLflow sender could not start (a tracking URI that is not http(s)).
    #[error("MLflow: {0}")]
    Mlflow(#[from] mlflow::MlflowError),
    /// An OTLP exporter could not be built (bad endpoint, TLS setup).
    #[error("OTLP {signal} exporter: {reason}")]
    Exporter {
        /// `traces`, `logs` or `metrics`.
        signal: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Flushes and shuts telemetry down when dropped (bounded by a timeout; it never hangs).
#[must_use = "telemetry is shut down when the guard is dropped"]
pub struct Guard {
    writers: Vec<Arc<AsyncWriter>>,
    tracer_provider: SdkTracerProvider,
    logger_provider: Option<SdkLoggerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    runtime: Option<ExportRuntime>,
    _dropped_metric: Option<opentelemetry::metrics::ObservableCounter<u64>>,
    _mask_metric: Option<opentelemetry::metrics::ObservableCounter<u64>>,
    _suppressed_metric: Option<opentelemetry::metrics::ObservableCounter<u64>>,
    _export_failures_metric: Option<opentelemetry::metrics::ObservableCounter<u64>>,
    export_reports: Vec<Arc<export::ExportReport>>,
    masker: Option<mask::Masker>,
    system_metrics: Option<system::SystemMetrics>,
    mlflow: Option<mlflow::Mlflow>,
    timeout: Duration,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Guard {
    /// Waits until every log line so far is written to the file and every span, log record and metric is
    /// handed to the collector (each at most the shutdown timeout); returns whether all of it was.
    pub fn flush(&self) -> bool {
        let file = self.writers.iter().all(|w| w.flush(self.timeout));
        let traces = self.tracer_provider.force_flush().is_ok();
        let logs = self
            .logger_provider
            .as_ref()
            .is_none_or(|p| p.force_flush().is_ok());
        let metrics = self
            .meter_provider
            .as_ref()
            .is_none_or(|p| p.force_flush().is_ok());
        let mlflow = self.mlflow.as_ref().is_none_or(|m| m.flush(self.timeout));
        file && traces && logs && metrics && mlflow
    }

    /// The meter provider exporting over OTLP, when metrics export is on.
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.meter_provider.as_ref()
    }

    fn shutdown_now(&mut self) {
        // Stop collecting before the meter provider's last export.
        drop(self.system_metrics.take());
        for writer in self.writers.drain(..) {
            writer.shutdown(self.timeout);
        }
        // After the writers: the MLflow log handler's last lines are queued by then.
        if let Some(mlflow) = self.mlflow.take() {
            if !mlflow.shutdown(self.timeout) {
                eprintln!(
                    "vigil: not everything reached MLflow within {} s",
                    self.timeout.as_secs_f64()
                );
            }
            let dropped = mlflow.dropped();
            if dropped > 0 {
                eprintln!(
                    "vigil: {dropped} MLflow value(s) or log line(s) were dropped during this run"
                );
            }
        }
        let _ = self.tracer_provider.shutdown_with_timeout(self.timeout);
        if let Some(provider) = self.logger_provider.take() {
            let _ = provider.shutdown_with_timeout(self.timeout);
        }
        if let Some(provider) = self.meter_provider.take() {
            let _ = provider.shutdown_with_timeout(self.timeout);
        }
        drop(self.runtime.take());
        // The last word on what never reached the collector (the warnings during the run were rate-limited).
        for report in &self.export_reports {
            let failed = report.failed();
            if failed > 0 {
                eprintln!(
                    "vigil: {failed} {} export(s) failed during this run; their data did not reach {}",
                    report.signal(),
                    report.endpoint()
                );
            }
        }
        self.export_reports.clear();
    }

    /// OTLP exports that failed so far (batches of spans, log records or metrics that did not reach the
    /// collector), by signal.
    pub fn export_failures(&self) -> Vec<(&'static str, u64)> {
        self.export_reports
            .iter()
            .map(|report| (report.signal(), report.failed()))
            .collect()
    }

    /// Log lines dropped because the writer could not keep up (only with [`FullPolicy::Drop`]).
    pub fn dropped_log_records(&self) -> u64 {
        self.writers.iter().map(|w| w.dropped()).sum()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Shutting down blocks for at most the timeout; on a multi-threaded Tokio worker, tell the runtime so
        // other tasks move to other workers meanwhile.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.shutdown_now());
            }
            _ => self.shutdown_now(),
        }
    }
}

/// The resource every signal of this process carries: `service.name` (code, or `OTEL_SERVICE_NAME`, or a
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`), `service.version` when given, `service.instance.id` (one per
/// process: the collector's Prometheus exporter makes it the `instance` label), `host.name`, `process.pid`, the
/// SDK's `telemetry.sdk.*`, and every attribute of `OTEL_RESOURCE_ATTRIBUTES`, which win over the ones found here.
fn process_resource(service_name: &str, version: Option<&str>) -> opentelemetry_sdk::Resource {
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::resource::{
        EnvResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector,
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()));
    let pid = std::process::id();
    let mut found = vec![
        KeyValue::new("service.instance.id", instance_id(pid, host.as_deref())),
        KeyValue::new("process.pid", i64::from(pid)),
    ];
    if let Some(host) = host {
        found.push(KeyValue::new("host.name", host));
    }
    if let Some(version) = version {
        found.push(KeyValue::new("service.version", version.to_string()));
    }
    let builder = opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(found)
        .with_detectors(&[
            Box::new(SdkProvidedResourceDetector),
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    let named_by_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
        attributes
            .split(',')
            .any(|kv| kv.trim().starts_with("service.name="))
    });
    if std::env::var("OTEL_SERVICE_NAME").is_ok() || !named_by_attributes {
        builder.with_service_name(service_name.to_string()).build()
    } else {
        builder.build()
    }
}

/// A UUID-shaped id for this process, different for every start: a hash of its pid, host and start time.
fn instance_id(pid: u32, host: Option<&str>) -> String {
    use sha2::Digest as _;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut hasher = sha2::Sha256::new();
    hasher.update(pid.to_le_bytes());
    hasher.update(host.unwrap_or_default().as_bytes());
    hasher.update(started.to_le_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Version 4 and variant bits, so tools that parse it as a UUID accept it.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The SDK's own export runtime. Dropping a Tokio runtime blocks, which panics inside another runtime's task
/// ("Cannot drop a runtime in a context where blocking is not allowed") and would hide the real error of a
/// failed `build` under `#[tokio::main]`; this one is always shut down in the background.
struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Configures telemetry in code; see [`init`] for the one-line form.
pub struct Builder {
    service_name: String,
    filter: Option<String>,
    console: bool,
    json_file: Option<FileOptions>,
    json_stderr: bool,
    logging: Option<LoggingConfig>,
    on_full: FullPolicy,
    buffer_bytes: usize,
    clock: Arc<dyn Clock>,
    shutdown_timeout: Duration,
    service_version: Option<String>,
    otlp: bool,
    mask: Option<MaskConfig>,
    sample_ratio: Option<f64>,
    log_sampling: Option<log::sampling::LogSamplingConfig>,
    system_metrics: Option<system::SystemMetricsConfig>,
    mlflow: Option<mlflow::MlflowConfig>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("service_name", &self.service_name)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// `service.version` on every signal, e.g. `.service_version(env!("CARGO_PKG_VERSION"))`.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }

    /// Telemetry for `service_name` (overridden by `OTEL_SERVICE_NAME`): console logs at INFO, no file.
    pub fn new(service_name: impl Into<String>) -> Self {
        Builder {
            service_name: std::env::var("OTEL_SERVICE_NAME")
                .unwrap_or_else(|_| service_name.into()),
            filter: None,
            console: true,
            json_file: std::env::var_os("VIGIL_LOG_FILE").map(FileOptions::new),
            json_stderr: false,
            logging: None,
            on_full: FullPolicy::Block,
            buffer_bytes: 8 << 20,
            clock: Arc::new(SystemClock),
            shutdown_timeout: Duration::from_secs(5),
            service_version: None,
            otlp: true,
            mask: None,
            sample_ratio: None,
            log_sampling: None,
            system_metrics: Some(system::SystemMetricsConfig::default()),
            mlflow: None,
        }
    }

    /// Export traces, logs and metrics over OTLP (on by default; each signal follows
    /// `OTEL_{TRACES,LOGS,METRICS}_EXPORTER`, the protocol `OTEL_EXPORTER_OTLP_PROTOCOL` — see
    /// [`export::Transport`] — and the endpoint `OTEL_EXPORTER_OTLP_ENDPOINT`, default `http://localhost:4317`
    /// for gRPC and `http://localhost:4318` for HTTP).
    pub fn otlp(mut self, enabled: bool) -> Self {
        self.otlp = enabled;
        self
    }

    /// How secrets and personal data are masked before any sink sees them. Masking is on by default with
    /// [`MaskConfig::default`]; this replaces it (and wins over a logging config's `mask:` section). Turn masking
    /// off explicitly with [`Builder::without_masking`].
    pub fn mask(mut self, config: MaskConfig) -> Self {
        self.mask = Some(config);
        self
    }

    /// Head sampling: keep this fraction (0–1) of new traces, decided by trace id so every service and the
    /// collector agree, and recorded in the trace state (`ot=th:…`); child spans follow their parent's
    /// decision. `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` win when set. Default: keep everything.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = Some(ratio.clamp(0.0, 1.0));
        self
    }

    /// Samples high-volume log call sites (see [`log::sampling`]); wins over a logging config's `sampling:`
    /// section. Default: no log sampling.
    pub fn log_sampling(mut self, config: log::sampling::LogSamplingConfig) -> Self {
        self.log_sampling = Some(config);
        self
    }

    /// Records each [`metrics::app::TrainingRun`] as an MLflow run, with log records at `config.log_level` and
    /// above as its log artifact (see [`mlflow`]). `None` (what [`mlflow::MlflowConfig::from_env`] gives when
    /// `MLFLOW_TRACKING_URI` is unset) leaves MLflow off. An `mlflow` handler in the logging config does the same.
    pub fn mlflow(mut self, config: impl Into<Option<mlflow::MlflowConfig>>) -> Self {
        self.mlflow = config.into();
        self
    }

    /// System, process and GPU metrics (see [`system`]), collected every `config.interval` and exported with
    /// the other metrics. On by default (every 10 s) whenever metrics are exported.
    pub fn system_metrics(mut self, config: system::SystemMetricsConfig) -> Self {
        self.system_metrics = Some(config);
        self
    }

    /// No system, process or GPU metrics.
    pub fn without_system_metrics(mut self) -> Self {
        self.system_metrics = None;
        self
    }

    /// Turns masking off: log lines, log records and spans leave the process as written.
    pub fn without_masking(self) -> Self {
        self.mask(MaskConfig {
            enabled: false,
            ..MaskConfig::default()
        })
    }

    /// Level filter in `RUST_LOG` syntax (`info`, `info,my_crate::db=debug`); `RUST_LOG` wins when set.
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Human-readable logs on stderr (colour on a terminal); on by default.
    pub fn console(mut self, enabled: bool) -> Self {
        self.console = enabled;
        self
    }

    /// JSON lines into a rotating file (also set by `VIGIL_LOG_FILE`).
    pub fn json_file(mut self, options: FileOptions) -> Self {
        self.json_file = Some(options);
        self
    }

    /// Handlers, formatters and levels from a logging config (see [`config::logging`]); replaces
    /// [`Builder::console`], [`Builder::json_file`] and [`Builder::json_stderr`]. `RUST_LOG` and
    /// [`Builder::filter`] still override its levels.
    pub fn logging_config(mut self, config: LoggingConfig) -> Self {
        self.logging = Some(config);
        self
    }

    /// JSON lines on stderr instead of a file (for containers whose logs are collected from stderr); takes
    /// precedence over [`Builder::json_file`].
    pub fn json_stderr(mut self, enabled: bool) -> Self {
        self.json_stderr = enabled;
        self
    }

    /// What logging does when the writer falls behind: block (default) or drop and count.
    pub fn on_full(mut self, policy: FullPolicy) -> Self {
        self.on_full = policy;
        self
    }

    /// Bytes of formatted lines that may wait for the writer thread (default 8 MiB).
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// The clock stamping lines and driving daily rotation (tests inject a manual one).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Longest time the guard waits for buffered telemetry at shutdown (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Builds the subscriber without installing it (for `tracing::subscriber::with_default`).
    pub fn build(self) -> Result<(impl tracing::Subscriber + Send + Sync, Guard), Error> {
        let filter_text = std::env::var("RUST_LOG")
            .ok()
            .filter(|f| !f.is_empty())
            .or(self.filter.clone())
            .or(self.logging.as_ref().map(|c| c.filter.clone()))
            .unwrap_or_else(|| "info".into());
        let filter = EnvFilter::try_new(&filter_text).map_err(|e| Error::Filter {
            filter: filter_text.clone(),
            reason: e.to_string(),
        })?;
        let mask_config = self
            .mask
            .clone()
            .or_else(|| self.logging.as_ref().and_then(|c| c.mask.clone()))
            .unwrap_or_default();
        let masker = if mask_config.enabled {
            Some(mask::Masker::new(&mask_config)?)
        } else {
            None
        };
        let disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let signals = if self.otlp {
            export::Signals::from_env(|name| std::env::var(name).ok())
                .map_err(Error::Environment)?
        } else {
            export::Signals::NONE
        };
        let resource = process_resource(&self.service_name, self.service_version.as_deref());
        let runtime = if signals.any() {
            Some(ExportRuntime(Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("vigil-export")
                    .enable_all()
                    .build()?,
            )))
        } else {
            None
        };
        let exporter_error = |signal: &'static str| {
            move |e: opentelemetry_otlp::ExporterBuildError| Error::Exporter {
                signal,
                reason: e.to_string(),
            }
        };
        let mut tracer_provider = SdkTracerProvider::builder().with_resource(resource.clone());
        let sampler = sampling::sampler_from_env(|name| std::env::var(name).ok())
            .map_err(Error::Environment)?;
        match (sampler, self.sample_ratio) {
            (Some(sampler), _) => tracer_provider = tracer_provider.with_sampler(sampler),
            (None, Some(ratio)) => {
                tracer_provider =
                    tracer_provider.with_sampler(opentelemetry_sdk::trace::ParentBasedSampler::new(
                        sampling::ConsistentSampler::new(ratio),
                    ))
            }
            (None, None) => {}
        }
        let mut logger_provider = None;
        let mut meter_provider = None;
        let mut export_reports = Vec::new();
        let mut report = |signal: &'static str, transport: export::Transport| {
            let report = Arc::new(export::ExportReport::new(signal, transport, |name| {
                std::env::var(name).ok()
            }));
            export_reports.push(report.clone());
            report
        };
        if let Some(runtime) = runtime.as_ref().and_then(|r| r.0.as_ref()) {
            let handle = runtime.handle().clone();
            let _entered = runtime.enter();
            if let Some(transport) = signals.traces {
                let exporter = otlp_exporter!(
                    opentelemetry_otlp::SpanExporter::builder(),
                    transport,
                    "traces"
                )
                .map_err(exporter_error("traces"))?;
                let exporter =
                    export::OnRuntime::new(exporter, handle.clone(), report("traces", transport));
                tracer_provider = match &masker {
                    Some(masker) => tracer_provider.with_batch_exporter(
                        mask::MaskingSpanExporter::new(exporter, masker.clone()),
                    ),
                    None => tracer_provider.with_batch_exporter(exporter),
                };
            }
            if let Some(transport) = signals.logs {
                let exporter = otlp_exporter!(
                    opentelemetry_otlp::LogExporter::builder(),
                    transport,
                    "logs"
                )
                .map_err(exporter_error("logs"))?;
                logger_provider = Some(
                    SdkLoggerProvider::builder()
                        .with_resource(resource.clone())
                        .with_batch_exporter(export::OnRuntime::new(
                            exporter,
                            handle.clone(),
                            report("logs", transport),
                        ))
                        .build(),
                );
            }
            if let Some(transport) = signals.metrics {
                let exporter = otlp_exporter!(
                    opentelemetry_otlp::MetricExporter::builder(),
                    transport,
                    "metrics"
                )
                .map_err(exporter_error("metrics"))?;
                let interval = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
                    .ok()
                    .and_then(|ms| ms.trim().parse::<u64>().ok())
                    .map_or(Duration::from_secs(60), Duration::from_millis);
                let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(
                    export::OnRuntime::new(exporter, handle, report("metrics", transport)),
                )
                .with_interval(interval)
                .build();
                meter_provider = Some(
                    SdkMeterProvider::builder()
                        .with_resource(resource.clone())
                        .with_reader(reader)
                        .with_view(metrics::one_liner_view)
                        .build(),
                );
            }
        }
        let tracer_provider = tracer_provider.build();
        let tracer = tracer_provider.tracer("vigil");
        let otel = (!disabled)
            .then(|| trace::exported_spans(tracing_opentelemetry::layer().with_tracer(tracer)));
        let handlers = self.handlers(signals.logs.is_some());
        let mlflow = match self.mlflow_config(&handlers) {
            Some(config) => Some(mlflow::Mlflow::start(config, &self.service_name)?),
            None => None,
        };
        let mut writers = Vec::new();
        let mut layers: Vec<BoxedLayer> = Vec::new();
        for handler in &handlers {
            let layer = match (&handler.sink, &handler.format) {
                (Sink::Otlp, _) => match &logger_provider {
                    Some(provider) => {
                        boxed(log::otlp::OtlpLogLayer::new(provider).with_masker(masker.clone()))
                    }
                    None => continue,
                },
                (Sink::Mlflow(_), _) if mlflow.is_none() => continue,
                (sink, format) => {
                    let writer = Arc::new(match sink {
                        Sink::Mlflow(_) => AsyncWriter::start(
                            mlflow.as_ref().map_or_else(
                                || unreachable!("checked above"),
                                mlflow::Mlflow::line_sink,
                            ),
                            self.buffer_bytes,
                            self.on_full,
                            self.clock.clone(),
                        )?,
                        Sink::File(options) => AsyncWriter::start(
                            RotatingFile::open(options.clone(), self.clock.clone())?,
                            self.buffer_bytes,
                            self.on_full,
                            self.clock.clone(),
                        )?,
                        Sink::Stdout => AsyncWriter::start(
                            log::writer::WriteSink(std::io::stdout()),
                            self.buffer_bytes,
                            self.on_full,
                            self.clock.clone(),
                        )?,
                        _ => AsyncWriter::start(
                            log::writer::WriteSink(std::io::stderr()),
                            self.buffer_bytes,
                            self.on_full,
                            self.clock.clone(),
                        )?,
                    });
                    writers.push(writer.clone());
                    let terminal = match sink {
                        Sink::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
                        Sink::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
                        _ => false,
                    };
                    match format {
                        Format::Text(pattern) => boxed(
                            TextLayer::new(pattern.clone(), writer, self.clock.clone())
                                .with_masker(masker.clone()),
                        ),
                        Format::Console => boxed(
                            TextLayer::new(console_pattern(), writer, self.clock.clone())
                                .with_colour(terminal)
                                .with_masker(masker.clone()),
                        ),
                        Format::Json => boxed(
                            JsonLayer::new(writer, self.clock.clone()).with_masker(masker.clone()),
                        ),
                    }
                }
            };
            layers.push(match handler.level {
                Some(level) => boxed(<BoxedLayer as tracing_subscriber::Layer<
                    tracing_subscriber::Registry,
                >>::with_filter(
                    layer,
                    tracing_subscriber::filter::LevelFilter::from_level(level.tracing()),
                )),
                None => layer,
            });
        }
        // Dropped log lines are counted as a metric too, so a dashboard or alert sees them.
        let dropped_metric = match (&meter_provider, writers.is_empty()) {
            (Some(provider), false) => {
                use opentelemetry::metrics::MeterProvider as _;
                let counted = writers.clone();
                Some(
                    provider
                        .meter("vigil")
                        .u64_observable_counter("vigil.log.dropped_records")
                        .with_description(
                            "Log records dropped because the log writer could not keep up",
                        )
                        .with_callback(move |observer| {
                            observer.observe(counted.iter().map(|w| w.dropped()).sum(), &[]);
                        })
                        .build(),
                )
            }
            _ => None,
        };
        // Replacements per detector or rule, so users see what masking catches (and that it runs).
        let mask_metric = match (&meter_provider, &masker) {
            (Some(provider), Some(masker)) => {
                use opentelemetry::metrics::MeterProvider as _;
                let masker = masker.clone();
                Some(
                    provider
                        .meter("vigil")
                        .u64_observable_counter("vigil.mask.replacements")
                        .with_description(
                            "Values masked before leaving the process, by detector or rule",
                        )
                        .with_callback(move |observer| {
                            for (detector, count) in masker.replacements() {
                                observer.observe(
                                    count,
                                    &[opentelemetry::KeyValue::new(
                                        "detector",
                                        detector.to_string(),
                                    )],
                                );
                            }
                        })
                        .build(),
                )
            }
            _ => None,
        };
        let sampling = self
            .log_sampling
            .clone()
            .or_else(|| self.logging.as_ref().and_then(|c| c.sampling.clone()))
            .map(|config| log::sampling::LogSampler::new(config, self.clock.clone()));
        let suppressed_metric = match (&meter_provider, &sampling) {
            (Some(provider), Some(sampler)) => {
                use opentelemetry::metrics::MeterProvider as _;
                let suppressed = sampler.suppressed();
                Some(
                    provider
                        .meter("vigil")
                        .u64_observable_counter("vigil.log.sampled_out_records")
                        .with_description("Log records left out by log sampling")
                        .with_callback(move |observer| {
                            observer.observe(
                                suppressed.load(std::sync::atomic::Ordering::Relaxed),
                                &[],
                            );
                        })
                        .build(),
                )
            }
            _ => None,
        };
        let export_failures_metric = match &meter_provider {
            Some(provider) if !export_reports.is_empty() => {
                use opentelemetry::metrics::MeterProvider as _;
                let reports = export_reports.clone();
                Some(
                    provider
                        .meter("vigil")
                        .u64_observable_counter("vigil.export.failures")
                        .with_description(
                            "OTLP exports that failed, by signal: their data did not reach the collector",
                        )
                        .with_callback(move |observer| {
                            for report in &reports {
                                observer.observe(
                                    report.failed(),
                                    &[opentelemetry::KeyValue::new("signal", report.signal())],
                                );
                            }
                        })
                        .build(),
                )
            }
            _ => None,
        };
        let system_metrics = match (&meter_provider, &self.system_metrics) {
            (Some(provider), Some(config)) => {
                use opentelemetry::metrics::MeterProvider as _;
                Some(
                    system::SystemMetrics::start(&provider.meter("vigil.system"), config.clone())
                        .map_err(|e| Error::Exporter {
                        signal: "metrics",
                        reason: format!("cannot start the system metrics thread: {e}"),
                    })?,
                )
            }
            _ => None,
        };
        let subscriber = tracing_subscriber::registry()
            .with(layers)
            .with(sampling)
            .with(filter)
            .with(otel);
        Ok((
            subscriber,
            Guard {
                writers,
                tracer_provider,
                logger_provider,
                meter_provider,
                runtime,
                _dropped_metric: dropped_metric,
                _mask_metric: mask_metric,
                _suppressed_metric: suppressed_metric,
                _export_failures_metric: export_failures_metric,
                export_reports,
                masker: masker.clone(),
                system_metrics,
                mlflow,
                timeout: self.shutdown_timeout,
            },
        ))
    }

    /// The MLflow settings in effect: the builder's, else an `mlflow` handler's keys over MLflow's variables
    /// (no tracking URI in either: off).
    fn mlflow_config(&self, handlers: &[Handler]) -> Option<mlflow::MlflowConfig> {
        if let Some(config) = &self.mlflow {
            return Some(config.clone());
        }
        let (handler, keys) = handlers.iter().find_map(|h| match &h.sink {
            Sink::Mlflow(keys) => Some((h, keys)),
            _ => None,
        })?;
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut config = mlflow::MlflowConfig::new(
            keys.tracking_uri
                .clone()
                .or_else(|| get("MLFLOW_TRACKING_URI"))?,
        );
        config.experiment = keys
            .experiment_id
            .clone()
            .map(mlflow::Experiment::Id)
            .or_else(|| keys.experiment_name.clone().map(mlflow::Experiment::Name));
        config.run_id = keys.run_id.clone();
        config.apply_env(&get);
        config.log_level = Some(handler.level.map_or(tracing::Level::INFO, |l| l.tracing()));
        config.log_format = match &handler.format {
            Format::Text(pattern) => mlflow::LogFormat::Text(pattern.clone()),
            Format::Json | Format::Console => mlflow::LogFormat::Json,
        };
        Some(config)
    }

    /// The handlers in effect: the config file's, or those set in code.
    fn handlers(&self, otlp_logs: bool) -> Vec<Handler> {
        if let Some(config) = &self.logging {
            return config.handlers.clone();
        }
        let handler = |name: &str, sink: Sink, format: Format| Handler {
            name: name.into(),
            sink,
            format,
            level: None,
        };
        let mut handlers = Vec::new();
        if self.json_stderr {
            handlers.push(handler("json_stderr", Sink::Stderr, Format::Json));
        } else if self.console {
            handlers.push(handler("console", Sink::Stderr, Format::Console));
        }
        if let Some(options) = &self.json_file {
            handlers.push(handler("file", Sink::File(options.clone()), Format::Json));
        }
        if otlp_logs {
            handlers.push(handler("otlp", Sink::Otlp, Format::Json));
        }
        if let Some(config) = self.mlflow.as_ref().filter(|c| c.log_level.is_some()) {
            let format = match &config.log_format {
                mlflow::LogFormat::Json => Format::Json,
                mlflow::LogFormat::Text(pattern) => Format::Text(pattern.clone()),
            };
            handlers.push(Handler {
                level: config.log_level.map(config::logging::Level::from_tracing),
                ..handler("mlflow", Sink::Mlflow(Default::default()), format)
            });
        }
        handlers
    }

    /// Builds and installs the subscriber as the global default.
    pub fn try_init(self) -> Result<Guard, Error> {
        let (subscriber, guard) = self.build()?;
        subscriber
            .try_init()
            .map_err(|_| Error::AlreadyInitialised)?;
        // `opentelemetry::global::meter(…)` and `global::tracer(…)` then reach the exporting providers.
        if let Some(provider) = &guard.meter_provider {
            opentelemetry::global::set_meter_provider(provider.clone());
        }
        opentelemetry::global::set_tracer_provider(guard.tracer_provider.clone());
        metrics::set_masker(guard.masker.clone());
        if let Some(mlflow) = &guard.mlflow {
            mlflow.install();
        }
        propagation::install_from_env().map_err(Error::Environment)?;
        *installed().lock().unwrap_or_else(|p| p.into_inner()) = Some(Installed {
            writers: guard.writers.clone(),
            tracer_provider: guard.tracer_provider.clone(),
            logger_provider: guard.logger_provider.clone(),
            meter_provider: guard.meter_provider.clone(),
            timeout: guard.timeout,
        });
        Ok(guard)
    }
}

/// What [`shutdown`] flushes: handles to the globally installed telemetry.
struct Installed {
    writers: Vec<Arc<AsyncWriter>>,
    tracer_provider: SdkTracerProvider,
    logger_provider: Option<SdkLoggerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    timeout: Duration,
}

fn installed() -> &'static std::sync::Mutex<Option<Installed>> {
    static INSTALLED: std::sync::OnceLock<std::sync::Mutex<Option<Installed>>> =
        std::sync::OnceLock::new();
    INSTALLED.get_or_init(Default::default)
}

/// Flushes and shuts down the telemetry installed by [`init`], [`init_from_file`] or [`Builder::try_init`],
/// each part bounded by the shutdown timeout; for programs that exit without dropping the guard (e.g. through
/// `std::process::exit`). Returns whether everything was delivered. Later telemetry is discarded.
pub fn shutdown() -> bool {
    let Some(installed) = installed().lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return true;
    };
    let mut delivered = true;
    for writer in &installed.writers {
        delivered &= writer.shutdown(installed.timeout);
    }
    delivered &= installed
        .tracer_provider
        .shutdown_with_timeout(installed.timeout)
        .is_ok();
    if let Some(provider) = &installed.logger_provider {
        delivered &= provider.shutdown_with_timeout(installed.timeout).is_ok();
    }
    if let Some(provider) = &installed.meter_provider {
        delivered &= provider.shutdown_with_timeout(installed.timeout).is_ok();
    }
    delivered
}

fn console_pattern() -> log::text::Pattern {
    // A constant that a unit test parses; the fallback only guards against editing it badly.
    log::text::Pattern::parse(log::text::CONSOLE_FORMAT)
        .unwrap_or_else(|_| log::text::Pattern::default())
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

fn boxed<L>(layer: L) -> BoxedLayer
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    Box::new(layer)
}

/// Sets up telemetry from a logging config file (see [`config::logging`] and `configs/logging/default.yaml`);
/// errors name the file, line and column. The service name comes from `OTEL_SERVICE_NAME`, else the file's
/// `service_name`, else the executable's name.
pub fn init_from_file(path: impl AsRef<std::path::Path>) -> Result<Guard, Error> {
    let config = LoggingConfig::from_file(path.as_ref()).map_err(Error::Config)?;
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
