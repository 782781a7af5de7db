//! The spans of runs' traces to MLflow's OTLP trace ingestion: `POST /v1/traces` (protobuf) with the
//! experiment in `x-mlflow-experiment-id` (MLflow 3.6+, `mlflow/server/otel_api.py`). A server without the
//! endpoint (404: MLflow before 3.6) or whose store cannot keep spans (501: the file store) is an error that
//! names the fix, on the log and on `/readyz`, never silent loss.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Uri, header};
use prost::Message;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;

use super::MlflowExporterConfig;
use crate::delivery::http::{HttpClient, HttpClientTls, http_client, post};
use crate::delivery::{ExportError, Exported};
use crate::telemetry::Registry;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Posts spans to one tracking server.
pub struct TraceForwarder {
    http: HttpClient,
    url: Uri,
    authorization: Option<HeaderValue>,
    mlflow: vigil::ml::mlflow::Client,
    experiments: Mutex<HashMap<String, String>>,
    registry: Registry,
    id: String,
}

impl TraceForwarder {
    /// A forwarder to `config.tracking_uri`.
    pub fn new(
        config: &MlflowExporterConfig,
        id: &str,
        registry: &Registry,
    ) -> Result<Self, String> {
        let base = config.tracking_uri.trim_end_matches('/');
        let url: Uri = format!("{base}/v1/traces")
            .parse()
            .map_err(|e| format!("tracking_uri `{base}`: {e}"))?;
        let auth = config.auth();
        let authorization = auth
            .as_ref()
            .map(|a| HeaderValue::from_str(&a.header_value()))
            .transpose()
            .map_err(|e| format!("credentials are not a valid header: {e}"))?;
        Ok(TraceForwarder {
            http: http_client(&HttpClientTls::default())?,
            url,
            authorization,
            mlflow: vigil::ml::mlflow::Client::new(base, auth.as_ref())
                .map_err(|e| e.to_string())?,
            experiments: Mutex::new(HashMap::new()),
            registry: registry.clone(),
            id: id.to_string(),
        })
    }

    async fn experiment_id(&self, name: &str) -> Result<String, ExportError> {
        if let Some(id) = self
            .experiments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(id.clone());
        }
        let id = self.mlflow.experiment_id(name).await.map_err(|e| {
            if e.is_retryable() {
                ExportError::Retryable {
                    message: e.to_string(),
                    retry_after: e.retry_after(),
                }
            } else {
                ExportError::Permanent {
                    message: e.to_string(),
                }
            }
        })?;
        self.experiments
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), id.clone());
        Ok(id)
    }

    /// Posts each experiment's spans; what MLflow cannot take for good is counted as rejected.
    pub async fn forward(
        &self,
        parts: &[(String, ExportTraceServiceRequest)],
    ) -> Result<Exported, ExportError> {
        let mut rejected = 0u64;
        let mut messages = Vec::new();
        for (experiment, request) in parts {
            let spans: u64 = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum();
            let experiment_id = self.experiment_id(experiment).await?;
            let mut headers = vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                ),
                (
                    HeaderName::from_static("x-mlflow-experiment-id"),
                    HeaderValue::from_str(&experiment_id).map_err(|e| ExportError::Permanent {
                        message: format!("experiment id `{experiment_id}`: {e}"),
                    })?,
                ),
            ];
            if let Some(authorization) = &self.authorization {
                headers.push((header::AUTHORIZATION, authorization.clone()));
            }
            let reply = post(
                &self.http,
                &self.url,
                &headers,
                Bytes::from(request.encode_to_vec()),
                TIMEOUT,
            )
            .await?;
            let status = reply.status.as_u16();
            let problem = match status {
                200..=299 => {
                    self.registry
                        .problems()
                        .clear(&crate::exporter::worker::problem_key(&self.id));
                    continue;
                }
                429 | 500..=599 if status != 501 => {
                    return Err(ExportError::Retryable {
                        message: format!("MLflow /v1/traces answered {status}"),
                        retry_after: reply.retry_after,
                    });
                }
                404 | 405 => format!(
                    "MLflow at {} has no OTLP trace ingestion (/v1/traces answered {status}): it needs MLflow 3.6 or later; turn `traces` off or upgrade",
                    self.url
                ),
                501 => format!(
                    "MLflow at {} cannot store traces (501: its tracking store is the file store); start it with a SQL backend such as `--backend-store-uri sqlite:///mlflow.db`",
                    self.url
                ),
                _ => format!(
                    "MLflow /v1/traces refused spans ({status}): {}",
                    String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
                ),
            };
            tracing::error!(problem = %problem, spans, "MLflow did not take the spans of experiment `{experiment}`");
            self.registry
                .problems()
                .report(&crate::exporter::worker::problem_key(&self.id), &problem);
            rejected += spans;
            messages.push(problem);
        }
        Ok(Exported {
            rejected,
            message: messages.join("; "),
            ..Default::default()
        })
    }

    /// Whether the server has the ingestion endpoint at all: a POST without the experiment header answers
    /// 422 (FastAPI's missing header) where it exists and 404 where it does not. `None` when unreachable.
    pub async fn probe(&self) -> Option<Result<(), String>> {
        let reply = post(
            &self.http,
            &self.url,
            &[(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            )],
            Bytes::new(),
            TIMEOUT,
        )
        .await
        .ok()?;
        Some(match reply.status.as_u16() {
            404 | 405 => Err(format!(
                "MLflow at {} has no OTLP trace ingestion (/v1/traces answered {}): it needs MLflow 3.6 or later; turn `traces` off or upgrade",
                self.url, reply.status
            )),
            _ => Ok(()),
        })
    }

    /// Reports a failed probe as the exporter's problem (log and `/readyz`).
    pub fn report(&self, problem: &str) {
        tracing::error!(problem = %problem, "the mlflow exporter cannot send traces");
        self.registry
            .problems()
            .report(&crate::exporter::worker::problem_key(&self.id), problem);
    }
}
