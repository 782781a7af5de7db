//! Exporter `loki`: log records into Grafana Loki through its push API (`POST /loki/api/v1/push`), as
//! block-snappy protobuf `PushRequest`s (the default) or JSON (`encoding: json`, gzip-compressed).
//!
//! * **Labels stay few.** Index labels are the resource attributes Loki 3's OTLP path promotes
//!   ([`labels::DEFAULT_RESOURCE_LABELS`]) and `level` from the severity; `labels:` adds chosen resource or
//!   record attributes, each capped in distinct values. Everything else — `trace_id`, `span_id`, attributes,
//!   other resource attributes — is structured metadata. Ids can never be labels (`validate` refuses them).
//!   Past a cap (`labels.max_values_per_label`, `max_streams`, 15 label names), the entry still goes out, with
//!   the value as structured metadata, counted in `vigil_loki_label_overflow_total`.
//! * **Loki's per-stream rules hold before sending.** Entries are grouped by stream and sorted by time; an entry
//!   older than its stream's newest minus `out_of_order_window`, older than `reject_old_samples_max_age` or too
//!   far in the future is rewritten to an accepted time with its `original_timestamp` as metadata, or dropped
//!   (`old_entries`); a line longer than `max_line_size` is truncated or dropped (`line_too_long`). Both counted
//!   in `vigil_loki_adjusted_entries_total{reason,action}`.
//! * **Errors are read, not guessed.** 429, 5xx and network errors are retried with backoff (honouring
//!   `Retry-After` when a proxy sets one; Loki itself never does). A 400 means Loki kept the valid entries: its
//!   body is parsed and the rejected entries counted by reason in `vigil_loki_rejected_entries_total{reason}`;
//!   nothing is sent twice. 401, 403 and 404 are configuration problems and say so.
//!
//! One consumer by default: entries of a stream must reach Loki in order.

pub mod labels;
pub mod otlp;
pub mod response;
pub mod translate;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use prost::Message;
use serde::Deserialize;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;

use super::http::{HttpClient, HttpClientTls, http_client, post, retrying};
use super::{
    Compression, ExportError, Exported, Exporter, Headers, QueueSettings, RetrySettings,
    header_pairs, validate_headers,
};
use crate::component::Checker;
use crate::pipeline::{Batch, BoxFuture};
use crate::telemetry::{Counter, Registry};
pub use labels::DEFAULT_RESOURCE_LABELS;
pub use translate::{Adjustments, StreamState, TenantPush, Translator};

/// How a 429 reads in errors, so giving up on one counts it as rate limited.
const RATE_LIMITED: &str = "429 rate limited";

/// The push API's path under the endpoint.
const PUSH_PATH: &str = "/loki/api/v1/push";

/// Body encoding.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LokiEncoding {
    /// Block-snappy protobuf `PushRequest` (Loki's native format; smallest and cheapest).
    #[default]
    Protobuf,
    /// The JSON push body, gzip-compressed unless `compression: none`.
    Json,
    /// OTLP/HTTP protobuf to Loki 3's native `/otlp/v1/logs`, gzip-compressed unless `compression: none`; the
    /// same streams expressed as resources (see [`otlp`]).
    Otlp,
}

/// How each log line is written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// The body alone; attributes go to structured metadata (what Loki's own OTLP path does).
    #[default]
    Raw,
    /// `{"body": …, "<attribute>": …}`: the body with the record's attributes (query with `| json`).
    Json,
    /// `msg="…" key=value …` (query with `| logfmt`).
    Logfmt,
}

/// What happens to a line longer than `max_line_size`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TooLongAction {
    /// Cut at `max_line_size` (on a character boundary), with `truncated_from_bytes` as metadata.
    #[default]
    Truncate,
    /// Leave the entry out.
    Drop,
}

/// What happens to an entry Loki would refuse for its timestamp.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OldEntryAction {
    /// Send it at the oldest time Loki accepts, with `original_timestamp` (ns) as metadata.
    #[default]
    Rewrite,
    /// Leave it out.
    Drop,
}

/// `labels`: index labels beyond the defaults.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// Resource attributes that become labels (names sanitised: `k8s.node.name` → `k8s_node_name`).
    pub resource: Vec<String>,
    /// Log record attributes that become labels.
    pub attributes: Vec<String>,
    /// A `level` label from the severity (`trace`, `debug`, `info`, `warn`, `error`, `critical`, `fatal`).
    pub level: bool,
    /// Distinct values one of the labels above may take; later values go to structured metadata.
    pub max_values_per_label: usize,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        LabelsConfig {
            resource: Vec::new(),
            attributes: Vec::new(),
            level: true,
            max_values_per_label: 100,
        }
    }
}

