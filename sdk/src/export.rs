//! OTLP export of traces, logs and metrics over gRPC (tonic), configured by the standard `OTEL_*` variables.
//!
//! The OpenTelemetry SDK runs its batch processors and periodic reader on plain threads, while tonic's channel
//! needs a Tokio runtime for its timers and connection tasks — the "no reactor running" panic users hit. Vigil
//! owns a one-thread runtime for export: exporters are built inside it, and every export future is polled with
//! that runtime entered ([`InRuntime`]), whatever thread the SDK polls it from.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::Handle;

/// Polls a future with a Tokio runtime entered.
pub struct InRuntime<F> {
    handle: Handle,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.handle.enter();
        self.inner.as_mut().poll(cx)
    }
}

fn in_runtime<F: Future>(handle: &Handle, future: F) -> InRuntime<F> {
    InRuntime {
        handle: handle.clone(),
        inner: Box::pin(future),
    }
}

/// An exporter whose calls run with Vigil's export runtime entered.
#[derive(Debug)]
pub struct OnRuntime<E> {
    inner: E,
    handle: Handle,
}

impl<E> OnRuntime<E> {
    /// Wraps `inner`, which was built inside the runtime of `handle`.
    pub fn new(inner: E, handle: Handle) -> Self {
        OnRuntime { inner, handle }
    }
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        in_runtime(&self.handle, self.inner.export(batch))
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.handle.enter();
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.handle.enter();
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for OnRuntime<E> {
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        in_runtime(&self.handle, self.inner.export(batch))
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.handle.enter();
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for OnRuntime<E> {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        in_runtime(&self.handle, self.inner.export(metrics))
    }
    fn force_flush(&self) -> OTelSdkResult {
        let _entered = self.handle.enter();
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _entered = self.handle.enter();
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Which signals are exported over OTLP, from `OTEL_SDK_DISABLED` and `OTEL_{TRACES,LOGS,METRICS}_EXPORTER`
/// (`otlp`, the default, or `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// Spans.
    pub traces: bool,
    /// Log records.
    pub logs: bool,
    /// Metrics.
    pub metrics: bool,
}

impl Signals {
    /// Reads the environment through `env`.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(Signals {
                traces: false,
                logs: false,
                metrics: false,
            });
        }
        let one = |name: &str| -> Result<bool, String> {
            match env(name).map(|v| v.trim().to_ascii_lowercase()) {
                None => Ok(true),
                Some(v) if v.is_empty() || v == "otlp" => Ok(true),
                Some(v) if v == "none" => Ok(false),
                Some(v) => Err(format!(
                    "{name}=`{v}` is not supported: use `otlp` or `none`"
                )),
            }
        };
        for name in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ] {
            if let Some(protocol) = env(name).map(|v| v.trim().to_ascii_lowercase())
                && !protocol.is_empty()
                && protocol != "grpc"
            {
                return Err(format!(
                    "{name}=`{protocol}`: the Vigil SDK exports OTLP over gRPC only for now; set it to `grpc` (or unset it) and point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's gRPC port (4317)"
                ));
            }
        }
        Ok(Signals {
            traces: one("OTEL_TRACES_EXPORTER")?,
            logs: one("OTEL_LOGS_EXPORTER")?,
            metrics: one("OTEL_METRICS_EXPORTER")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_selection_follows_the_otel_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Signals::from_env(env(&[])).unwrap(),
            Signals {
                traces: true,
                logs: true,
                metrics: true
            }
        );
        assert_eq!(
            Signals::from_env(env(&[("OTEL_METRICS_EXPORTER", "none")])).unwrap(),
            Signals {
                traces: true,
                logs: true,
                metrics: false
            }
        );
        assert_eq!(
            Signals::from_env(env(&[("OTEL_SDK_DISABLED", "TRUE")])).unwrap(),
            Signals {
                traces: false,
                logs: false,
                metrics: false
            }
        );
        assert!(
            Signals::from_env(env(&[("OTEL_TRACES_EXPORTER", "zipkin")]))
                .unwrap_err()
                .contains("zipkin")
        );
        assert!(
            Signals::from_env(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]))
                .unwrap_err()
                .contains("gRPC only")
        );
    }
}
