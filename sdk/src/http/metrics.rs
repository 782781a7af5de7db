//! RED metrics for HTTP servers: a `tower` layer recording, per route, method and status,
//! `http.server.request.duration` (seconds, the semantic-convention histogram), `http.server.requests`
//! (by `http.response.status_class`: `2xx`, `4xx`, …), `http.server.errors` (5xx and failed requests) and
//! `http.server.active_requests`.
//!
//! `http.route` is the route template when you say how to get it ([`HttpMetricsLayer::route`], e.g. from
//! axum's `MatchedPath`); otherwise the path with id-like segments (numbers, UUIDs, long hex) replaced by
//! `{id}`, so `/users/12345/orders` and `/users/67890/orders` are one series.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};

use crate::metrics::{add, increment, record_seconds};

type RouteFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;

/// The layer; wrap a server's service with it.
#[derive(Clone, Default)]
pub struct HttpMetricsLayer {
    route: Option<RouteFn>,
}

impl std::fmt::Debug for HttpMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetricsLayer").finish_non_exhaustive()
    }
}

impl HttpMetricsLayer {
    /// Routes from the normalised path.
    pub fn new() -> Self {
        HttpMetricsLayer::default()
    }

    /// Takes `http.route` from the request (return `None` to fall back to the normalised path).
    pub fn route(
        mut self,
        route: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.route = Some(Arc::new(route));
        self
    }
}

impl<S> tower_layer::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpMetricsService {
            inner,
            route: self.route.clone(),
        }
    }
}

/// The service made by [`HttpMetricsLayer`].
#[derive(Clone)]
pub struct HttpMetricsService<S> {
    inner: S,
    route: Option<RouteFn>,
}

impl<S> std::fmt::Debug for HttpMetricsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetricsService").finish_non_exhaustive()
    }
}

/// `/users/12345/orders` → `/users/{id}/orders`: numbers, UUIDs and long hexadecimal segments become `{id}`.
pub fn normalise_route(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let hex = segment.len() >= 12 && segment.bytes().all(|b| b.is_ascii_hexdigit());
            let number = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
            let uuid =
                segment.len() == 36 && segment.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
            if number || hex || uuid {
                "{id}"
            } else {
                segment
            }
        })
        .collect();
    segments.join("/")
}

impl<S, B, R> tower_service::Service<Request<B>> for HttpMetricsService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let route = self
            .route
            .as_ref()
            .and_then(|route| route(&parts))
            .unwrap_or_else(|| normalise_route(parts.uri.path()));
        let method = parts.method.to_string();
        let future = self.inner.call(Request::from_parts(parts, body));
        let started = Instant::now();
        add(
            "http.server.active_requests",
            1,
            &[("http.request.method", &method)],
        );
        Box::pin(async move {
            let result = future.await;
            let elapsed = started.elapsed();
            add(
                "http.server.active_requests",
                -1,
                &[("http.request.method", &method)],
            );
            let (code, class, error) = match &result {
                Ok(response) => {
                    let status = response.status();
                    let class = format!("{}xx", status.as_u16() / 100);
                    let error = status
                        .is_server_error()
                        .then(|| status.as_u16().to_string());
                    (status.as_u16().to_string(), class, error)
                }
                Err(_) => (
                    String::new(),
                    "error".to_string(),
                    Some("error".to_string()),
                ),
            };
            let mut attributes = vec![
                ("http.request.method", method.as_str()),
                ("http.route", route.as_str()),
            ];
            if !code.is_empty() {
                attributes.push(("http.response.status_code", code.as_str()));
            }
            if let Some(error) = &error {
                attributes.push(("error.type", error.as_str()));
            }
            record_seconds("http.server.request.duration", elapsed, &attributes);
            let by_class = [
                ("http.request.method", method.as_str()),
                ("http.route", route.as_str()),
                ("http.response.status_class", class.as_str()),
            ];
            increment("http.server.requests", 1, &by_class);
            if error.is_some() {
                increment("http.server.errors", 1, &by_class);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_paths_become_one_route() {
        assert_eq!(normalise_route("/users/12345/orders"), "/users/{id}/orders");
        assert_eq!(
            normalise_route("/runs/550e8400-e29b-41d4-a716-446655440000"),
            "/runs/{id}"
        );
        assert_eq!(normalise_route("/blobs/4bf92f3577b34da6"), "/blobs/{id}");
        assert_eq!(normalise_route("/api/v1/models"), "/api/v1/models");
        assert_eq!(normalise_route("/"), "/");
    }
}