/// `auth`: credentials for Loki or the proxy in front of it; values may use `${env:…}`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LokiAuth {
    /// Basic auth user (Grafana Cloud: the numeric instance id). Empty (an unset `${env:…:-}`) is unset.
    #[serde(deserialize_with = "crate::component::empty_as_none")]
    pub username: Option<String>,
    /// Basic auth password or API token; empty is unset.
    #[serde(deserialize_with = "crate::component::empty_as_none")]
    pub password: Option<String>,
    /// `Authorization: Bearer …`; empty is unset.
    #[serde(deserialize_with = "crate::component::empty_as_none")]
    pub bearer_token: Option<String>,
}

/// `exporters.loki`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LokiExporterConfig {
    /// Loki's base URL (`http://loki:3100`); the push path is appended unless the URL already ends with it.
    pub endpoint: String,
    /// `protobuf` (default), `json`, or `otlp` (Loki 3's `/otlp/v1/logs`).
    pub encoding: LokiEncoding,
    /// Tenant sent as `X-Scope-OrgID` (Loki's `auth_enabled: true`, the default, requires one).
    pub tenant_id: Option<String>,
    /// Resource attribute whose value is the tenant, when present (else `tenant_id`).
    pub tenant_id_attribute: Option<String>,
    /// Extra request headers.
    pub headers: Headers,
    /// Basic or bearer credentials.
    pub auth: LokiAuth,
    /// TLS for `https://` endpoints.
    pub tls: HttpClientTls,
    /// Time allowed for one request.
    #[serde(with = "crate::component::duration")]
    pub timeout: Duration,
    /// Compression of JSON bodies: `gzip` (default) or `none`. Protobuf bodies are always snappy, as Loki requires.
    pub compression: Compression,
    /// How lines are written: `raw` (default), `json` or `logfmt`.
    pub line_format: LineFormat,
    /// Use Loki 3's default resource labels (else only `service_name`).
    pub default_labels: bool,
    /// Extra labels and their caps.
    pub labels: LabelsConfig,
    /// Most streams this exporter creates; entries of further streams go to the stream of the default labels.
    pub max_streams: usize,
    /// Longest line in bytes (Loki's `max_line_size`, 256 KB by default).
    pub max_line_size: usize,
    /// `truncate` (default) or `drop` lines over `max_line_size`.
    pub line_too_long: TooLongAction,
    /// How far behind its stream's newest entry Loki accepts an entry (`max_chunk_age / 2`, 1 h by default).
    #[serde(with = "crate::component::duration")]
    pub out_of_order_window: Duration,
    /// Oldest entry Loki accepts (its `reject_old_samples_max_age`, 7 days by default).
    #[serde(with = "crate::component::duration")]
    pub reject_old_samples_max_age: Duration,
    /// How far in the future Loki accepts an entry (its `creation_grace_period`, 10 min by default).
    #[serde(with = "crate::component::duration")]
    pub creation_grace_period: Duration,
    /// `rewrite` (default) or `drop` entries Loki would refuse for their timestamp.
    pub old_entries: OldEntryAction,
    /// Largest push, in bytes of lines and metadata before compression.
    pub max_batch_bytes: usize,
    /// Most entries in one push.
    pub max_batch_entries: usize,
    /// Retries of 429, 5xx and network errors.
    pub retry_on_failure: RetrySettings,
    /// The queue in front of it; one consumer keeps each stream in order.
    pub sending_queue: QueueSettings,
}

impl LokiExporterConfig {
    /// Every index label name this exporter can write with this config (sanitised): `service_name`, Loki 3's
    /// default resource labels when `default_labels` is on, `level` when `labels.level` is, and the chosen
    /// resource and record attributes. LogQL selectors over its streams can use no other label.
    pub fn label_names(&self) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::from(["service_name".to_string()]);
        if self.default_labels {
            names.extend(
                labels::DEFAULT_RESOURCE_LABELS
                    .iter()
                    .map(|n| labels::sanitize(n)),
            );
        }
        if self.labels.level {
            names.insert("level".into());
        }
        names.extend(
            self.labels
                .resource
                .iter()
                .chain(&self.labels.attributes)
                .map(|n| labels::sanitize(n)),
        );
        names
    }
}

