//! The server layer: a span per request that continues the caller's trace, with a request id.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::propagation::{REQUEST_ID, extract};

/// A `tower` layer for HTTP servers (axum, hyper, tonic): each request runs in a server span named
/// `{method} {route}` (the path with id-like segments as `{id}`, as in `http.route`) that continues the caller's
/// trace, carries `request_id` (from `X-Request-Id`, or the trace id when absent) and records the
/// response status; the response echoes `X-Request-Id`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpServerLayer;

impl<S> tower_layer::Layer<S> for HttpServerLayer {
    type Service = HttpServerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpServerService { inner }
    }
}

/// The service made by [`HttpServerLayer`].
#[derive(Clone, Debug)]
pub struct HttpServerService<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<Request<B>> for HttpServerService<S>
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let parent = extract(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        // Named `{method} {route}` as the HTTP conventions ask: ids in the path become `{id}`, so one span name
        // (and one spanmetrics series) stands for one endpoint, not one per order number.
        let route = super::metrics::normalise_route(&path);
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            url.path = %path,
            request_id = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let _ = span.set_parent(parent);
        let request_id = match request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
        {
            Some(id) if !id.is_empty() && id.len() <= 128 => id.to_string(),
            _ => format!("{:032x}", span.context().span().span_context().trace_id()),
        };
        span.record("request_id", request_id.as_str());
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            request.headers_mut().insert(REQUEST_ID.clone(), value);
        }
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let mut response = future.await?;
                let status = response.status();
                let span = tracing::Span::current();
                span.record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID.clone(), value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
