//! W3C trace context and baggage across process boundaries, and a `tower` layer for HTTP servers that continues
//! incoming traces and keeps an `X-Request-Id`.
//!
//! ```no_run
//! # fn demo<S>(service: S) where S: Clone {
//! vigil::propagation::install_from_env().expect("valid OTEL_PROPAGATORS");
//! let service = tower::ServiceBuilder::new().layer(vigil::propagation::HttpServerLayer).service(service);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The request id header read, generated when missing, and echoed in responses.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global propagator from `OTEL_PROPAGATORS` (default `tracecontext,baggage`; `none` turns
/// propagation off). Other propagators are an error naming the value.
pub fn install_from_env() -> Result<(), String> {
    let value = std::env::var("OTEL_PROPAGATORS").unwrap_or_else(|_| "tracecontext,baggage".into());
    let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name.to_ascii_lowercase().as_str() {
            "tracecontext" => propagators.push(Box::new(TraceContextPropagator::new())),
            "baggage" => propagators.push(Box::new(BaggagePropagator::new())),
            "none" => propagators.clear(),
            other => {
                return Err(format!(
                    "OTEL_PROPAGATORS: `{other}` is not supported; use tracecontext, baggage or none"
                ));
            }
        }
    }
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(propagators));
    Ok(())
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The trace context carried by incoming headers (`traceparent`, `tracestate`, `baggage`).
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes the current span's trace context into outgoing headers (for HTTP and gRPC clients).
pub fn inject_current(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers))
    });
}

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
        let route = crate::metrics::http::normalise_route(&path);
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

/// A `tower` layer for HTTP clients (hyper, tonic channels, any `tower` service over `http::Request`): each
/// request runs in a client span and carries the trace context (`traceparent`, `tracestate`, `baggage`) to the
/// server; 5xx responses mark the span as an error.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpClientLayer;

impl<S> tower_layer::Layer<S> for HttpClientLayer {
    type Service = HttpClientService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpClientService { inner }
    }
}

/// The service made by [`HttpClientLayer`].
#[derive(Clone, Debug)]
pub struct HttpClientService<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<Request<B>> for HttpClientService<S>
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
        let method = request.method().clone();
        let span = tracing::info_span!(
            "HTTP client request",
            otel.name = %method,
            otel.kind = "client",
            http.request.method = %method,
            url.full = %request.uri(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let future = span.in_scope(|| {
            inject_current(request.headers_mut());
            self.inner.call(request)
        });
        Box::pin(
            async move {
                let response = future.await?;
                let span = tracing::Span::current();
                span.record("http.response.status_code", response.status().as_u16());
                if response.status().is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests;