impl Default for LokiExporterConfig {
    fn default() -> Self {
        LokiExporterConfig {
            endpoint: String::new(),
            encoding: LokiEncoding::default(),
            tenant_id: None,
            tenant_id_attribute: None,
            headers: Headers::new(),
            auth: LokiAuth::default(),
            tls: HttpClientTls::default(),
            timeout: Duration::from_secs(10),
            compression: Compression::Gzip,
            line_format: LineFormat::default(),
            default_labels: true,
            labels: LabelsConfig::default(),
            max_streams: 1000,
            max_line_size: 256 * 1024,
            line_too_long: TooLongAction::default(),
            out_of_order_window: Duration::from_secs(3600),
            reject_old_samples_max_age: Duration::from_secs(7 * 24 * 3600),
            creation_grace_period: Duration::from_secs(600),
            old_entries: OldEntryAction::default(),
            max_batch_bytes: 1 << 20,
            max_batch_entries: 10_000,
            retry_on_failure: RetrySettings::default(),
            sending_queue: QueueSettings {
                queue_size: 1000,
                num_consumers: 1,
                storage: None,
            },
        }
    }
}

impl LokiExporterConfig {
    /// The URL pushes go to: the push API's, or the OTLP endpoint's with `encoding: otlp`.
    pub fn push_url(&self) -> String {
        let path = match self.encoding {
            LokiEncoding::Otlp => otlp::OTLP_PATH,
            LokiEncoding::Protobuf | LokiEncoding::Json => PUSH_PATH,
        };
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with(path) {
            base.to_string()
        } else {
            format!("{base}{path}")
        }
    }

    /// Checks values serde cannot.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.endpoint.is_empty() {
            check.error(
                &format!("{path}.endpoint"),
                "is required: Loki's base URL, e.g. `http://127.0.0.1:3100`",
            );
        } else {
            match Uri::from_str(&self.push_url()) {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) => {}
                _ => check.error(
                    &format!("{path}.endpoint"),
                    format!("`{}` is not an http(s) URL", self.endpoint),
                ),
            }
        }
        let mut names: Vec<String> = Vec::new();
        for (field, keys) in [
            ("resource", &self.labels.resource),
            ("attributes", &self.labels.attributes),
        ] {
            for (i, key) in keys.iter().enumerate() {
                let label = labels::sanitize(key);
                if let Some(why) = labels::forbidden(&label) {
                    check.error(
                        &format!("{path}.labels.{field}[{i}]"),
                        format!("`{key}` cannot be a Loki label: it {why}"),
                    );
                }
                names.push(label);
            }
        }
        // A record rarely has every default attribute; what can be checked is the configured extras alone.
        if names.len() + 1 + usize::from(self.labels.level) > labels::MAX_LABEL_NAMES {
            check.error(
                &format!("{path}.labels"),
                format!(
                    "{} label names besides `service_name`{}: Loki accepts at most {} per stream",
                    names.len(),
                    if self.labels.level {
                        " and `level`"
                    } else {
                        ""
                    },
                    labels::MAX_LABEL_NAMES
                ),
            );
        }
        if self.labels.max_values_per_label == 0 {
            check.error(
                &format!("{path}.labels.max_values_per_label"),
                "must be at least 1",
            );
        }
        if self.max_streams == 0 {
            check.error(&format!("{path}.max_streams"), "must be at least 1");
        }
        if self.max_line_size == 0 {
            check.error(&format!("{path}.max_line_size"), "must be at least 1");
        }
        if self.max_batch_entries == 0 {
            check.error(&format!("{path}.max_batch_entries"), "must be at least 1");
        }
        if self.max_batch_bytes < 1024 {
            check.error(&format!("{path}.max_batch_bytes"), "must be at least 1024");
        }
        if self.out_of_order_window.is_zero() {
            check.error(
                &format!("{path}.out_of_order_window"),
                "must be longer than 0s",
            );
        }
        if self.compression == Compression::Zstd && self.encoding != LokiEncoding::Otlp {
            check.error(
                &format!("{path}.compression"),
                "Loki's push API accepts `gzip` or `none` (protobuf bodies are always snappy); `zstd` is for `encoding: otlp`",
            );
        }
        if self.auth.bearer_token.is_some()
            && (self.auth.username.is_some() || self.auth.password.is_some())
        {
            check.error(
                &format!("{path}.auth"),
                "set either `bearer_token` or `username`/`password`, not both",
            );
        }
        if self.auth.password.is_some() && self.auth.username.is_none() {
            check.error(
                &format!("{path}.auth.username"),
                "is required with `password`",
            );
        }
        if self.tenant_id.is_some()
            && HeaderValue::from_str(self.tenant_id.as_deref().unwrap_or("")).is_err()
        {
            check.error(&format!("{path}.tenant_id"), "is not a valid header value");
        }
        validate_headers(&self.headers, check, path);
        self.retry_on_failure.validate(check, path);
    }
}

