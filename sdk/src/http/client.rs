//! The client layer: a span per request whose context travels to the server.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tracing::Instrument;

use crate::propagation::inject_current;

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
