//! Exporter `prometheusremotewrite`: pushes metrics with the Prometheus remote-write 1.0 protocol (protobuf
//! `WriteRequest`, snappy block compression, the required headers) to Prometheus, Mimir, Thanos, Cortex,
//! VictoriaMetrics…
//!
//! Translation is the pull exporter's ([`crate::prometheus::store`]): the same names, labels, `target_info`,
//! and delta accumulation. Each batch is translated once and then sent, retried with backoff on network
//! errors, 5xx and 429, and never on other 4xx, which the remote-write specification forbids. Retrying happens
//! here rather than in the shared worker, because re-translating a batch would add its deltas twice. Series
//! that expire get a stale marker, so Prometheus ends them at once instead of after five minutes.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Uri, header};
use prost::Message;
use serde::Deserialize;
use vigil_proto::prometheus::{
    Exemplar, Label, MetricMetadata, MetricType, STALE_NAN, Sample, TimeSeries, WriteRequest,
};

use super::http::{HttpClient, HttpClientTls, http_client, post, retrying};
use super::{
    ExportError, Exported, Exporter, Headers, QueueSettings, RetrySettings, header_pairs,
    validate_headers,
};
use crate::component::Checker;
use crate::pipeline::{Batch, BoxFuture};
use crate::prometheus::naming::Kind;
use crate::prometheus::options::{ResourceConversion, store_settings, validate_const_labels};
use crate::prometheus::render::to_classic;
use crate::prometheus::store::{Changed, Clock, Histogram, SeriesValue, Store, SystemClock};
use crate::telemetry::Registry;

/// `exporters.prometheusremotewrite`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    /// The receiver's URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub endpoint: String,
    /// Extra request headers (tenant ids, authorization).
    pub headers: Headers,
    /// TLS for `https://` endpoints.
    pub tls: HttpClientTls,
    /// Time allowed for one request.
    #[serde(with = "crate::component::duration")]
    pub timeout: Duration,
    /// Prefix of every metric name.
    pub namespace: String,
    /// Labels added to every series unless it already has them (Prometheus' `external_labels`).
    pub external_labels: BTreeMap<String, String>,
    /// Add unit and type suffixes (`_seconds`, `_total`, `_ratio`) to names.
    pub add_metric_suffixes: bool,
    /// Copy every resource attribute onto every series.
    pub resource_to_telemetry_conversion: ResourceConversion,
    /// Resource attributes copied onto every series (when not all are).
    pub promote_resource_attributes: Vec<String>,
    /// Leave out `otel_scope_name`/`otel_scope_version` labels.
    pub without_scope_info: bool,
    /// Leave out the `target_info` series.
    pub without_target_info: bool,
    /// A series not updated for this long ends with a stale marker.
    #[serde(with = "crate::component::duration")]
    pub metric_expiration: Duration,
    /// Most series tracked; data points of new series beyond it are dropped and counted.
    pub max_series: usize,
    /// Largest uncompressed `WriteRequest`; bigger batches are split.
    pub max_batch_size_bytes: usize,
    /// Send `# HELP`/`# TYPE`/unit metadata with the series.
    pub send_metadata: bool,
    /// Retries of 5xx, 429 and network errors.
    pub retry_on_failure: RetrySettings,
    /// The queue in front of it. One consumer by default: samples of a series must arrive in order.
    pub sending_queue: QueueSettings,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            endpoint: String::new(),
            headers: Headers::new(),
            tls: HttpClientTls::default(),
            timeout: Duration::from_secs(5),
            namespace: String::new(),
            external_labels: BTreeMap::new(),
            add_metric_suffixes: true,
            resource_to_telemetry_conversion: ResourceConversion::default(),
            promote_resource_attributes: Vec::new(),
            without_scope_info: false,
            without_target_info: false,
            metric_expiration: Duration::from_secs(300),
            max_series: 100_000,
            max_batch_size_bytes: 3_000_000,
            send_metadata: true,
            retry_on_failure: RetrySettings::default(),
            sending_queue: QueueSettings {
                queue_size: 1000,
                num_consumers: 1,
                storage: None,
            },
        }
    }
}

impl RemoteWriteConfig {
    /// Checks values serde cannot.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.endpoint.is_empty() {
            check.error(
                &format!("{path}.endpoint"),
                "is required: the remote-write URL, e.g. `http://127.0.0.1:9090/api/v1/write`",
            );
        } else {
            match Uri::from_str(&self.endpoint) {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) => {}
                _ => check.error(
                    &format!("{path}.endpoint"),
                    format!("`{}` is not an http(s) URL", self.endpoint),
                ),
            }
        }
        if self.max_series == 0 {
            check.error(&format!("{path}.max_series"), "must be at least 1");
        }
        if self.max_batch_size_bytes < 1024 {
            check.error(
                &format!("{path}.max_batch_size_bytes"),
                "must be at least 1024",
            );
        }
        if self.metric_expiration.is_zero() {
            check.error(
                &format!("{path}.metric_expiration"),
                "must be longer than 0s",
            );
        }
        validate_const_labels(&self.external_labels, check, path);
        validate_headers(&self.headers, check, path);
        self.retry_on_failure.validate(check, path);
    }
}

