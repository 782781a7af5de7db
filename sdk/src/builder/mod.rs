//! [`Builder`]: telemetry configured in code, built into one subscriber and its [`Guard`].
//!
//! [`Builder::build`] reads the settings in effect (level filter, masking, sampler), starts the providers
//! ([`otlp`]), one layer per log handler ([`layers`]) and the SDK's own instruments ([`self_metrics`]).

mod layers;
mod level;
mod otlp;
mod resource;
pub(crate) mod self_metrics;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
#[cfg(feature = "system")]
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use self::self_metrics::SelfMetrics;
use crate::config::logging::{Format, Handler, LoggingConfig, Sink};
use crate::guard::{self, Guard};
use crate::log::FullPolicy;
use crate::log::clock::{Clock, SystemClock};
use crate::log::file::FileOptions;
use crate::mask::MaskConfig;
use crate::ml::mlflow;
#[cfg(feature = "system")]
use crate::system;
use crate::{Error, config, log, mask, metrics, propagation, sampling, trace};

/// Configures telemetry in code; see [`crate::init`] for the one-line form.
pub struct Builder {
    service_name: String,
    filter: Option<String>,
    console: bool,
    json_file: Option<FileOptions>,
    json_stderr: bool,
    logging: Option<LoggingConfig>,
    pub(crate) on_full: FullPolicy,
    pub(crate) buffer_bytes: usize,
    pub(crate) clock: Arc<dyn Clock>,
    shutdown_timeout: Duration,
    service_version: Option<String>,
    otlp: bool,
    mask: Option<MaskConfig>,
    sample_ratio: Option<f64>,
    log_sampling: Option<log::sampling::LogSamplingConfig>,
    #[cfg(feature = "system")]
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
            #[cfg(feature = "system")]
            system_metrics: Some(system::SystemMetricsConfig::default()),
            mlflow: None,
        }
    }

    /// Export traces, logs and metrics over OTLP (on by default; each signal follows
    /// `OTEL_{TRACES,LOGS,METRICS}_EXPORTER`, the protocol `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`,
    /// `http/protobuf` or `http/json`) and the endpoint `OTEL_EXPORTER_OTLP_ENDPOINT`, default
    /// `http://localhost:4317` for gRPC and `http://localhost:4318` for HTTP). Without the cargo feature `otlp`
    /// nothing is exported, whatever this says.
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

    /// Records each [`crate::ml::TrainingRun`] as an MLflow run, with log records at `config.log_level` and
    /// above as its log artifact (see [`mlflow`]). `None` (what [`mlflow::MlflowConfig::from_env`] gives when
    /// `MLFLOW_TRACKING_URI` is unset) leaves MLflow off. An `mlflow` handler in the logging config does the same.
    pub fn mlflow(mut self, config: impl Into<Option<mlflow::MlflowConfig>>) -> Self {
        self.mlflow = config.into();
        self
    }

    /// System, process and GPU metrics (see [`system`]), collected every `config.interval` and exported with
    /// the other metrics. On by default (every 10 s) whenever metrics are exported (cargo feature `system`).
    #[cfg(feature = "system")]
    pub fn system_metrics(mut self, config: system::SystemMetricsConfig) -> Self {
        self.system_metrics = Some(config);
        self
    }

    /// No system, process or GPU metrics (cargo feature `system`).
    #[cfg(feature = "system")]
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
        let filter = self.level_filter()?;
        let masker = self.masker()?;
        // The export settings are checked before the sampler's, so a bad `OTEL_*` exporter setting is the
        // error reported when both are wrong.
        let wanted = otlp::wanted(self.otlp)?;
        let resource =
            resource::process_resource(&self.service_name, self.service_version.as_deref());
        let tracer = self.tracer_provider(&resource)?;
        let providers = otlp::start(wanted, tracer, &resource, masker.as_ref())?;
        let disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let tracer = providers.tracer_provider.tracer("vigil");
        let otel = (!disabled)
            .then(|| trace::exported_spans(tracing_opentelemetry::layer().with_tracer(tracer)));
        let handlers = self.handlers(providers.logger_provider.is_some());
        let mlflow = match self.mlflow_config(&handlers) {
            Some(config) => Some(mlflow::Mlflow::start(config, &self.service_name)?),
            None => None,
        };
        let (writers, layers) = layers::log_layers(
            &self,
            &handlers,
            providers.logger_provider.as_ref(),
            mlflow.as_ref(),
            masker.as_ref(),
        )?;
        let sampling = self.log_sampler();
        #[allow(unused_mut)] // without the `otlp` feature there are no export failures to add
        let mut self_metrics = SelfMetrics::register(
            providers.meter_provider.as_ref(),
            &writers,
            masker.as_ref(),
            sampling.as_ref(),
        );
        #[cfg(feature = "otlp")]
        self_metrics
            .add_export_failures(providers.meter_provider.as_ref(), &providers.export_reports);
        #[cfg(feature = "system")]
        let system_metrics = self.start_system_metrics(providers.meter_provider.as_ref())?;
        // The sinks go on top of the filters and the span exporter (see `layers::Inner`).
        let subscriber = tracing_subscriber::registry()
            .with(filter.targets)
            .with(filter.dynamic)
            .with(otel)
            .with(layers::Sinks::new(layers, sampling));
        Ok((
            subscriber,
            Guard {
                writers,
                tracer_provider: providers.tracer_provider,
                logger_provider: providers.logger_provider,
                meter_provider: providers.meter_provider,
                runtime: providers.runtime,
                _self_metrics: self_metrics,
                #[cfg(feature = "otlp")]
                export_reports: providers.export_reports,
                masker,
                #[cfg(feature = "system")]
                system_metrics,
                mlflow,
                timeout: self.shutdown_timeout,
            },
        ))
    }

    /// The level filter: `RUST_LOG`, else [`Builder::filter`], else the logging config's, else INFO.
    fn level_filter(&self) -> Result<level::LevelFilter, Error> {
        let filter_text = std::env::var("RUST_LOG")
            .ok()
            .filter(|f| !f.is_empty())
            .or(self.filter.clone())
            .or(self.logging.as_ref().map(|c| c.filter.clone()))
            .unwrap_or_else(|| "info".into());
        level::LevelFilter::parse(&filter_text)
    }

    /// The masking engine in effect (the builder's config, else the logging config's, else the default), or
    /// `None` when masking is off.
    fn masker(&self) -> Result<Option<mask::Masker>, Error> {
        let config = self
            .mask
            .clone()
            .or_else(|| self.logging.as_ref().and_then(|c| c.mask.clone()))
            .unwrap_or_default();
        Ok(match config.enabled {
            true => Some(mask::Masker::new(&config)?),
            false => None,
        })
    }

    /// The tracer provider's settings: the resource and the sampler (`OTEL_TRACES_SAMPLER` first, then
    /// [`Builder::sample_ratio`]).
    fn tracer_provider(
        &self,
        resource: &opentelemetry_sdk::Resource,
    ) -> Result<opentelemetry_sdk::trace::TracerProviderBuilder, Error> {
        let tracer_provider = SdkTracerProvider::builder().with_resource(resource.clone());
        let sampler = sampling::sampler_from_env(|name| std::env::var(name).ok())
            .map_err(Error::Environment)?;
        Ok(match (sampler, self.sample_ratio) {
            (Some(sampler), _) => tracer_provider.with_sampler(sampler),
            (None, Some(ratio)) => {
                tracer_provider.with_sampler(opentelemetry_sdk::trace::ParentBasedSampler::new(
                    sampling::ConsistentSampler::new(ratio),
                ))
            }
            (None, None) => tracer_provider,
        })
    }

    /// The log sampler in effect: the builder's, else the logging config's `sampling:` section.
    fn log_sampler(&self) -> Option<log::sampling::LogSampler> {
        self.log_sampling
            .clone()
            .or_else(|| self.logging.as_ref().and_then(|c| c.sampling.clone()))
            .map(|config| log::sampling::LogSampler::new(config, self.clock.clone()))
    }

    /// Starts collecting system metrics into `provider`, when metrics are exported and system metrics are on.
    #[cfg(feature = "system")]
    fn start_system_metrics(
        &self,
        provider: Option<&SdkMeterProvider>,
    ) -> Result<Option<system::SystemMetrics>, Error> {
        use opentelemetry::metrics::MeterProvider as _;
        let (Some(provider), Some(config)) = (provider, &self.system_metrics) else {
            return Ok(None);
        };
        system::SystemMetrics::start(&provider.meter("vigil.system"), config.clone())
            .map(Some)
            .map_err(|e| Error::Exporter {
                signal: "metrics",
                reason: format!("cannot start the system metrics thread: {e}"),
            })
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
        propagation::install_from_env()?;
        *guard::installed().lock().unwrap_or_else(|p| p.into_inner()) = Some(guard::Installed {
            writers: guard.writers.clone(),
            tracer_provider: guard.tracer_provider.clone(),
            logger_provider: guard.logger_provider.clone(),
            meter_provider: guard.meter_provider.clone(),
            timeout: guard.timeout,
        });
        Ok(guard)
    }
}
