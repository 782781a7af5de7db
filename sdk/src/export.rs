//! OTLP export of traces, logs and metrics over gRPC (tonic), configured by the standard `OTEL_*` variables.
//!
//! The OpenTelemetry SDK runs its batch processors and periodic reader on plain threads, while tonic's channel
//! needs a Tokio runtime for its timers and connection tasks — the "no reactor running" panic users hit. Vigil
//! owns a one-thread runtime for export: exporters are built inside it, and every export future is polled with
//! that runtime entered ([`InRuntime`]), whatever thread the SDK polls it from.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
pub(crate) struct InRuntime<F> {
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

/// Where one signal is exported, and how its failures have gone: the console is told once a minute at most
/// (never silently, never per batch), and the count is kept for the guard's last word and a metric.
#[derive(Debug)]
pub(crate) struct ExportReport {
    signal: &'static str,
    transport: Transport,
    endpoint: String,
    failed: AtomicU64,
    last_warning: Mutex<Option<std::time::Instant>>,
}

/// How often the console hears about failing exports of one signal.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl ExportReport {
    /// The report of `signal` sent with `transport`, to the endpoint the environment names (or the default).
    pub(crate) fn new(
        signal: &'static str,
        transport: Transport,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let endpoint = endpoint_without_scheme(signal, transport, &env)
            .or_else(|| {
                env(&format!(
                    "OTEL_EXPORTER_OTLP_{}_ENDPOINT",
                    signal.to_ascii_uppercase()
                ))
                .filter(|v| !v.trim().is_empty())
            })
            .or_else(|| {
                env("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .filter(|v| !v.trim().is_empty())
                    .map(|general| match transport {
                        Transport::Grpc => general,
                        _ => format!("{}/v1/{signal}", general.trim_end_matches('/')),
                    })
            })
            .unwrap_or_else(|| match transport {
                Transport::Grpc => "http://localhost:4317".into(),
                _ => format!("http://localhost:4318/v1/{signal}"),
            });
        ExportReport {
            signal,
            transport,
            endpoint,
            failed: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }

    /// Exports of this signal that failed (batches whose data was not delivered).
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The signal's name.
    pub(crate) fn signal(&self) -> &'static str {
        self.signal
    }

    /// Where it is sent.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn record(&self, result: &OTelSdkResult) {
        let Err(error) = result else { return };
        self.failed.fetch_add(1, Ordering::Relaxed);
        let now = std::time::Instant::now();
        {
            let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| now.duration_since(at) < WARNING_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        // Straight to stderr: a `tracing` event would be exported by the very pipeline that is failing.
        eprintln!("{}", self.warning(&error.to_string()));
    }

    /// The console line for a failed export: where, how, what happened, and the likely fix.
    pub(crate) fn warning(&self, error: &str) -> String {
        let protocol = match self.transport {
            Transport::Grpc => "OTLP/gRPC",
            Transport::HttpProtobuf => "OTLP/HTTP (protobuf)",
            Transport::HttpJson => "OTLP/HTTP (JSON)",
        };
        format!(
            "vigil: WARNING cannot export {} to {} over {protocol}: {}; {} (repeated at most once a minute)",
            self.signal,
            self.endpoint,
            error.trim(),
            hint(self.transport, &self.endpoint, error)
        )
    }
}

/// The likely fix for an export error, from its text and the port it went to.
fn hint(transport: Transport, endpoint: &str, error: &str) -> String {
    let text = error.to_ascii_lowercase();
    let authority = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split('/')
        .next()
        .unwrap_or_default();
    let port = authority.rsplit(':').next().unwrap_or_default();
    if text.contains("refused") || text.contains("tcp connect") {
        return format!(
            "nothing listens on {authority}: start the collector (`cargo run --release -p vigil-collector`) or set OTEL_EXPORTER_OTLP_ENDPOINT"
        );
    }
    match transport {
        Transport::Grpc
            if port == "4318"
                || [
                    "h2 protocol",
                    "http2",
                    "frame",
                    "http/1",
                    "protocol error",
                    "invalid",
                    "unimplemented",
                    "internal",
                    "otlp/http port",
                ]
                    .iter()
                    .any(|needle| text.contains(needle)) =>
        {
            "this port may speak OTLP/HTTP, not gRPC: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf, or use the gRPC port (4317)".into()
        }
        Transport::HttpProtobuf | Transport::HttpJson
            if port == "4317"
                || ["connection closed", "reset", "network error", "415", "400", "404", "http2"]
                    .iter()
                    .any(|needle| text.contains(needle)) =>
        {
            "this port may speak OTLP/gRPC, not HTTP: set OTEL_EXPORTER_OTLP_PROTOCOL=grpc, or use the HTTP port (4318)".into()
        }
        _ => "check that the collector runs and that OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_PROTOCOL match it".into(),
    }
}

/// An exporter whose calls run with Vigil's export runtime entered, and whose failures are reported.
#[derive(Debug)]
pub(crate) struct OnRuntime<E> {
    inner: E,
    handle: Handle,
    report: Arc<ExportReport>,
}

impl<E> OnRuntime<E> {
    /// Wraps `inner`, which was built inside the runtime of `handle`; failures go to `report`.
    pub(crate) fn new(inner: E, handle: Handle, report: Arc<ExportReport>) -> Self {
        OnRuntime {
            inner,
            handle,
            report,
        }
    }
}

/// Runs `future` in the export runtime and reports its outcome.
async fn reported<F: Future<Output = OTelSdkResult>>(
    report: Arc<ExportReport>,
    future: InRuntime<F>,
) -> OTelSdkResult {
    let result = future.await;
    report.record(&result);
    result
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        reported(
            self.report.clone(),
            in_runtime(&self.handle, self.inner.export(batch)),
        )
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
        reported(
            self.report.clone(),
            in_runtime(&self.handle, self.inner.export(batch)),
        )
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
        reported(
            self.report.clone(),
            in_runtime(&self.handle, self.inner.export(metrics)),
        )
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

/// How one signal travels to the collector: `OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL`, else
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC.
///
/// The OTel specification's default is `http/protobuf`; Vigil keeps gRPC because every OTLP collector
/// (ours included) serves it on the well-known port 4317 and it multiplexes all three signals on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// OTLP/gRPC (`grpc`), default endpoint `http://localhost:4317`.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`), default endpoint `http://localhost:4318/v1/{signal}`.
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies (`http/json`), default endpoint `http://localhost:4318/v1/{signal}`.
    HttpJson,
}

impl Transport {
    fn parse(name: &str, value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Transport::Grpc),
            "http/protobuf" => Ok(Transport::HttpProtobuf),
            "http/json" => Ok(Transport::HttpJson),
            other => Err(format!(
                "{name}=`{other}` is not an OTLP protocol: use `grpc`, `http/protobuf` or `http/json`"
            )),
        }
    }

    /// The protocol as `opentelemetry-otlp` names it, for the HTTP transports.
    pub(crate) fn http_protocol(self) -> Option<opentelemetry_otlp::Protocol> {
        match self {
            Transport::Grpc => None,
            Transport::HttpProtobuf => Some(opentelemetry_otlp::Protocol::HttpBinary),
            Transport::HttpJson => Some(opentelemetry_otlp::Protocol::HttpJson),
        }
    }
}

