//! Exporter `prometheus`: keeps the latest value of every series and serves them on `/metrics` for Prometheus
//! to scrape, in the text format 0.0.4 or OpenMetrics 1.0.0 (content negotiation), gzipped when accepted.
//!
//! The translation lives in [`crate::prometheus`], shared with `prometheusremotewrite` and `spanmetrics`: names
//! and labels follow the OpenTelemetry → Prometheus compatibility rules ([`crate::prometheus::naming`]); delta
//! sums and histograms are accumulated; series not updated for `metric_expiration` disappear; `max_series` caps
//! memory ([`crate::prometheus::store`]). Rendering ([`crate::prometheus::render`]) holds one shard of the store at a time and runs on a blocking thread, so
//! a scrape never stalls ingestion for long.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::watch;

use super::{ExportError, Exported, Exporter, QueueSettings};
use crate::component::Checker;
use crate::pipeline::{Batch, BoxFuture};
use crate::prometheus::options::{ResourceConversion, store_settings, validate_const_labels};
use crate::prometheus::render::{self, Format};
use crate::prometheus::store::{Store, StoreSettings};
use crate::telemetry::Registry;

/// `exporters.prometheus`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusExporterConfig {
    /// Listen address of `/metrics`.
    pub endpoint: String,
    /// Prefix of every metric name.
    pub namespace: String,
    /// Labels added to every series.
    pub const_labels: BTreeMap<String, String>,
    /// Add unit and type suffixes (`_seconds`, `_total`, `_ratio`) to names.
    pub add_metric_suffixes: bool,
    /// Answer OpenMetrics to scrapers that ask for it.
    pub enable_open_metrics: bool,
    /// A series not updated for this long disappears.
    #[serde(with = "crate::component::duration")]
    pub metric_expiration: Duration,
    /// Most series kept; data points of new series beyond it are dropped and counted.
    pub max_series: usize,
    /// Copy every resource attribute onto every series.
    pub resource_to_telemetry_conversion: ResourceConversion,
    /// Resource attributes copied onto every series (when not all are).
    pub promote_resource_attributes: Vec<String>,
    /// Leave out `otel_scope_name`/`otel_scope_version` labels.
    pub without_scope_info: bool,
    /// Leave out the `target_info` series.
    pub without_target_info: bool,
    /// The queue in front of it.
    pub sending_queue: QueueSettings,
}

impl Default for PrometheusExporterConfig {
    fn default() -> Self {
        PrometheusExporterConfig {
            endpoint: "127.0.0.1:9464".into(),
            namespace: String::new(),
            const_labels: BTreeMap::new(),
            add_metric_suffixes: true,
            enable_open_metrics: true,
            metric_expiration: Duration::from_secs(300),
            max_series: 100_000,
            resource_to_telemetry_conversion: ResourceConversion::default(),
            promote_resource_attributes: Vec::new(),
            without_scope_info: false,
            without_target_info: false,
            sending_queue: QueueSettings {
                queue_size: 1000,
                num_consumers: 2,
                storage: None,
            },
        }
    }
}

impl PrometheusExporterConfig {
    /// Checks values serde cannot.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if let Err(message) = crate::component::parse_listen_address(&self.endpoint) {
            check.error(&format!("{path}.endpoint"), message);
        }
        if self.max_series == 0 {
            check.error(&format!("{path}.max_series"), "must be at least 1");
        }
        if self.metric_expiration.is_zero() {
            check.error(
                &format!("{path}.metric_expiration"),
                "must be longer than 0s",
            );
        }
        validate_const_labels(&self.const_labels, check, path);
    }

    /// How the store translates.
    pub fn store_settings(&self) -> StoreSettings {
        store_settings(
            &self.namespace,
            &self.const_labels,
            self.add_metric_suffixes,
            self.resource_to_telemetry_conversion.enabled,
            &self.promote_resource_attributes,
            self.metric_expiration,
            self.max_series,
            !self.without_scope_info,
            !self.without_target_info,
        )
    }
}