/// The exporter's counters.
struct Counters {
    registry: Registry,
    id: String,
}

impl Counters {
    fn rejected(&self, reason: &str) -> Counter {
        self.registry.counter(
            "vigil_loki_rejected_entries_total",
            "Entries Loki refused, by Loki's reason.",
            &[("exporter", &self.id), ("reason", reason)],
        )
    }

    fn adjusted(&self, reason: &str, action: &str) -> Counter {
        self.registry.counter(
            "vigil_loki_adjusted_entries_total",
            "Entries changed or left out before sending so that Loki accepts the rest, by reason and action.",
            &[("exporter", &self.id), ("reason", reason), ("action", action)],
        )
    }

    fn overflow(&self, label: &str) -> Counter {
        self.registry.counter(
            "vigil_loki_label_overflow_total",
            "Label values sent as structured metadata because a cardinality cap was reached, by label.",
            &[("exporter", &self.id), ("label", label)],
        )
    }
}

/// Pushes log records to Loki.
pub struct LokiExporter {
    translator: Translator,
    state: Arc<Mutex<StreamState>>,
    client: HttpClient,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    encoding: LokiEncoding,
    compression: Compression,
    timeout: Duration,
    retry: RetrySettings,
    counters: Counters,
}

impl LokiExporter {
    /// Builds the client.
    pub fn new(config: &LokiExporterConfig, id: &str, registry: &Registry) -> Result<Self, String> {
        let url = Uri::from_str(&config.push_url())
            .map_err(|e| format!("`{}` is not a URL: {e}", config.endpoint))?;
        let mut headers = header_pairs(&config.headers);
        let auth = match (&config.auth.bearer_token, &config.auth.username) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Some(user)) => Some(format!(
                "Basic {}",
                translate::any_text(&vigil_proto::otlp::common::v1::AnyValue {
                    value: Some(vigil_proto::otlp::common::v1::any_value::Value::BytesValue(
                        format!("{user}:{}", config.auth.password.as_deref().unwrap_or(""))
                            .into_bytes()
                    )),
                })
            )),
            (None, None) => None,
        };
        if let Some(auth) = auth {
            let mut value = HeaderValue::from_str(&auth)
                .map_err(|_| "the credentials are not a valid header value".to_string())?;
            value.set_sensitive(true);
            headers.push((header::AUTHORIZATION, value));
        }
        if config.encoding == LokiEncoding::Otlp {
            let missing = otlp::missing_index_config(
                config.labels.level,
                &config.labels.resource,
                &config.labels.attributes,
            );
            if !missing.is_empty() {
                tracing::warn!(
                    exporter = id,
                    "encoding: otlp: Loki makes labels of {missing:?} only if its configuration says so; add to Loki's \
                     `limits_config`: `otlp_config: {{resource_attributes: {{attributes_config: [{{action: index_label, \
                     attributes: {missing:?}}}]}}}}`, or set `labels.level: false` and drop them from `labels`"
                );
            }
        }
        let state = Arc::new(Mutex::new(StreamState::default()));
        let streams = state.clone();
        registry.gauge_fn(
            "vigil_loki_streams",
            "Streams a Loki exporter has created (bounded by max_streams).",
            &[("exporter", id)],
            move || {
                streams
                    .lock()
                    .map(|s| s.cardinality.stream_count() as f64)
                    .unwrap_or(0.0)
            },
        );
        Ok(LokiExporter {
            translator: Translator::new(config),
            state,
            client: http_client(&config.tls)?,
            url,
            headers,
            encoding: config.encoding,
            compression: config.compression,
            timeout: config.timeout,
            retry: config.retry_on_failure.clone(),
            counters: Counters {
                registry: registry.clone(),
                id: id.to_string(),
            },
        })
    }

    /// The pushes for `batch`, with the adjustments counted.
    pub fn translate(&self, batch: &Batch) -> Result<Vec<TenantPush>, ExportError> {
        let requests = batch
            .chunks
            .iter()
            .map(|chunk| {
                ExportLogsServiceRequest::decode(chunk.bytes.clone()).map_err(|e| {
                    ExportError::Undecodable {
                        message: format!("batch does not decode as OTLP logs: {e}"),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let (pushes, adjustments) = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.translator.translate(&requests, &mut state, now)
        };
        for ((reason, action), n) in &adjustments.entries {
            self.counters.adjusted(reason, action).add(*n);
        }
        for (label, n) in &adjustments.label_overflow {
            self.counters.overflow(label).add(*n);
        }
        Ok(pushes)
    }

    /// The body of one push and its request headers (content type and encoding, tenant, configured ones).
    fn request(
        &self,
        push: &TenantPush,
    ) -> Result<(Bytes, Vec<(HeaderName, HeaderValue)>), ExportError> {
        let (raw, content_type) = match self.encoding {
            LokiEncoding::Protobuf => {
                let mut raw = Vec::with_capacity(push.push.byte_len() + 1024);
                push.push.encode_protobuf(&mut raw);
                let compressed = snap::raw::Encoder::new().compress_vec(&raw).map_err(|e| {
                    ExportError::Permanent {
                        message: format!("snappy compression failed: {e}"),
                    }
                })?;
                // Snappy is part of the push API's protobuf format, not a Content-Encoding.
                (compressed, "application/x-protobuf")
            }
            LokiEncoding::Json => {
                let mut raw = Vec::new();
                let labels = &push.stream_labels;
                push.push.encode_json(
                    &|stream| {
                        labels
                            .get(stream.position())
                            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                            .unwrap_or_default()
                    },
                    &mut raw,
                );
                (raw, "application/json")
            }
            LokiEncoding::Otlp => (
                otlp::to_request(push, &self.translator).encode_to_vec(),
                "application/x-protobuf",
            ),
        };
        let compression = match self.encoding {
            LokiEncoding::Protobuf => Compression::None,
            LokiEncoding::Json | LokiEncoding::Otlp => self.compression,
        };
        let failed = |what: &str, e: std::io::Error| ExportError::Permanent {
            message: format!("{what} failed: {e}"),
        };
        let (body, encoding) = match compression {
            Compression::None => (raw, None),
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                let gz = encoder
                    .write_all(&raw)
                    .and_then(|()| encoder.finish())
                    .map_err(|e| failed("gzip", e))?;
                (gz, Some("gzip"))
            }
            Compression::Zstd => (
                zstd::bulk::compress(&raw, 1).map_err(|e| failed("zstd", e))?,
                Some("zstd"),
            ),
        };
        let mut headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))];
        if let Some(encoding) = encoding {
            headers.push((header::CONTENT_ENCODING, HeaderValue::from_static(encoding)));
        }
        if let Some(tenant) = &push.tenant
            && let Ok(value) = HeaderValue::from_str(tenant)
        {
            headers.push((HeaderName::from_static("x-scope-orgid"), value));
        }
        headers.extend(self.headers.iter().cloned());
        Ok((Bytes::from(body), headers))
    }

    /// One POST. `Ok(rejected)` on 2xx (0) or 400 (what Loki refused, counted by reason).
    async fn send(
        &self,
        push: &TenantPush,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<u64, ExportError> {
        let url = &self.url;
        let reply = post(&self.client, url, headers, body, self.timeout).await?;
        let status = reply.status;
        if status.is_success() {
            return Ok(0);
        }
        let text = String::from_utf8_lossy(&reply.body[..reply.body.len().min(64 * 1024)])
            .trim()
            .to_string();
        let wait = reply.retry_after;
        let sent = push.push.entry_count() as u64;
        let tenant = push.tenant.as_deref().unwrap_or("(none)");
        match status {
            StatusCode::BAD_REQUEST => {
                let mut rejected = 0;
                for (reason, n) in response::rejections(&text, sent) {
                    self.counters.rejected(reason).add(n);
                    rejected += n;
                }
                let rejected = rejected.min(sent);
                tracing::warn!(url = %url, tenant, rejected, sent, error = %first_line(&text),
                    "Loki refused part of a push; the other entries were stored and are not sent again");
                Ok(rejected)
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let scope = response::rate_limit_scope(&text);
                let hint = match scope {
                    "stream" => {
                        "one stream is over Loki's per-stream rate limit: split it with another label, or raise `per_stream_rate_limit`"
                    }
                    "streams" => {
                        "Loki's active stream limit is reached: fewer label values, or raise `max_global_streams_per_user`"
                    }
                    _ => {
                        "the tenant is over Loki's ingestion rate: raise `ingestion_rate_mb` / `ingestion_burst_size_mb`, or send less"
                    }
                };
                Err(ExportError::Retryable {
                    message: format!(
                        "POST {url}: {RATE_LIMITED} ({scope}): {hint}: {}",
                        first_line(&text)
                    ),
                    retry_after: wait,
                })
            }
            StatusCode::UNAUTHORIZED => Err(ExportError::Permanent {
                message: format!(
                    "POST {url}: 401 Unauthorized: Loki (or its gateway) wants credentials: set `auth.username`/`auth.password` or `auth.bearer_token`: {}",
                    first_line(&text)
                ),
            }),
            StatusCode::FORBIDDEN => Err(ExportError::Permanent {
                message: format!(
                    "POST {url}: 403 Forbidden: the credentials are not allowed to write for tenant {tenant}: check `tenant_id` and the token's scope: {}",
                    first_line(&text)
                ),
            }),
            StatusCode::NOT_FOUND if self.encoding == LokiEncoding::Otlp => {
                Err(ExportError::Permanent {
                    message: format!(
                        "POST {url}: 404 Not Found: nothing serves Loki's OTLP endpoint here; Loki before 3.0 has none (use `encoding: protobuf`), and `endpoint` should be Loki's base URL such as http://loki:3100"
                    ),
                })
            }
            StatusCode::NOT_FOUND => Err(ExportError::Permanent {
                message: format!(
                    "POST {url}: 404 Not Found: nothing serves Loki's push API here; `endpoint` should be Loki's base URL such as http://loki:3100"
                ),
            }),
            status if status.is_server_error() => Err(ExportError::Retryable {
                message: format!("POST {url}: {status}: {}", first_line(&text)),
                retry_after: wait,
            }),
            status => Err(ExportError::Permanent {
                message: format!("POST {url}: {status}: {}", first_line(&text)),
            }),
        }
    }
}

