//! The providers behind the `tracing` layers: a tracer provider always (local spans need trace ids), and, with the
//! `otlp` feature, exporters for every signal the `OTEL_*` variables ask for, on the SDK's own runtime.

#[cfg(feature = "otlp")]
use std::sync::Arc;
#[cfg(feature = "otlp")]
use std::time::Duration;

#[cfg(feature = "otlp")]
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracerProvider, TracerProviderBuilder};

use crate::Error;
#[cfg(feature = "otlp")]
use crate::export;
use crate::guard::ExportRuntime;
use crate::mask::Masker;
#[cfg(feature = "otlp")]
use crate::{mask, metrics};

/// Builds an `opentelemetry-otlp` exporter over the signal's transport. The HTTP client is hyper's, created inside
/// the SDK's own export runtime, so it never looks for a reactor on a thread that has none.
#[cfg(feature = "otlp")]
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

/// The providers of one [`crate::Builder::build`].
pub(crate) struct Providers {
    /// The runtime the exporters run on, when any signal is exported.
    pub(crate) runtime: Option<ExportRuntime>,
    /// Spans: exported when traces are, else only giving local spans their ids.
    pub(crate) tracer_provider: SdkTracerProvider,
    /// Log records, when logs are exported.
    pub(crate) logger_provider: Option<SdkLoggerProvider>,
    /// Metrics, when metrics are exported.
    pub(crate) meter_provider: Option<SdkMeterProvider>,
    /// Failed exports per signal, reported during the run and at shutdown.
    #[cfg(feature = "otlp")]
    pub(crate) export_reports: Vec<Arc<export::ExportReport>>,
}

/// The signals to export: those the `OTEL_*` variables ask for when `export` ([`crate::Builder::otlp`]) is on;
/// none without the `otlp` feature.
pub(crate) struct Wanted {
    #[cfg(feature = "otlp")]
    signals: export::Signals,
    /// The runtime the exporters will run on, started as soon as any signal is to be exported (an error
    /// found after this point drops it, which must work inside a caller's Tokio runtime too).
    #[cfg(feature = "otlp")]
    runtime: Option<ExportRuntime>,
}

/// Reads which signals to export, and how, from the environment (an error names a bad `OTEL_*` value), and
/// starts the export runtime when there is any.
pub(crate) fn wanted(export: bool) -> Result<Wanted, Error> {
    #[cfg(feature = "otlp")]
    {
        let signals = if export {
            export::Signals::from_env(|name| std::env::var(name).ok())
                .map_err(Error::Environment)?
        } else {
            export::Signals::NONE
        };
        let runtime = match signals.any() {
            true => Some(ExportRuntime(Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("vigil-export")
                    .enable_all()
                    .build()?,
            ))),
            false => None,
        };
        Ok(Wanted { signals, runtime })
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = export;
        Ok(Wanted {})
    }
}

/// Starts the providers: `tracer` gets a batch exporter (masking spans with `masker`) when traces are exported,
/// and logs and metrics get providers when they are.
pub(crate) fn start(
    wanted: Wanted,
    tracer: TracerProviderBuilder,
    resource: &Resource,
    masker: Option<&Masker>,
) -> Result<Providers, Error> {
    #[cfg(feature = "otlp")]
    return start_exporting(wanted, tracer, resource, masker);
    #[cfg(not(feature = "otlp"))]
    {
        let _ = (wanted, resource, masker);
        Ok(Providers {
            runtime: None,
            tracer_provider: tracer.build(),
            logger_provider: None,
            meter_provider: None,
        })
    }
}

#[cfg(feature = "otlp")]
fn start_exporting(
    wanted: Wanted,
    mut tracer: TracerProviderBuilder,
    resource: &Resource,
    masker: Option<&Masker>,
) -> Result<Providers, Error> {
    let Wanted { signals, runtime } = wanted;
    let Some(runtime) = runtime else {
        return Ok(Providers {
            runtime: None,
            tracer_provider: tracer.build(),
            logger_provider: None,
            meter_provider: None,
            export_reports: Vec::new(),
        });
    };
    let exporter_error = |signal: &'static str| {
        move |e: opentelemetry_otlp::ExporterBuildError| Error::Exporter {
            signal,
            reason: e.to_string(),
        }
    };
    let mut export_reports = Vec::new();
    let mut report = |signal: &'static str, transport: export::Transport| {
        let report = Arc::new(export::ExportReport::new(signal, transport, |name| {
            std::env::var(name).ok()
        }));
        export_reports.push(report.clone());
        report
    };
    let mut logger_provider = None;
    let mut meter_provider = None;
    if let Some(tokio_runtime) = runtime.0.as_ref() {
        let handle = tokio_runtime.handle().clone();
        let _entered = tokio_runtime.enter();
        if let Some(transport) = signals.traces {
            let exporter = otlp_exporter!(
                opentelemetry_otlp::SpanExporter::builder(),
                transport,
                "traces"
            )
            .map_err(exporter_error("traces"))?;
            let exporter =
                export::OnRuntime::new(exporter, handle.clone(), report("traces", transport));
            tracer = match masker {
                Some(masker) => tracer
                    .with_batch_exporter(mask::MaskingSpanExporter::new(exporter, masker.clone())),
                None => tracer.with_batch_exporter(exporter),
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
    Ok(Providers {
        runtime: Some(runtime),
        tracer_provider: tracer.build(),
        logger_provider,
        meter_provider,
        export_reports,
    })
}
