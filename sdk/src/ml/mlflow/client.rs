//! The MLflow tracking server's REST API (`/api/2.0/mlflow/…` and the artifact proxy), one request per call;
//! retrying is the caller's choice, guided by [`MlflowError::is_retryable`].

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::json;

use super::batch::{KeyValue, LogBatch};
use super::{Auth, RunStatus};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request to the tracking server failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlflowError {
    /// The server could not be reached or did not answer in time.
    #[error("MLflow at {url} is unreachable: {reason}")]
    Unreachable {
        /// The request's URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The server answered with an error (`{"error_code", "message"}` in the body).
    #[error("MLflow answered {status} to {url}: {code} {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The request's URL.
        url: String,
        /// MLflow's `error_code` (`INVALID_PARAMETER_VALUE`, `RESOURCE_DOES_NOT_EXIST`…), empty when absent.
        code: String,
        /// MLflow's message, or the start of the body.
        message: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The answer was not what the API documents.
    #[error("MLflow's answer to {url} is not understood: {reason}")]
    Unexpected {
        /// The request's URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The tracking URI is not an http(s) URL.
    #[error(
        "MLFLOW_TRACKING_URI `{0}` is not an http:// or https:// URL (file stores and Databricks profiles are not supported)"
    )]
    BadUri(String),
}

impl MlflowError {
    /// Whether trying again later can help: the server is unreachable, busy (429) or failing (5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            MlflowError::Unreachable { .. } => true,
            MlflowError::Refused { status, .. } => *status == 429 || *status >= 500,
            MlflowError::Unexpected { .. } | MlflowError::BadUri(_) => false,
        }
    }

    /// The server's `Retry-After`, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            MlflowError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn code(&self) -> &str {
        match self {
            MlflowError::Refused { code, .. } => code,
            _ => "",
        }
    }
}

/// A run as the server describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// The run's id.
    pub run_id: String,
    /// Its experiment's id.
    pub experiment_id: String,
    /// Where its artifacts live (`mlflow-artifacts:/1/<run>/artifacts` behind the artifact proxy).
    pub artifact_uri: String,
    /// `RUNNING`, `FINISHED`, …
    pub status: String,
}

#[derive(Deserialize)]
struct RawRunInfo {
    run_id: String,
    experiment_id: String,
    #[serde(default)]
    artifact_uri: String,
    #[serde(default)]
    status: String,
}

impl From<RawRunInfo> for RunInfo {
    fn from(raw: RawRunInfo) -> Self {
        RunInfo {
            run_id: raw.run_id,
            experiment_id: raw.experiment_id,
            artifact_uri: raw.artifact_uri,
            status: raw.status,
        }
    }
}

