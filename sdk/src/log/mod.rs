//! Logs: a JSON formatter, an asynchronous writer and a rotating, compressing file.
//!
//! The path of a log line: a `tracing` event → [`json::JsonLayer`] formats it (thread-local buffers, typed fields,
//! span context, trace ids) → [`writer::AsyncWriter`] appends it to a bounded buffer → the writer thread hands
//! whole buffers to [`file::RotatingFile`], which rotates by size and day and leaves gzip and retention to its
//! housekeeping thread.

pub mod clock;
pub(crate) mod correlation;
pub mod file;
#[doc(hidden)]
pub mod json;
mod masking;
#[doc(hidden)]
pub mod otlp;
pub mod sampling;
mod span_state;
pub mod text;
#[doc(hidden)]
pub mod writer;

pub use writer::FullPolicy;

#[cfg(test)]
mod tests;
