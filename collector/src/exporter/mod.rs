//! Exporters: where batches leave the collector. Each exporter type lives in its own folder; the queue,
//! consumers and retry loop every exporter shares live in [`worker`].

pub mod debug;
pub mod decode;
pub mod file;
pub use crate::delivery::http;
pub mod loki;
pub mod mlflow;
pub mod nop;
pub mod otlp;
pub mod otlphttp;
pub mod prometheus;
pub mod prometheusremotewrite;
pub mod worker;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use vigil_proto::otlp::Signal;

use crate::component::{Checker, ComponentError, ComponentId};
pub use crate::delivery::{ExportError, Exported, RetrySettings};
use crate::pipeline::persistent::StorageSettings;
use crate::pipeline::{Batch, BoxFuture};
use crate::telemetry::Registry;

/// Sends batches somewhere.
///
/// `export` is called concurrently by the exporter's consumers (`sending_queue.num_consumers`) and must not
/// block a thread (do blocking I/O through `spawn_blocking`). It makes one attempt: the caller retries.
pub trait Exporter: Send + Sync + 'static {
    /// One attempt to deliver `batch`.
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>>;

    /// Flushes buffers and releases resources; called once, after the last export.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// `sending_queue`: the bounded queue in front of an exporter.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Batches that may wait; when full, receivers refuse new data with a retryable error.
    pub queue_size: usize,
    /// Batches exported concurrently.
    pub num_consumers: usize,
    /// Keep the queue on disk, so nothing acknowledged is lost to a crash; bounded by `max_size_mib` instead
    /// of `queue_size`.
    #[serde(deserialize_with = "storage_section")]
    pub storage: Option<StorageSettings>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            queue_size: 1000,
            num_consumers: 10,
            storage: None,
        }
    }
}

/// `storage` is a section here; otelcol users write the id of a `file_storage` extension, so say what to
/// write instead.
fn storage_section<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<StorageSettings>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Extension(String),
        Section(Value),
    }
    match Option::<Raw>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Raw::Extension(name)) => Err(serde::de::Error::custom(format!(
            "`storage: {name}` names an otelcol storage extension; here `storage` is the queue's own \
             section: `storage: {{directory: /var/lib/vigil/queue, fsync: always, max_size_mib: 1024}}`"
        ))),
        Some(Raw::Section(value)) => serde_json::from_value(value)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// `compression` of network exporters.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip (the default, as otelcol).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
    /// No compression.
    None,
}

/// An exporter's configuration, by type.
#[derive(Clone, Debug)]
pub enum ExporterConfig {
    /// `otlp`: OTLP/gRPC to another collector, Jaeger, Tempo…
    Otlp(otlp::OtlpExporterConfig),
    /// `otlphttp`: OTLP/HTTP (protobuf or JSON).
    OtlpHttp(otlphttp::OtlpHttpExporterConfig),
    /// `file`: OTLP/JSON lines, one file per signal, rotated.
    File(file::FileExporterConfig),
    /// `debug`: a summary or every item, to stderr.
    Debug(debug::DebugExporterConfig),
    /// `nop`: accepts, counts and discards.
    Nop(nop::NopExporterConfig),
    /// `prometheus`: serves `/metrics` for Prometheus to scrape.
    Prometheus(prometheus::PrometheusExporterConfig),
    /// `prometheusremotewrite`: pushes with the remote-write 1.0 protocol.
    PrometheusRemoteWrite(prometheusremotewrite::RemoteWriteConfig),
    /// `loki`: pushes logs to Grafana Loki.
    Loki(loki::LokiExporterConfig),
    /// `mlflow`: training jobs' spans, metrics and logs as MLflow runs.
    Mlflow(Box<mlflow::MlflowExporterConfig>),
}

