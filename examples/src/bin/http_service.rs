//! An HTTP service instrumented with Vigil: axum behind [`vigil::http::HttpServerLayer`] (a server span
//! per request that continues the caller's trace) and [`vigil::http::HttpMetricsLayer`] (the
//! `http.server.request.duration` histogram), a `/health` endpoint from [`vigil::health::HealthChecker`], and a
//! downstream call through [`vigil::http::HttpClientLayer`] that carries the trace to the next service.
//!
//! ```sh
//! cargo run --release -p vigil-collector &
//! cargo run -p vigil-examples --bin http_service                  # VIGIL_HTTP_ADDR, default 127.0.0.1:8080
//! curl http://127.0.0.1:8080/orders/42                             # calls /inventory/42 downstream
//! curl http://127.0.0.1:8080/health
//! ```
//!
//! Like a real dependency, the inventory is not perfect: it takes `id % 5 × 20` ms to answer, and items whose id
//! is a multiple of 13 are "unavailable" (503), which `/orders/{id}` passes on as 502, so the RED dashboards
//! have latency spread and server errors to show.
//!
//! To keep the example one program, the "downstream service" is this service's own `/inventory` route, called
//! over HTTP: the trace shows `GET /orders/42` → the client span → `GET /inventory/42`. Stops on Ctrl-C or
//! SIGTERM, flushing its telemetry.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use vigil::http::{HttpClientLayer, HttpServerLayer};

type HttpClient = Client<HttpConnector, Empty<axum::body::Bytes>>;

#[derive(Clone)]
struct App {
    health: Arc<vigil::health::HealthChecker>,
    client: HttpClient,
    base: String,
}

async fn order(Path(id): Path<u64>, State(app): State<App>) -> Result<String, StatusCode> {
    tracing::info!(order_id = id, "looking up the order");
    let request = http::Request::get(format!("{}/inventory/{id}", app.base))
        .body(Empty::new())
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let downstream = tower::ServiceBuilder::new()
        .layer(HttpClientLayer)
        .service(app.client.clone());
    let response = downstream.oneshot(request).await.map_err(|e| {
        tracing::error!(error = %e, "inventory call failed");
        StatusCode::BAD_GATEWAY
    })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?
        .to_bytes();
    let stock = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        tracing::error!(order_id = id, %status, "inventory refused the lookup");
        return Err(StatusCode::BAD_GATEWAY);
    }
    vigil::metrics::increment("orders.looked_up", 1, &[]);
    Ok(format!("order {id}: {stock}\n"))
}

async fn inventory(Path(id): Path<u64>) -> Result<String, StatusCode> {
    tracing::info!(item = id, "checking stock");
    tokio::time::sleep(std::time::Duration::from_millis(id % 5 * 20)).await;
    if id % 13 == 0 {
        tracing::warn!(item = id, "the item is unavailable");
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(format!("{} in stock", id % 7 + 1))
}

async fn health(State(app): State<App>) -> (StatusCode, String) {
    let report = app.health.overall_health().await;
    let status = if report.status == vigil::health::Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, report.to_json())
}

async fn stopped() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let guard = vigil::Builder::new("http-service")
        .service_version(env!("CARGO_PKG_VERSION"))
        .try_init()?;
    let address = std::env::var("VIGIL_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let local = listener.local_addr()?;
    let app = App {
        health: Arc::new(vigil::health::HealthChecker::new().collector(false)),
        client: Client::builder(TokioExecutor::new()).build_http(),
        base: format!("http://{local}"),
    };
    let router = Router::new()
        .route("/orders/{id}", get(order))
        .route("/inventory/{id}", get(inventory))
        .route("/health", get(health))
        .with_state(app)
        .layer(vigil::http::HttpMetricsLayer::new())
        .layer(HttpServerLayer);
    // The first line on stdout says where it listens (the tests read it when they ask for port 0).
    println!("listening on http://{local}");
    axum::serve(listener, router)
        .with_graceful_shutdown(stopped())
        .await?;
    tracing::info!("stopped");
    guard.flush();
    Ok(())
}