/// The first line of an error body, at most 512 characters, for the log.
fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(512)
        .collect()
}

impl Exporter for LokiExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let pushes = self.translate(batch)?;
            let mut lost = batch
                .items
                .saturating_sub(pushes.iter().map(|p| p.push.entry_count() as u64).sum());
            let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
            if lost > 0 {
                reasons.insert(
                    "left out before sending (see vigil_loki_adjusted_entries_total)".into(),
                    lost,
                );
            }
            for push in &pushes {
                let (body, headers) = self.request(push)?;
                let sent = retrying(&self.retry, "Loki push", || {
                    self.send(push, body.clone(), &headers)
                })
                .await;
                let n = push.push.entry_count() as u64;
                match sent {
                    Ok(0) => {}
                    Ok(rejected) => {
                        lost += rejected;
                        *reasons
                            .entry("refused by Loki (see vigil_loki_rejected_entries_total)".into())
                            .or_default() += rejected;
                    }
                    Err(error) => {
                        if matches!(&error, ExportError::Retryable { message, .. } if message.contains(RATE_LIMITED))
                        {
                            self.counters.rejected("rate_limited").add(n);
                        }
                        if let ExportError::Permanent { message } = &error {
                            // 401, 403, 404: only a person can fix these; /readyz says so until a push succeeds.
                            self.counters
                                .registry
                                .problems()
                                .report(&super::worker::problem_key(&self.counters.id), message);
                        }
                        tracing::error!(%error, entries = n, "Loki push failed; giving up on it");
                        lost += n;
                        *reasons
                            .entry(format!("not delivered: {error}"))
                            .or_default() += n;
                    }
                }
            }
            if lost == 0 {
                Ok(Exported::default())
            } else {
                Ok(Exported {
                    rejected: lost,
                    message: reasons
                        .iter()
                        .map(|(why, n)| format!("{n} {why}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                    ..Default::default()
                })
            }
        })
    }
}

#[cfg(test)]
mod tests;
