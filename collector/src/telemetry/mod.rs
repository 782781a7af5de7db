//! The collector observing itself: its own metrics (Prometheus text on `service.telemetry.metrics.address`,
//! default `127.0.0.1:8888/metrics`) and its own structured logs.

mod metrics;

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
pub use metrics::{Counter, Histogram, Problems, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{LogEncoding, LogsTelemetryConfig};

/// Why the collector's own logs could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The level is not a level or `RUST_LOG`-style filter.
    #[error(
        "service.telemetry.logs.level (or RUST_LOG) `{filter}` is not a valid level or filter: {reason}"
    )]
    Level {
        /// The filter as written.
        filter: String,
        /// What the parser said.
        reason: String,
    },
    /// Anything else the SDK refused (another logger already installed).
    #[error("cannot set up the collector's logs: {0}")]
    Sdk(#[source] vigil::Error),
}

/// Installs the collector's own logging through the Vigil SDK (stderr; console or JSON lines). `RUST_LOG`, when
/// set, overrides the configured level. The returned guard flushes the logs when dropped.
pub fn init_logs(config: &LogsTelemetryConfig) -> Result<vigil::Guard, LogsError> {
    let builder = vigil::Builder::new("vigil-collector")
        .filter(config.level.clone())
        // The collector must not send its own telemetry into itself; its metrics are served on /metrics.
        .otlp(false);
    let builder = match config.encoding {
        LogEncoding::Console => builder,
        LogEncoding::Json => builder.console(false).json_stderr(true),
    };
    builder.try_init().map_err(|e| match e {
        vigil::Error::Filter { filter, reason } => LogsError::Level { filter, reason },
        other => LogsError::Sdk(other),
    })
}

/// Serves `/metrics` from `registry` until shutdown.
pub async fn serve_metrics(
    address: &str,
    registry: Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, crate::component::ComponentError> {
    let listener = crate::net::bind("service.telemetry.metrics", address).await?;
    tracing::info!(address, "self-metrics listening on /metrics");
    Ok(tokio::spawn(crate::net::serve(
        listener,
        None,
        move |request| {
            let registry = registry.clone();
            async move {
                if request.uri().path() != "/metrics" {
                    return crate::net::text(
                        StatusCode::NOT_FOUND,
                        "self-metrics are served on /metrics",
                    );
                }
                let mut response = Response::new(Full::new(Bytes::from(registry.render())));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
        },
        shutdown,
        Duration::from_secs(1),
    )))
}
