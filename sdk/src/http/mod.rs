//! HTTP in and out of a service, as `tower` layers (axum, hyper, tonic, any service over `http::Request`):
//!
//! - [`HttpServerLayer`]: a server span per request, named `{method} {route}`, that continues the caller's trace
//!   and keeps an `X-Request-Id`;
//! - [`HttpClientLayer`]: a client span per request whose trace context (`traceparent`, `tracestate`,
//!   `baggage`) travels to the server;
//! - [`HttpMetricsLayer`]: the RED metrics of the OpenTelemetry HTTP conventions
//!   (`http.server.request.duration`, `http.server.active_requests`).
//!
//! ```no_run
//! # fn demo<S>(service: S) where S: Clone {
//! vigil::propagation::install_from_env().expect("valid OTEL_PROPAGATORS");
//! let service = tower::ServiceBuilder::new()
//!     .layer(vigil::http::HttpServerLayer)
//!     .layer(vigil::http::HttpMetricsLayer::new())
//!     .service(service);
//! # }
//! ```

mod client;
mod metrics;
mod server;
#[cfg(test)]
mod tests;

pub use client::{HttpClientLayer, HttpClientService};
pub use metrics::{HttpMetricsLayer, HttpMetricsService, normalise_route};
pub use server::{HttpServerLayer, HttpServerService};