impl ExporterConfig {
    /// The factory: decodes the section of an exporter of type `kind`.
    pub fn decode(check: &mut Checker<'_>, path: &str, kind: &str, value: &Value) -> Option<Self> {
        let config = match kind {
            "otlp" => ExporterConfig::Otlp(check.decode(path, value)?),
            "otlphttp" => ExporterConfig::OtlpHttp(check.decode(path, value)?),
            "file" => ExporterConfig::File(check.decode(path, value)?),
            "debug" => ExporterConfig::Debug(check.decode(path, value)?),
            "nop" => ExporterConfig::Nop(check.decode(path, value)?),
            "prometheus" => ExporterConfig::Prometheus(check.decode(path, value)?),
            "prometheusremotewrite" => {
                ExporterConfig::PrometheusRemoteWrite(check.decode(path, value)?)
            }
            "loki" => ExporterConfig::Loki(check.decode(path, value)?),
            "mlflow" => ExporterConfig::Mlflow(Box::new(check.decode(path, value)?)),
            other => {
                check.error(
                    path,
                    format!(
                        "unknown exporter type `{other}`; known types: otlp, otlphttp, file, debug, nop, \
                         prometheus, prometheusremotewrite, loki, mlflow"
                    ),
                );
                return None;
            }
        };
        config.validate(check, path);
        Some(config)
    }

    fn validate(&self, check: &mut Checker<'_>, path: &str) {
        let queue = self.queue();
        if let Some(storage) = &queue.storage {
            if storage.max_size_mib == 0 {
                check.error(
                    &format!("{path}.sending_queue.storage.max_size_mib"),
                    "must be at least 1",
                );
            }
            if storage.directory.as_os_str().is_empty() {
                check.error(
                    &format!("{path}.sending_queue.storage.directory"),
                    "must name a directory",
                );
            }
        }
        if queue.queue_size == 0 {
            check.error(
                &format!("{path}.sending_queue.queue_size"),
                "must be at least 1",
            );
        }
        if queue.num_consumers == 0 {
            check.error(
                &format!("{path}.sending_queue.num_consumers"),
                "must be at least 1",
            );
        }
        self.retry().validate(check, path);
        match self {
            ExporterConfig::Otlp(c) => c.validate(check, path),
            ExporterConfig::OtlpHttp(c) => c.validate(check, path),
            ExporterConfig::File(c) => c.validate(check, path),
            ExporterConfig::Prometheus(c) => c.validate(check, path),
            ExporterConfig::PrometheusRemoteWrite(c) => c.validate(check, path),
            ExporterConfig::Loki(c) => c.validate(check, path),
            ExporterConfig::Mlflow(c) => c.validate(check, path),
            ExporterConfig::Debug(_) | ExporterConfig::Nop(_) => {}
        }
    }

    /// Addresses it listens on, as `(config path, endpoint)`, so clashes with other listeners are reported.
    pub fn listen_endpoints(&self, path: &str) -> Vec<(String, String)> {
        match self {
            ExporterConfig::Prometheus(c) => vec![(format!("{path}.endpoint"), c.endpoint.clone())],
            _ => Vec::new(),
        }
    }

    /// Why the exporter cannot take `signal` in a pipeline, if it cannot.
    pub fn signal_problem(&self, signal: Signal) -> Option<String> {
        match self {
            ExporterConfig::OtlpHttp(c) if c.url(signal).is_none() => Some(format!(
                "has no URL for {signal}: set `endpoint` or `{signal}_endpoint`"
            )),
            ExporterConfig::Prometheus(_) | ExporterConfig::PrometheusRemoteWrite(_)
                if signal != Signal::Metrics =>
            {
                Some(format!(
                    "exports metrics only; it cannot be used in a {signal} pipeline"
                ))
            }
            ExporterConfig::Loki(_) if signal != Signal::Logs => Some(format!(
                "exports logs only; it cannot be used in a {signal} pipeline"
            )),
            _ => None,
        }
    }