/// The endpoint to give the exporter of `signal` ("traces", "logs", "metrics") when the configured one was
/// written without a scheme (`127.0.0.1:4317`): read as `http://127.0.0.1:4317`, with `/v1/{signal}` appended to
/// a general endpoint for the HTTP transports, as the specification appends it to a full URL. `None` when the
/// configured endpoint has a scheme, or when none is configured (the exporter's own defaults apply).
///
/// Without this, `opentelemetry-otlp` takes a scheme-less endpoint for `https://` and fails with advice to enable
/// a feature of a crate the user cannot reach.
pub(crate) fn endpoint_without_scheme(
    signal: &str,
    transport: Transport,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let specific = format!(
        "OTEL_EXPORTER_OTLP_{}_ENDPOINT",
        signal.to_ascii_uppercase()
    );
    if let Some(value) = set(&specific) {
        let value = value.trim();
        return (!value.contains("://")).then(|| format!("http://{value}"));
    }
    let general = set("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let general = general.trim();
    if general.contains("://") {
        return None;
    }
    Some(match transport {
        Transport::Grpc => format!("http://{general}"),
        Transport::HttpProtobuf | Transport::HttpJson => {
            format!("http://{}/v1/{signal}", general.trim_end_matches('/'))
        }
    })
}

/// Which signals are exported over OTLP, and how, from `OTEL_SDK_DISABLED`,
/// `OTEL_{TRACES,LOGS,METRICS}_EXPORTER` (`otlp`, the default, or `none`) and the `OTEL_EXPORTER_OTLP_*PROTOCOL`
/// variables. `None` means the signal is not exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Signals {
    /// Spans.
    pub traces: Option<Transport>,
    /// Log records.
    pub logs: Option<Transport>,
    /// Metrics.
    pub metrics: Option<Transport>,
}