/// Serves the latest value of every series on `/metrics`.
pub struct PrometheusExporter {
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PrometheusExporter {
    /// Binds the endpoint and starts serving (needs a Tokio runtime).
    pub fn new(
        config: &PrometheusExporterConfig,
        id: &str,
        registry: &Registry,
    ) -> Result<Self, String> {
        Self::with_store(
            config,
            id,
            registry,
            Arc::new(Store::new(config.store_settings())),
        )
    }

    /// Like [`PrometheusExporter::new`] with a given store (tests inject a clock this way).
    pub fn with_store(
        config: &PrometheusExporterConfig,
        id: &str,
        registry: &Registry,
        store: Arc<Store>,
    ) -> Result<Self, String> {
        let address = crate::component::parse_listen_address(&config.endpoint)?;
        let listener = std::net::TcpListener::bind(address)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| format!("cannot listen on {}: {e}", config.endpoint))?;
        let labels = [("exporter", id)];
        let series = store.clone();
        registry.gauge_fn(
            "vigil_prometheus_exporter_series",
            "Series a Prometheus exporter currently exposes.",
            &labels,
            move || series.series_count() as f64,
        );
        let overflow = store.clone();
        registry.counter_fn(
            "vigil_prometheus_exporter_dropped_points_total",
            "Data points a Prometheus exporter dropped because its max_series limit was reached.",
            &labels,
            move || overflow.overflow_total(),
        );
        let (stop, stopped) = watch::channel(false);
        let served = store.clone();
        let open_metrics = config.enable_open_metrics;
        tracing::info!(exporter = id, endpoint = %config.endpoint, "prometheus exporter serving /metrics");
        let server = tokio::spawn(crate::net::serve(
            listener,
            None,
            move |request| {
                let store = served.clone();
                async move { scrape(store, request, open_metrics).await }
            },
            stopped,
            Duration::from_secs(1),
        ));
        Ok(PrometheusExporter {
            store,
            stop,
            server: std::sync::Mutex::new(Some(server)),
        })
    }

    /// The series it serves.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

async fn scrape(
    store: Arc<Store>,
    request: http::Request<hyper::body::Incoming>,
    open_metrics: bool,
) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return crate::net::text(StatusCode::NOT_FOUND, "metrics are served on /metrics");
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return crate::net::text(StatusCode::METHOD_NOT_ALLOWED, "use GET to scrape /metrics");
    }
    let header_text = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let format = Format::negotiate(header_text(header::ACCEPT).as_deref(), open_metrics);
    let gzip = header_text(header::ACCEPT_ENCODING).is_some_and(|v| accepts_gzip(&v));
    let rendered = tokio::task::spawn_blocking(move || {
        store.expire(&mut |_| {});
        let body = render::render(&store, format);
        if gzip {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            encoder.write_all(&body).and_then(|_| encoder.finish())
        } else {
            Ok(body)
        }
    })
    .await;
    let body = match rendered {
        Ok(Ok(body)) => body,
        _ => {
            return crate::net::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed",
            );
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(format.content_type()),
    );
    if gzip {
        headers.insert(
            header::CONTENT_ENCODING,
            http::HeaderValue::from_static("gzip"),
        );
    }
    headers.insert(
        header::VARY,
        http::HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    response
}

/// Whether an `Accept-Encoding` value allows gzip (present and not `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                == Some(0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

impl Exporter for PrometheusExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let requests = super::decode::metrics_requests(batch)?;
            let mut dropped = 0;
            let mut invalid = 0;
            for request in &requests {
                let report = self.store.ingest(request, &mut |_| {});
                dropped += report.overflow;
                invalid += report.invalid;
            }
            if self.store.sweep_due() {
                self.store.expire(&mut |_| {});
            }
            if dropped + invalid == 0 {
                return Ok(Exported::default());
            }
            Ok(Exported {
                rejected: dropped + invalid,
                message: format!(
                    "{dropped} data points over max_series, {invalid} not expressible in Prometheus \
                     (type conflict, unspecified temporality, exponential histogram without sum)"
                ),
                ..Default::default()
            })
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            let server = self.server.lock().ok().and_then(|mut s| s.take());
            if let Some(server) = server {
                let _ = server.await;
            }
        })
    }
}
