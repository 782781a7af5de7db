//! Trace and span ids of the current OpenTelemetry context, for every log line.

use opentelemetry::trace::TraceContextExt;

/// Writes `bytes` as lower-case hex into `out`, which is twice as long.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Appends `,"trace_id":"…","span_id":"…"` when an OpenTelemetry span is active on this thread
/// (`tracing-opentelemetry` activates the span's context when a `tracing` span is entered).
pub(crate) fn append_ids(out: &mut Vec<u8>) {
    // Read in place: `Context::current()` would clone the context and drop the clone for every line.
    let ids = opentelemetry::Context::map_current(|context| {
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_bytes(),
                span_context.span_id().to_bytes(),
            )
        })
    });
    let Some((trace_id, span_id)) = ids else {
        return;
    };
    const TRACE: &[u8] = b",\"trace_id\":\"";
    const SPAN: &[u8] = b"\",\"span_id\":\"";
    // Assembled on the stack and appended at once.
    let mut text = [b'"'; TRACE.len() + 32 + SPAN.len() + 16 + 1];
    text[..TRACE.len()].copy_from_slice(TRACE);
    hex_into(&trace_id, &mut text[TRACE.len()..TRACE.len() + 32]);
    let span_at = TRACE.len() + 32;
    text[span_at..span_at + SPAN.len()].copy_from_slice(SPAN);
    hex_into(
        &span_id,
        &mut text[span_at + SPAN.len()..span_at + SPAN.len() + 16],
    );
    out.extend_from_slice(&text);
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };

    use super::append_ids;

    #[test]
    fn the_ids_of_the_current_span_are_written_in_lower_case_hex() {
        let mut out = b"{".to_vec();
        append_ids(&mut out);
        assert_eq!(out, b"{", "no span, no ids");
        let span_context = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let _attached = opentelemetry::Context::new()
            .with_remote_span_context(span_context)
            .attach();
        append_ids(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{,"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331""#
        );
    }
}
