//! Binding context fields (`request_id`, `experiment_id`, `user_id`, …) to a scope so that every log record
//! inside it — console, file and OTLP — and every span carries them.
//!
//! A context is a `tracing` span named `vigil.context`; its fields are added to every record logged inside it.
//! It is not a span of the trace: the span exporter does not see it, so it starts no trace of its own, adds
//! no span to Jaeger or to the RED metrics, and spans, records and errors inside it belong to the span that
//! encloses it (its nearest real ancestor, else the span it was first entered in), also in a task spawned
//! inside the context.
//! Its level is ERROR so that it is enabled whenever any record is (a `warn` filter keeps the context on the
//! WARNING records it lets through).
//!
//! ```
//! use tracing::Instrument;
//!
//! // Synchronous code: the fields hold until the guard is dropped.
//! let _bound = vigil::context!(request_id = "r-42", user_id = 7).entered();
//! tracing::info!("handled");
//!
//! // Async code: the fields follow the future across `.await`; for `tokio::spawn`, instrument the spawned
//! // future with `.in_current_span()` (or with the context span) so it carries them too.
//! async fn job() { tracing::info!("inside the job"); }
//! let future = job().instrument(vigil::context!(experiment_id = "exp_001"));
//! # drop(future);
//! ```

/// The name of the spans [`crate::context!`] creates.
pub const CONTEXT_SPAN_NAME: &str = "vigil.context";

/// A span that binds the given fields as context: `vigil::context!(request_id = id, experiment_id = "exp_001")`.
/// Enter it (`.entered()`) for synchronous scopes or attach it to a future (`.instrument(…)`). It is never
/// exported as a span (see the module documentation).
#[macro_export]
macro_rules! context {
    ($($fields:tt)*) => {
        $crate::tracing::span!($crate::tracing::Level::ERROR, "vigil.context", $($fields)*)
    };
}

/// Whether `metadata` is a context span made by [`crate::context!`].
pub fn is_context_span(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span() && metadata.name() == CONTEXT_SPAN_NAME
}

/// Logs at CRITICAL, Python's highest level: an ERROR event marked `critical`, written as `CRITICAL` by the
/// formatters and exported with OpenTelemetry severity FATAL (21).
///
/// ```
/// vigil::critical!(disk = "/data", "Out of disk space; training aborted");
/// ```
#[macro_export]
macro_rules! critical {
    ($($arg:tt)+) => {
        $crate::tracing::error!(critical = true, $($arg)+)
    };
}