/// Pushes series to a remote-write receiver.
pub struct RemoteWriteExporter {
    store: Arc<Store>,
    client: HttpClient,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    external_labels: Vec<(String, String)>,
    timeout: Duration,
    max_batch_size_bytes: usize,
    send_metadata: bool,
    retry: RetrySettings,
}

impl RemoteWriteExporter {
    /// Builds the client.
    pub fn new(config: &RemoteWriteConfig, id: &str, registry: &Registry) -> Result<Self, String> {
        Self::with_clock(config, id, registry, Arc::new(SystemClock))
    }

    /// Like [`RemoteWriteExporter::new`], reading time for expiry from `clock`.
    pub fn with_clock(
        config: &RemoteWriteConfig,
        id: &str,
        registry: &Registry,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let url = Uri::from_str(&config.endpoint)
            .map_err(|e| format!("`{}` is not a URL: {e}", config.endpoint))?;
        let store = Arc::new(Store::with_clock(
            store_settings(
                &config.namespace,
                &BTreeMap::new(),
                config.add_metric_suffixes,
                config.resource_to_telemetry_conversion.enabled,
                &config.promote_resource_attributes,
                config.metric_expiration,
                config.max_series,
                !config.without_scope_info,
                !config.without_target_info,
            ),
            clock,
        ));
        let exporter = RemoteWriteExporter {
            store,
            client: http_client(&config.tls)?,
            url,
            // The headers remote write 1.0 requires, then the configured ones (which may override them).
            headers: [
                (header::CONTENT_TYPE, "application/x-protobuf"),
                (header::CONTENT_ENCODING, "snappy"),
                (
                    HeaderName::from_static("x-prometheus-remote-write-version"),
                    "0.1.0",
                ),
            ]
            .into_iter()
            .map(|(name, value)| (name, HeaderValue::from_static(value)))
            .chain(header_pairs(&config.headers))
            .collect(),
            external_labels: config
                .external_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            timeout: config.timeout,
            max_batch_size_bytes: config.max_batch_size_bytes,
            send_metadata: config.send_metadata,
            retry: config.retry_on_failure.clone(),
        };
        let series = exporter.store.clone();
        registry.gauge_fn(
            "vigil_prometheus_exporter_series",
            "Series a Prometheus exporter currently tracks.",
            &[("exporter", id)],
            move || series.series_count() as f64,
        );
        Ok(exporter)
    }

