//! Extension `health_check`: `GET /healthz` (the process serves requests) and `GET /readyz` (pipelines are
//! running, not shutting down, and no component reports a problem only a person can fix, such as an exporter
//! whose backend answers 401), answered with JSON: `{"status":"failing","problems":{"exporter/loki":"…"}}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::telemetry::Problems;

/// `extensions.health_check`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "127.0.0.1:13133".into(),
        }
    }
}

/// Whether the collector is ready to take data; shared with the service, which flips it.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the collector ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn json(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Binds and serves the health endpoints until shutdown.
pub async fn start(
    config: &HealthCheckConfig,
    readiness: Readiness,
    problems: Problems,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let listener = crate::net::bind("extension health_check", &config.endpoint).await?;
    tracing::info!(endpoint = %config.endpoint, "health check listening");
    Ok(tokio::spawn(crate::net::serve(
        listener,
        None,
        move |request| {
            let ready = readiness.get();
            let problems = problems.list();
            async move {
                match request.uri().path() {
                    "/healthz" | "/" => json(StatusCode::OK, r#"{"status":"ok"}"#),
                    "/readyz" if ready && problems.is_empty() => {
                        json(StatusCode::OK, r#"{"status":"ready"}"#)
                    }
                    "/readyz" => json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({
                            "status": if ready { "failing" } else { "not ready" },
                            "problems": problems,
                        })
                        .to_string(),
                    ),
                    other => crate::net::text(
                        StatusCode::NOT_FOUND,
                        format!("unknown path `{other}`: use /healthz or /readyz"),
                    ),
                }
            }
        },
        shutdown,
        Duration::from_secs(1),
    )))
}
