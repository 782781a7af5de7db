//! The collector observing itself: its own metrics (Prometheus text on `service.telemetry.metrics.address`,
//! default `127.0.0.1:8888/metrics`) and its own structured logs.

mod metrics;

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
pub use metrics::{Counter, Histogram, Registry};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;

use crate::config::{LogEncoding, LogsTelemetryConfig};

/// Installs the collector's log subscriber (stderr). `RUST_LOG`, when set, overrides the configured level.
pub fn init_logs(config: &LogsTelemetryConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(&directive)
            .map_err(|e| format!("RUST_LOG=`{directive}` is not a valid filter: {e}"))?,
        _ => EnvFilter::try_new(&config.level).map_err(|e| {
            format!(
                "service.telemetry.logs.level `{}` is not a valid level or filter: {e}",
                config.level
            )
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match config.encoding {
        LogEncoding::Console => builder.try_init(),
        LogEncoding::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests that start several collectors in one process) keeps the first subscriber.
    let _ = result;
    Ok(())
}

/// Serves `/metrics` from `registry` until shutdown.
pub async fn serve_metrics(
    address: &str,
    registry: Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
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
