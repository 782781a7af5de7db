//! Exporter `otlphttp`: OTLP/HTTP with protobuf (default) or JSON bodies.
//!
//! `endpoint` is a base URL to which `/v1/<signal>` is appended; `traces_endpoint` and friends are used as
//! given. Responses 429, 502, 503 and 504 are retried (after `Retry-After` when sent), all others are final, as
//! the OTLP specification says. A 2xx body is read for a partial success; an empty 2xx (Loki's 204) is success.

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use prost::Message;
use serde::Deserialize;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::json::protobuf_to_json;

use super::decode::partial_success;
use super::http::{HttpClient, HttpClientTls, http_client, post};
use super::{
    Compression, ExportError, Exported, Exporter, Headers, QueueSettings, RetrySettings,
    header_pairs, validate_headers,
};
use crate::component::Checker;
use crate::pipeline::{Batch, BoxFuture};

/// Body encoding.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `application/x-protobuf`.
    #[default]
    Proto,
    /// `application/json` (OTLP/JSON).
    Json,
}

/// `exporters.otlphttp`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpHttpExporterConfig {
    /// Base URL; `/v1/traces`, `/v1/metrics`, `/v1/logs` are appended.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Full URL for traces, overriding `endpoint`.
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    /// Full URL for metrics, overriding `endpoint`.
    #[serde(default)]
    pub metrics_endpoint: Option<String>,
    /// Full URL for logs, overriding `endpoint`.
    #[serde(default)]
    pub logs_endpoint: Option<String>,
    /// Body encoding.
    #[serde(default)]
    pub encoding: Encoding,
    /// Headers sent with every request.
    #[serde(default)]
    pub headers: Headers,
    /// Request compression.
    #[serde(default)]
    pub compression: Compression,
    /// Time allowed for one attempt.
    #[serde(default = "default_timeout", with = "crate::component::duration")]
    pub timeout: Duration,
    /// TLS for `https://` URLs.
    #[serde(default)]
    pub tls: HttpClientTls,
    /// The queue in front of it.
    #[serde(default)]
    pub sending_queue: QueueSettings,
    /// Retries.
    #[serde(default)]
    pub retry_on_failure: RetrySettings,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl OtlpHttpExporterConfig {
    fn url_override(&self, signal: Signal) -> Option<&String> {
        match signal {
            Signal::Traces => self.traces_endpoint.as_ref(),
            Signal::Metrics => self.metrics_endpoint.as_ref(),
            Signal::Logs => self.logs_endpoint.as_ref(),
        }
    }

    /// The URL a signal is posted to.
    pub fn url(&self, signal: Signal) -> Option<String> {
        self.url_override(signal).cloned().or_else(|| {
            self.endpoint
                .as_ref()
                .map(|base| format!("{}/v1/{}", base.trim_end_matches('/'), signal.as_str()))
        })
    }

    pub(super) fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if Signal::ALL.iter().all(|s| self.url(*s).is_none()) {
            check.error(
                path,
                "set `endpoint` (or `traces_endpoint`, `metrics_endpoint`, `logs_endpoint`) to the backend's URL",
            );
            return;
        }
        for signal in Signal::ALL {
            let Some(url) = self.url(signal) else {
                continue;
            };
            let ok = Uri::from_str(&url)
                .ok()
                .and_then(|u| u.scheme_str().map(|s| s == "http" || s == "https"))
                .unwrap_or(false);
            if !ok {
                let specific = format!("{}_endpoint", signal.as_str());
                let field = match (&self.endpoint, self.url_override(signal)) {
                    (_, Some(_)) | (None, None) => specific,
                    (Some(_), None) => "endpoint".to_string(),
                };
                check.error(
                    &format!("{path}.{field}"),
                    format!("`{url}` is not an http:// or https:// URL"),
                );
                return;
            }
        }
        validate_headers(&self.headers, check, path);
        if self.timeout.is_zero() {
            check.error(&format!("{path}.timeout"), "must be longer than 0s");
        }
    }
}

/// Sends batches over OTLP/HTTP.
pub struct OtlpHttpExporter {
    client: HttpClient,
    urls: [Option<Uri>; 3],
    headers: Vec<(HeaderName, HeaderValue)>,
    encoding: Encoding,
    compression: Compression,
    timeout: Duration,
}