    /// Its sending queue settings.
    pub fn queue(&self) -> &QueueSettings {
        match self {
            ExporterConfig::Otlp(c) => &c.sending_queue,
            ExporterConfig::OtlpHttp(c) => &c.sending_queue,
            ExporterConfig::File(c) => &c.sending_queue,
            ExporterConfig::Debug(c) => &c.sending_queue,
            ExporterConfig::Nop(c) => &c.sending_queue,
            ExporterConfig::Prometheus(c) => &c.sending_queue,
            ExporterConfig::PrometheusRemoteWrite(c) => &c.sending_queue,
            ExporterConfig::Loki(c) => &c.sending_queue,
            ExporterConfig::Mlflow(c) => &c.sending_queue,
        }
    }

    /// Its retry settings.
    pub fn retry(&self) -> RetrySettings {
        match self {
            ExporterConfig::Otlp(c) => c.retry_on_failure.clone(),
            ExporterConfig::OtlpHttp(c) => c.retry_on_failure.clone(),
            ExporterConfig::File(c) => c.retry_on_failure.clone(),
            ExporterConfig::Mlflow(c) => c.retry_on_failure.clone(),
            // Remote write and Loki retry inside the exporter: a retried batch must not be accumulated twice,
            // and a push Loki partly accepted must not be sent again.
            ExporterConfig::Debug(_)
            | ExporterConfig::Nop(_)
            | ExporterConfig::Prometheus(_)
            | ExporterConfig::PrometheusRemoteWrite(_)
            | ExporterConfig::Loki(_) => RetrySettings {
                enabled: false,
                ..RetrySettings::default()
            },
        }
    }

    /// Builds the exporter (opens files, creates clients; connections are made lazily).
    pub fn build(
        &self,
        id: &ComponentId,
        registry: &Registry,
    ) -> Result<Box<dyn Exporter>, ComponentError> {
        let failed = |reason: String| ComponentError::build(format!("exporter {id}"), reason);
        Ok(match self {
            ExporterConfig::Otlp(c) => Box::new(otlp::OtlpExporter::new(c).map_err(failed)?),
            ExporterConfig::OtlpHttp(c) => {
                Box::new(otlphttp::OtlpHttpExporter::new(c).map_err(failed)?)
            }
            ExporterConfig::File(c) => Box::new(file::FileExporter::new(c).map_err(failed)?),
            ExporterConfig::Debug(c) => Box::new(debug::DebugExporter::new(c)),
            ExporterConfig::Nop(_) => Box::new(nop::NopExporter),
            ExporterConfig::Prometheus(c) => Box::new(
                prometheus::PrometheusExporter::new(c, &id.to_string(), registry)
                    .map_err(failed)?,
            ),
            ExporterConfig::PrometheusRemoteWrite(c) => Box::new(
                prometheusremotewrite::RemoteWriteExporter::new(c, &id.to_string(), registry)
                    .map_err(failed)?,
            ),
            ExporterConfig::Loki(c) => {
                Box::new(loki::LokiExporter::new(c, &id.to_string(), registry).map_err(failed)?)
            }
            ExporterConfig::Mlflow(c) => {
                Box::new(mlflow::MlflowExporter::new(c, &id.to_string(), registry).map_err(failed)?)
            }
        })
    }
}

/// Headers added to every export request; values may use `${env:…}`. A header whose value is empty (an unset
/// `${env:NAME:-}`) is not sent.
pub type Headers = BTreeMap<String, String>;

/// The configured headers as HTTP name/value pairs (validated at config load, so none is dropped here), those
/// with an empty value left out.
pub fn header_pairs(headers: &Headers) -> Vec<(::http::HeaderName, ::http::HeaderValue)> {
    headers
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(name, value)| {
            Some((
                ::http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                ::http::HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect()
}

/// Checks header names and values are valid HTTP.
fn validate_headers(headers: &Headers, check: &mut Checker<'_>, path: &str) {
    for (name, value) in headers {
        if ::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            check.error(
                &format!("{path}.headers.{name}"),
                format!("`{name}` is not a valid header name"),
            );
        }
        if ::http::HeaderValue::from_str(value).is_err() {
            check.error(
                &format!("{path}.headers.{name}"),
                "the value is not a valid header value",
            );
        }
    }
}
