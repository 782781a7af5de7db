use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tower_service::Service;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::propagation::{inject_current, install_from_env};

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn server_layer_continues_the_callers_trace_and_keeps_a_request_id() {
    install_from_env().unwrap();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(crate::trace::SpansOnly::new(
        tracing_opentelemetry::layer().with_tracer(provider.tracer("test")),
    ));
    let seen = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(subscriber, || {
        let seen_inner = seen.clone();
        let handler = tower::service_fn(move |request: Request<()>| {
            let trace_id = tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id();
            let mut outgoing = HeaderMap::new();
            inject_current(&mut outgoing);
            seen_inner.lock().unwrap().push((
                format!("{trace_id:032x}"),
                request
                    .headers()
                    .get("x-request-id")
                    .map(|v| v.to_str().unwrap().to_string()),
                outgoing
                    .get("traceparent")
                    .map(|v| v.to_str().unwrap().to_string()),
            ));
            async move {
                Ok::<_, std::convert::Infallible>(Response::builder().status(503).body(()).unwrap())
            }
        });
        let mut service = tower_layer::Layer::layer(&HttpServerLayer, handler);
        let incoming = Request::get("/predict")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("x-request-id", "req-42")
            .body(())
            .unwrap();
        let response = block_on(service.call(incoming)).unwrap();
        assert_eq!(response.headers()["x-request-id"], "req-42");
        let response = block_on(service.call(Request::get("/health").body(()).unwrap())).unwrap();
        let generated = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(generated.len(), 32, "a missing request id is the trace id");
        // An empty or oversized request id is replaced by the trace id too.
        for bad in [String::new(), "x".repeat(129)] {
            let request = Request::get("/health")
                .header("x-request-id", bad.as_str())
                .body(())
                .unwrap();
            let response = block_on(service.call(request)).unwrap();
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(id.len(), 32, "`{bad}` is not kept: {id}");
        }
        let request = Request::get("/health")
            .header("x-request-id", "x".repeat(128))
            .body(())
            .unwrap();
        let response = block_on(service.call(request)).unwrap();
        assert_eq!(
            response.headers()["x-request-id"].len(),
            128,
            "128 characters are kept"
        );
    });
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].0, "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace continues"
    );
    assert_eq!(seen[0].1.as_deref(), Some("req-42"));
    assert!(
        seen[0]
            .2
            .as_deref()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "outgoing calls carry it on"
    );
    assert_eq!(seen[1].1.as_deref(), Some(seen[1].0.as_str()));
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let server = spans
        .iter()
        .find(|s| s.name == "GET /predict")
        .expect("server span named after the route");
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(server.span_kind, opentelemetry::trace::SpanKind::Server);
    assert!(
        matches!(server.status, opentelemetry::trace::Status::Error { .. }),
        "5xx marks the span as error"
    );
}

#[test]
fn client_layer_sends_the_trace_context_of_a_client_span() {
    install_from_env().unwrap();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(crate::trace::SpansOnly::new(
        tracing_opentelemetry::layer().with_tracer(provider.tracer("test")),
    ));
    let sent = Arc::new(Mutex::new(None));
    tracing::subscriber::with_default(subscriber, || {
        let sent_inner = sent.clone();
        let transport = tower::service_fn(move |request: Request<()>| {
            *sent_inner.lock().unwrap() = request
                .headers()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_string());
            async move { Ok::<_, std::convert::Infallible>(Response::new(())) }
        });
        let mut client = tower_layer::Layer::layer(&HttpClientLayer, transport);
        let parent = tracing::info_span!("job");
        let _entered = parent.enter();
        block_on(
            client.call(
                Request::post("http://127.0.0.1:1/v1/predict")
                    .body(())
                    .unwrap(),
            ),
        )
        .unwrap();
    });
    let _ = provider.force_flush();
    let spans = exporter.get_finished_spans().unwrap();
    let client = spans
        .iter()
        .find(|s| s.span_kind == opentelemetry::trace::SpanKind::Client)
        .expect("client span");
    let job = spans.iter().find(|s| s.name == "job").expect("job span");
    let traceparent = sent.lock().unwrap().clone().expect("traceparent sent");
    assert_eq!(
        traceparent,
        format!(
            "00-{:032x}-{:016x}-01",
            job.span_context.trace_id(),
            client.span_context.span_id()
        ),
        "the server sees the client span as its parent"
    );
    assert_eq!(client.parent_span_id, job.span_context.span_id());
}