/// A client of one tracking server.
#[derive(Clone)]
pub struct Client {
    base: String,
    authorization: Option<String>,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The authorization header is a secret.
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `tracking_uri` (`http://host:5000`), authenticated as `auth` says.
    pub fn new(tracking_uri: &str, auth: Option<&Auth>) -> Result<Client, MlflowError> {
        let base = tracking_uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.parse::<http::Uri>().is_err()
        {
            return Err(MlflowError::BadUri(tracking_uri.to_string()));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| MlflowError::Unreachable {
                url: base.clone(),
                reason: format!("no TLS root certificates: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Client {
            base,
            authorization: auth.map(Auth::header_value),
            http,
        })
    }

    /// The tracking URI this client talks to.
    pub fn tracking_uri(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Bytes, MlflowError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::USER_AGENT,
                concat!("vigil/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| MlflowError::Unexpected {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let unreachable = |reason: String| MlflowError::Unreachable {
            url: url.clone(),
            reason,
        };
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer in {} s", REQUEST_TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not complete in time".into()))?
            .map_err(|e| unreachable(error_chain(&e)))?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        #[derive(Deserialize, Default)]
        struct ErrorBody {
            #[serde(default)]
            error_code: String,
            #[serde(default)]
            message: String,
        }
        let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        let message = if parsed.message.is_empty() {
            String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
        } else {
            parsed.message
        };
        Err(MlflowError::Refused {
            status: status.as_u16(),
            url,
            code: parsed.error_code,
            message,
            retry_after,
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &str,
        body: serde_json::Value,
    ) -> Result<T, MlflowError> {
        let path = format!("/api/2.0/mlflow/{endpoint}");
        let bytes = if method == Method::GET {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let answer = self.send(method, &path, "application/json", bytes).await?;
        serde_json::from_slice(&answer).map_err(|e| MlflowError::Unexpected {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    /// The server's version (`GET /version`), which decides its limits; `None` when it does not say.
    pub async fn version(&self) -> Result<Option<String>, MlflowError> {
        match self
            .send(Method::GET, "/version", "text/plain", Bytes::new())
            .await
        {
            Ok(body) => Ok(Some(String::from_utf8_lossy(&body).trim().to_string())
                .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))),
            Err(e) if e.is_retryable() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The id of the experiment called `name`, created when missing (and restored when deleted).
    pub async fn experiment_id(&self, name: &str) -> Result<String, MlflowError> {
        #[derive(Deserialize)]
        struct Experiment {
            experiment_id: String,
            #[serde(default)]
            lifecycle_stage: String,
        }
        #[derive(Deserialize)]
        struct Found {
            experiment: Experiment,
        }
        #[derive(Deserialize)]
        struct Created {
            experiment_id: String,
        }
        let query = format!(
            "experiments/get-by-name?experiment_name={}",
            percent_encode(name)
        );
        match self.call::<Found>(Method::GET, &query, json!({})).await {
            Ok(found) => {
                if found.experiment.lifecycle_stage == "deleted" {
                    self.call::<serde_json::Value>(
                        Method::POST,
                        "experiments/restore",
                        json!({ "experiment_id": found.experiment.experiment_id }),
                    )
                    .await?;
                }
                return Ok(found.experiment.experiment_id);
            }
            Err(e) if e.code() == "RESOURCE_DOES_NOT_EXIST" => {}
            Err(e) => return Err(e),
        }
        match self
            .call::<Created>(Method::POST, "experiments/create", json!({ "name": name }))
            .await
        {
            Ok(created) => Ok(created.experiment_id),
            // Another job created it between our two calls.
            Err(e) if e.code() == "RESOURCE_ALREADY_EXISTS" => {
                let found: Found = self.call(Method::GET, &query, json!({})).await?;
                Ok(found.experiment.experiment_id)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a run (`RUNNING`) in `experiment_id`.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: Option<&str>,
        start_time_ms: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, MlflowError> {
        #[derive(Deserialize)]
        struct Run {
            info: RawRunInfo,
        }
        #[derive(Deserialize)]
        struct Created {
            run: Run,
        }
        let mut body = json!({
            "experiment_id": experiment_id,
            "start_time": start_time_ms,
            "tags": tags,
        });
        if let Some(name) = run_name {
            body["run_name"] = json!(name);
        }
        let created: Created = self.call(Method::POST, "runs/create", body).await?;
        Ok(created.run.info.into())
    }

    /// The run `run_id`.
    pub async fn get_run(&self, run_id: &str) -> Result<RunInfo, MlflowError> {
        #[derive(Deserialize)]
        struct Run {
            info: RawRunInfo,
        }
        #[derive(Deserialize)]
        struct Found {
            run: Run,
        }
        let found: Found = self
            .call(
                Method::GET,
                &format!("runs/get?run_id={}", percent_encode(run_id)),
                json!({}),
            )
            .await?;
        Ok(found.run.info.into())
    }

    /// Logs one batch (already within the server's limits; see [`super::batch::split`]).
    pub async fn log_batch(&self, run_id: &str, batch: &LogBatch) -> Result<(), MlflowError> {
        let body = json!({
            "run_id": run_id,
            "metrics": batch.metrics,
            "params": batch.params,
            "tags": batch.tags,
        });
        self.call::<serde_json::Value>(Method::POST, "runs/log-batch", body)
            .await
            .map(drop)
    }

    /// Ends or updates a run's status.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: Option<i64>,
    ) -> Result<(), MlflowError> {
        let mut body = json!({ "run_id": run_id, "status": status.as_str() });
        if let Some(end) = end_time_ms {
            body["end_time"] = json!(end);
        }
        self.call::<serde_json::Value>(Method::POST, "runs/update", body)
            .await
            .map(drop)
    }

    /// Uploads (or replaces) the artifact `path` of a run whose artifacts go through the server's artifact
    /// proxy (`artifact_uri` `mlflow-artifacts:/…`).
    pub async fn upload_artifact(
        &self,
        artifact_uri: &str,
        path: &str,
        content: Bytes,
    ) -> Result<(), MlflowError> {
        let Some(root) = proxied_artifact_root(artifact_uri) else {
            return Err(MlflowError::Unexpected {
                url: self.base.clone(),
                reason: format!(
                    "the run's artifacts live at `{artifact_uri}`, not behind the server's artifact proxy; start the server with --serve-artifacts (the default) and --artifacts-destination"
                ),
            });
        };
        let encoded: Vec<String> = root
            .split('/')
            .chain(path.split('/'))
            .filter(|s| !s.is_empty())
            .map(percent_encode)
            .collect();
        let url_path = format!("/api/2.0/mlflow-artifacts/artifacts/{}", encoded.join("/"));
        self.send(Method::PUT, &url_path, "application/octet-stream", content)
            .await
            .map(drop)
    }
}

/// The path under the artifact proxy of `mlflow-artifacts:/1/<run>/artifacts` (or `mlflow-artifacts://host/…`).
pub fn proxied_artifact_root(artifact_uri: &str) -> Option<&str> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        // mlflow-artifacts://host:port/path
        Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    Some(path.trim_matches('/'))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_roots_behind_the_proxy_are_found() {
        assert_eq!(
            proxied_artifact_root("mlflow-artifacts:/1/abc/artifacts"),
            Some("1/abc/artifacts")
        );
        assert_eq!(
            proxied_artifact_root("mlflow-artifacts://host:5000/1/abc/artifacts"),
            Some("1/abc/artifacts")
        );
        assert_eq!(proxied_artifact_root("/tmp/mlruns/1/abc/artifacts"), None);
        assert_eq!(proxied_artifact_root("s3://bucket/1/abc"), None);
    }

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(percent_encode("exp 1/ä"), "exp%201%2F%C3%A4");
        assert_eq!(percent_encode("a-b_c.d~"), "a-b_c.d~");
    }

    #[test]
    fn retryable_errors_are_the_transient_ones() {
        let refused = |status| MlflowError::Refused {
            status,
            url: String::new(),
            code: String::new(),
            message: String::new(),
            retry_after: None,
        };
        assert!(refused(429).is_retryable());
        assert!(refused(503).is_retryable());
        assert!(refused(500).is_retryable());
        assert!(!refused(400).is_retryable());
        assert!(!refused(404).is_retryable());
        assert!(
            MlflowError::Unreachable {
                url: String::new(),
                reason: String::new()
            }
            .is_retryable()
        );
        assert!(!MlflowError::BadUri(String::new()).is_retryable());
    }

    #[test]
    fn tracking_uris_must_be_http() {
        assert!(matches!(
            Client::new("file:///tmp/mlruns", None),
            Err(MlflowError::BadUri(_))
        ));
        assert!(matches!(
            Client::new("databricks", None),
            Err(MlflowError::BadUri(_))
        ));
    }
}
