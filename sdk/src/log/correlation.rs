//! Trace and span ids of the current OpenTelemetry context, for every log line.

use opentelemetry::trace::TraceContextExt;

fn hex_into(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0xf)]);
    }
}

/// Appends `,"trace_id":"…","span_id":"…"` when an OpenTelemetry span is active on this thread
/// (`tracing-opentelemetry` activates the span's context when a `tracing` span is entered).
pub(crate) fn append_ids(out: &mut Vec<u8>) {
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return;
    }
    out.extend_from_slice(b",\"trace_id\":\"");
    hex_into(&span_context.trace_id().to_bytes(), out);
    out.extend_from_slice(b"\",\"span_id\":\"");
    hex_into(&span_context.span_id().to_bytes(), out);
    out.push(b'"');
}