impl Signals {
    /// Nothing is exported.
    pub(crate) const NONE: Signals = Signals {
        traces: None,
        logs: None,
        metrics: None,
    };

    /// Whether any signal is exported.
    pub(crate) fn any(&self) -> bool {
        self.traces.is_some() || self.logs.is_some() || self.metrics.is_some()
    }

    /// Reads the environment through `env`.
    pub(crate) fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(Signals::NONE);
        }
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let general = match set("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(v) => Transport::parse("OTEL_EXPORTER_OTLP_PROTOCOL", &v)?,
            None => Transport::Grpc,
        };
        let one = |signal: &str| -> Result<Option<Transport>, String> {
            let selector = format!("OTEL_{signal}_EXPORTER");
            match set(&selector).map(|v| v.trim().to_ascii_lowercase()) {
                None => {}
                Some(v) if v == "otlp" => {}
                Some(v) if v == "none" => return Ok(None),
                Some(v) => {
                    return Err(format!(
                        "{selector}=`{v}` is not supported: use `otlp` or `none`"
                    ));
                }
            }
            let protocol = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
            match set(&protocol) {
                Some(v) => Transport::parse(&protocol, &v).map(Some),
                None => Ok(Some(general)),
            }
        };
        Ok(Signals {
            traces: one("TRACES")?,
            logs: one("LOGS")?,
            metrics: one("METRICS")?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_endpoint_without_a_scheme_is_read_as_plain_http() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let general = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317")]);
        assert_eq!(
            super::endpoint_without_scheme("traces", Transport::Grpc, general).as_deref(),
            Some("http://127.0.0.1:4317")
        );
        let general = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318/")]);
        assert_eq!(
            super::endpoint_without_scheme("logs", Transport::HttpProtobuf, general).as_deref(),
            Some("http://collector:4318/v1/logs")
        );
        let specific = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "host:4318/custom"),
        ]);
        assert_eq!(
            super::endpoint_without_scheme("metrics", Transport::HttpJson, specific).as_deref(),
            Some("http://host:4318/custom")
        );
        let with_scheme = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")]);
        assert_eq!(
            super::endpoint_without_scheme("traces", Transport::Grpc, with_scheme),
            None
        );
        assert_eq!(
            super::endpoint_without_scheme("traces", Transport::Grpc, env(&[])),
            None
        );
    }

    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn exporter_selection_follows_the_otel_variables() {
        let all = |t| Signals {
            traces: Some(t),
            logs: Some(t),
            metrics: Some(t),
        };
        assert_eq!(Signals::from_env(env(&[])).unwrap(), all(Transport::Grpc));
        assert_eq!(
            Signals::from_env(env(&[("OTEL_METRICS_EXPORTER", "none")])).unwrap(),
            Signals {
                metrics: None,
                ..all(Transport::Grpc)
            }
        );
        assert_eq!(
            Signals::from_env(env(&[("OTEL_SDK_DISABLED", "TRUE")])).unwrap(),
            Signals::NONE
        );
        assert!(
            Signals::from_env(env(&[("OTEL_TRACES_EXPORTER", "zipkin")]))
                .unwrap_err()
                .contains("OTEL_TRACES_EXPORTER=`zipkin`")
        );
    }

    #[test]
    fn the_per_signal_protocol_overrides_the_general_one() {
        assert_eq!(
            Signals::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
            ]))
            .unwrap(),
            Signals {
                traces: Some(Transport::HttpProtobuf),
                logs: Some(Transport::HttpJson),
                metrics: Some(Transport::Grpc),
            }
        );
        let error = Signals::from_env(env(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift")]))
            .unwrap_err();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=`thrift`")
                && error.contains("http/json"),
            "{error}"
        );
    }
}
