//! W3C trace context and baggage across process boundaries: the propagator chosen by `OTEL_PROPAGATORS`, and
//! reading and writing the context in HTTP headers. The `tower` layers that do it for every request are in
//! [`crate::http`].
//!
//! ```
//! vigil::propagation::install_from_env().expect("valid OTEL_PROPAGATORS");
//! let mut headers = http::HeaderMap::new();
//! vigil::propagation::inject_current(&mut headers); // `traceparent` when a span is current
//! ```

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

/// The request id header read, generated when missing, and echoed in responses.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// An `OTEL_PROPAGATORS` entry Vigil does not implement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("OTEL_PROPAGATORS: `{name}` is not supported; use tracecontext, baggage or none")]
pub struct UnsupportedPropagator {
    /// The entry as written (lower-cased).
    pub name: String,
}

/// Installs the global propagator from `OTEL_PROPAGATORS` (default `tracecontext,baggage`; `none` turns
/// propagation off). Other propagators are an error naming the value.
pub fn install_from_env() -> Result<(), UnsupportedPropagator> {
    let value = std::env::var("OTEL_PROPAGATORS").unwrap_or_else(|_| "tracecontext,baggage".into());
    let mut propagators: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name.to_ascii_lowercase().as_str() {
            "tracecontext" => propagators.push(Box::new(TraceContextPropagator::new())),
            "baggage" => propagators.push(Box::new(BaggagePropagator::new())),
            "none" => propagators.clear(),
            other => {
                return Err(UnsupportedPropagator {
                    name: other.to_string(),
                });
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
    let context = crate::trace::current_context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers))
    });
}