impl OtlpHttpExporter {
    /// Builds the client.
    pub fn new(config: &OtlpHttpExporterConfig) -> Result<Self, String> {
        let url = |signal: Signal| -> Result<Option<Uri>, String> {
            config
                .url(signal)
                .map(|url| Uri::from_str(&url).map_err(|e| format!("`{url}` is not a URL: {e}")))
                .transpose()
        };
        let client = http_client(&config.tls)?;
        Ok(OtlpHttpExporter {
            client,
            urls: [
                url(Signal::Traces)?,
                url(Signal::Metrics)?,
                url(Signal::Logs)?,
            ],
            headers: header_pairs(&config.headers),
            encoding: config.encoding,
            compression: config.compression,
            timeout: config.timeout,
        })
    }

    fn body(&self, batch: &Batch) -> Result<Bytes, ExportError> {
        let raw = match self.encoding {
            Encoding::Proto => batch.to_bytes(),
            Encoding::Json => {
                let mut out = Vec::new();
                protobuf_to_json(batch.signal, &batch.to_bytes(), &mut out).map_err(|e| {
                    ExportError::Undecodable {
                        message: format!("batch does not decode as OTLP: {e}"),
                    }
                })?;
                Bytes::from(out)
            }
        };
        let io = |e: std::io::Error| ExportError::Permanent {
            message: format!("compression failed: {e}"),
        };
        Ok(match self.compression {
            Compression::None => raw,
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&raw).map_err(io)?;
                Bytes::from(encoder.finish().map_err(io)?)
            }
            Compression::Zstd => Bytes::from(zstd::bulk::compress(&raw, 1).map_err(io)?),
        })
    }
}

fn error_text(body: &[u8], protobuf: bool) -> String {
    if protobuf
        && let Ok(status) = vigil_proto::rpc::Status::decode(body)
        && !status.message.is_empty()
    {
        return status.message;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
    text.trim().to_string()
}

impl Exporter for OtlpHttpExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let index = Signal::ALL
                .iter()
                .position(|s| *s == batch.signal)
                .unwrap_or(0);
            let Some(url) = &self.urls[index] else {
                return Err(ExportError::Permanent {
                    message: format!("no URL is configured for {}", batch.signal),
                });
            };
            let mut headers = self.headers.clone();
            headers.push((
                header::CONTENT_TYPE,
                HeaderValue::from_static(match self.encoding {
                    Encoding::Proto => "application/x-protobuf",
                    Encoding::Json => "application/json",
                }),
            ));
            match self.compression {
                Compression::Gzip => {
                    headers.push((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")))
                }
                Compression::Zstd => {
                    headers.push((header::CONTENT_ENCODING, HeaderValue::from_static("zstd")))
                }
                Compression::None => {}
            }
            let reply = post(&self.client, url, &headers, self.body(batch)?, self.timeout).await?;
            let status = reply.status;
            if status.is_success() {
                if reply.body.is_empty() {
                    return Ok(Exported::default());
                }
                return Ok(match self.encoding {
                    Encoding::Proto => partial_success(batch.signal, &reply.body),
                    Encoding::Json => json_partial_success(&reply.body),
                });
            }
            let message = format!(
                "POST {url}: HTTP {status}: {}",
                error_text(&reply.body, reply.protobuf)
            );
            match status {
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Err(ExportError::Retryable {
                    message,
                    retry_after: reply.retry_after,
                }),
                StatusCode::BAD_REQUEST => Err(ExportError::Undecodable { message }),
                _ => Err(ExportError::Permanent { message }),
            }
        })
    }
}

fn json_partial_success(body: &[u8]) -> Exported {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Exported::default();
    };
    let Some(partial) = value.get("partialSuccess") else {
        return Exported::default();
    };
    let rejected = ["rejectedSpans", "rejectedDataPoints", "rejectedLogRecords"]
        .iter()
        .find_map(|k| partial.get(*k))
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(0);
    Exported {
        rejected,
        message: partial
            .get("errorMessage")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string(),
        ..Default::default()
    }
}
