//! What keeps telemetry running, and what stops it: the [`Guard`] that [`crate::init`] returns, and
//! [`shutdown`] for programs that exit without dropping it.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::builder::self_metrics::SelfMetrics;
#[cfg(feature = "otlp")]
use crate::export::ExportReport;
use crate::log::writer::AsyncWriter;
use crate::mask;
use crate::ml::mlflow;

/// Flushes and shuts telemetry down when dropped (bounded by a timeout; it never hangs).
#[must_use = "telemetry is shut down when the guard is dropped"]
pub struct Guard {
    pub(crate) writers: Vec<Arc<AsyncWriter>>,
    pub(crate) tracer_provider: SdkTracerProvider,
    pub(crate) logger_provider: Option<SdkLoggerProvider>,
    pub(crate) meter_provider: Option<SdkMeterProvider>,
    pub(crate) runtime: Option<ExportRuntime>,
    /// The SDK's own instruments (dropped lines, masking, sampling, export failures), observed while held.
    pub(crate) _self_metrics: SelfMetrics,
    #[cfg(feature = "otlp")]
    pub(crate) export_reports: Vec<Arc<ExportReport>>,
    pub(crate) masker: Option<mask::Masker>,
    #[cfg(feature = "system")]
    pub(crate) system_metrics: Option<crate::system::SystemMetrics>,
    pub(crate) mlflow: Option<mlflow::Mlflow>,
    pub(crate) timeout: Duration,
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
        #[cfg(feature = "system")]
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
        #[cfg(feature = "otlp")]
        self.report_export_failures();
    }

    /// OTLP exports that failed so far (batches of spans, log records or metrics that did not reach the
    /// collector), by signal.
    pub fn export_failures(&self) -> Vec<(&'static str, u64)> {
        #[cfg(feature = "otlp")]
        return self
            .export_reports
            .iter()
            .map(|report| (report.signal(), report.failed()))
            .collect();
        #[cfg(not(feature = "otlp"))]
        Vec::new()
    }

    /// The last word on what never reached the collector (the warnings during the run were rate-limited).
    #[cfg(feature = "otlp")]
    fn report_export_failures(&mut self) {
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

    /// Log lines dropped because the writer could not keep up (only with [`crate::log::FullPolicy::Drop`]).
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

/// The SDK's own export runtime. Dropping a Tokio runtime blocks, which panics inside another runtime's task
/// ("Cannot drop a runtime in a context where blocking is not allowed") and would hide the real error of a
/// failed `build` under `#[tokio::main]`; this one is always shut down in the background.
pub(crate) struct ExportRuntime(pub(crate) Option<tokio::runtime::Runtime>);

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What [`shutdown`] flushes: handles to the globally installed telemetry.
pub(crate) struct Installed {
    pub(crate) writers: Vec<Arc<AsyncWriter>>,
    pub(crate) tracer_provider: SdkTracerProvider,
    pub(crate) logger_provider: Option<SdkLoggerProvider>,
    pub(crate) meter_provider: Option<SdkMeterProvider>,
    pub(crate) timeout: Duration,
}

pub(crate) fn installed() -> &'static std::sync::Mutex<Option<Installed>> {
    static INSTALLED: std::sync::OnceLock<std::sync::Mutex<Option<Installed>>> =
        std::sync::OnceLock::new();
    INSTALLED.get_or_init(Default::default)
}

/// Flushes and shuts down the telemetry installed by [`crate::init`], [`crate::init_from_file`] or [`crate::Builder::try_init`],
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