    /// Translates a batch into write requests (split by size); ingests it into the store exactly once.
    pub fn translate(&self, batch: &Batch) -> Result<(Vec<WriteRequest>, u64), ExportError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut series: Vec<TimeSeries> = Vec::new();
        let mut metadata: BTreeMap<String, MetricMetadata> = BTreeMap::new();
        let mut dropped = 0;
        for request in super::decode::metrics_requests(batch)? {
            let report = self.store.ingest(&request, &mut |changed| {
                if self.send_metadata && !metadata.contains_key(changed.name) {
                    metadata.insert(changed.name.to_string(), self.metadata(&changed));
                }
                let stale = changed.ended.then_some(STALE_NAN);
                self.time_series(&changed, stale, now_ms, &mut series);
            });
            dropped += report.overflow + report.invalid;
        }
        if self.store.sweep_due() {
            self.store.expire(&mut |ended| {
                self.time_series(&ended, Some(STALE_NAN), now_ms, &mut series);
            });
        }
        let metadata: Vec<MetricMetadata> = metadata.into_values().collect();
        Ok((self.split(series, metadata), dropped))
    }

    fn metadata(&self, changed: &Changed<'_>) -> MetricMetadata {
        let metric_type = match changed.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
            Kind::Summary => MetricType::Summary,
        };
        MetricMetadata {
            r#type: metric_type as i32,
            metric_family_name: changed.name.to_string(),
            help: changed.help.to_string(),
            unit: changed.unit.to_string(),
        }
    }

    /// The remote-write series of one Prometheus series: one, or `_bucket`/`_sum`/`_count` (and quantiles).
    fn time_series(
        &self,
        changed: &Changed<'_>,
        stale: Option<f64>,
        now_ms: i64,
        out: &mut Vec<TimeSeries>,
    ) {
        let timestamp = match (stale, changed.series.timestamp_ms) {
            (Some(_), _) | (None, 0) => now_ms,
            (None, t) => t,
        };
        let first = out.len();
        let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
            let mut labels: Vec<Label> = Vec::with_capacity(changed.labels.len() + 3);
            labels.push(Label {
                name: "__name__".into(),
                value: format!("{}{suffix}", changed.name),
            });
            for (name, value) in changed.labels.iter() {
                labels.push(Label {
                    name: name.clone(),
                    value: value.clone(),
                });
            }
            if let Some((name, value)) = extra {
                labels.push(Label {
                    name: name.into(),
                    value,
                });
            }
            for (name, value) in &self.external_labels {
                if !labels.iter().any(|l| &l.name == name) {
                    labels.push(Label {
                        name: name.clone(),
                        value: value.clone(),
                    });
                }
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(TimeSeries {
                labels,
                samples: vec![Sample {
                    value: stale.unwrap_or(value),
                    timestamp,
                }],
                exemplars: Vec::new(),
            });
        };
        let histogram = |h: &Histogram, push: &mut Push<'_>| {
            let mut cumulative = 0u64;
            for (bound, count) in h.bounds.iter().zip(&h.counts) {
                cumulative += count;
                push(
                    "_bucket",
                    Some(("le", format_float(*bound))),
                    cumulative as f64,
                );
            }
            push("_bucket", Some(("le", "+Inf".into())), h.count as f64);
            push("_sum", None, h.sum);
            push("_count", None, h.count as f64);
        };
        match &changed.series.value {
            SeriesValue::Number(v) => push("", None, *v),
            SeriesValue::Histogram(h) => histogram(h, &mut push),
            SeriesValue::Exponential(e) => histogram(&to_classic(e), &mut push),
            SeriesValue::Summary(s) => {
                for (q, v) in &s.quantiles {
                    push("", Some(("quantile", format_float(*q))), *v);
                }
                push("_sum", None, s.sum);
                push("_count", None, s.count as f64);
            }
        }
        // Exemplars go on the counter's series or on their bucket's series (buckets come first, in order).
        if stale.is_none()
            && matches!(
                changed.series.value,
                SeriesValue::Number(_) | SeriesValue::Histogram(_)
            )
        {
            for exemplar in &changed.series.exemplars {
                if let Some(series) = out.get_mut(first + exemplar.bucket) {
                    series.exemplars.push(Exemplar {
                        labels: exemplar
                            .labels
                            .iter()
                            .map(|(name, value)| Label {
                                name: name.clone(),
                                value: value.clone(),
                            })
                            .collect(),
                        value: exemplar.value,
                        timestamp: (exemplar.time_unix_nano / 1_000_000) as i64,
                    });
                }
            }
        }
    }

    fn split(&self, series: Vec<TimeSeries>, metadata: Vec<MetricMetadata>) -> Vec<WriteRequest> {
        let mut requests = Vec::new();
        let mut current = WriteRequest {
            timeseries: Vec::new(),
            metadata,
        };
        let mut size = current.encoded_len();
        for ts in series {
            let len = ts.encoded_len() + 5;
            if size + len > self.max_batch_size_bytes && !current.timeseries.is_empty() {
                requests.push(std::mem::take(&mut current));
                size = 0;
            }
            size += len;
            current.timeseries.push(ts);
        }
        if !current.timeseries.is_empty() || !current.metadata.is_empty() {
            requests.push(current);
        }
        requests
    }

    /// One POST of one write request.
    async fn send(&self, body: Bytes) -> Result<(), ExportError> {
        let reply = post(&self.client, &self.url, &self.headers, body, self.timeout).await?;
        let status = reply.status;
        if status.is_success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&reply.body[..reply.body.len().min(512)])
            .trim()
            .to_string();
        let message = format!("POST {}: {status}: {text}", self.url);
        if status.is_server_error() || status.as_u16() == 429 {
            Err(ExportError::Retryable {
                message,
                retry_after: reply.retry_after,
            })
        } else {
            Err(ExportError::Permanent { message })
        }
    }
}

/// Adds one remote-write series: name suffix, extra label, value.
type Push<'a> = dyn FnMut(&str, Option<(&str, String)>, f64) + 'a;

/// A float the way Prometheus writes `le` and `quantile` values (`0.5`, `1`, `+Inf`).
fn format_float(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{}", value as i64);
    }
    format!("{value:?}")
}

impl Exporter for RemoteWriteExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let (requests, dropped) = self.translate(batch)?;
            for request in requests {
                let raw = request.encode_to_vec();
                let compressed = snap::raw::Encoder::new().compress_vec(&raw).map_err(|e| {
                    ExportError::Permanent {
                        message: format!("snappy compression failed: {e}"),
                    }
                })?;
                let body = Bytes::from(compressed);
                retrying(&self.retry, "remote write", || self.send(body.clone())).await?;
            }
            if dropped == 0 {
                Ok(Exported::default())
            } else {
                Ok(Exported {
                    rejected: dropped,
                    message: format!(
                        "{dropped} data points over max_series or not expressible in Prometheus"
                    ),
                    ..Default::default()
                })
            }
        })
    }
}

/// Shared with the tests: decodes a remote-write body as the receiver does.
pub fn decode_body(body: &[u8]) -> Result<WriteRequest, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy block format: {e}"))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| format!("not a WriteRequest: {e}"))
}

#[cfg(test)]
mod tests;
