//! Logs: a JSON formatter, an asynchronous writer and a rotating, compressing file.
//!
//! The path of a log line: a `tracing` event → [`json::JsonLayer`] formats it (thread-local buffers, typed fields,
//! span context, trace ids) → [`writer::AsyncWriter`] appends it to a bounded buffer → the writer thread hands
//! whole buffers to [`file::RotatingFile`], which rotates by size and day and leaves gzip and retention to its
//! housekeeping thread.

pub mod clock;
pub(crate) mod correlation;
pub mod file;
pub mod json;
mod masking;
pub mod otlp;
pub mod sampling;
mod span_state;
pub mod text;
pub mod writer;

#[cfg(test)]
mod tests;
