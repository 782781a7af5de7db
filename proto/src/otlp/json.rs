//! OTLP/JSON: conversion between the JSON encoding (hex ids, 64-bit integers as strings, enums as integers) and
//! the protobuf encoding Vigil carries internally.

use prost::Message;

use super::Signal;
use super::collector::logs::v1::ExportLogsServiceRequest;
use super::collector::metrics::v1::ExportMetricsServiceRequest;
use super::collector::trace::v1::ExportTraceServiceRequest;

/// A JSON body that is not a valid OTLP/JSON export request.
#[derive(Debug, thiserror::Error)]
#[error("invalid OTLP/JSON {signal} request at line {line}, column {column}: {message}")]
pub struct JsonError {
    /// The signal the body was sent for.
    pub signal: Signal,
    /// 1-based line of the problem in the body.
    pub line: usize,
    /// 1-based column of the problem in the body.
    pub column: usize,
    /// What serde_json reported.
    pub message: String,
}

/// Parses an OTLP/JSON export request and returns its protobuf encoding.
pub fn json_to_protobuf(signal: Signal, body: &[u8]) -> Result<Vec<u8>, JsonError> {
    let wrap = |e: serde_json::Error| JsonError {
        signal,
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    };
    Ok(match signal {
        Signal::Traces => serde_json::from_slice::<ExportTraceServiceRequest>(body)
            .map_err(wrap)?
            .encode_to_vec(),
        Signal::Metrics => serde_json::from_slice::<ExportMetricsServiceRequest>(body)
            .map_err(wrap)?
            .encode_to_vec(),
        Signal::Logs => serde_json::from_slice::<ExportLogsServiceRequest>(body)
            .map_err(wrap)?
            .encode_to_vec(),
    })
}

/// Decodes a protobuf export request and writes it as one line of OTLP/JSON (no trailing newline).
pub fn protobuf_to_json(
    signal: Signal,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), prost::DecodeError> {
    // Serialising an in-memory value to a Vec cannot fail: every map key in OTLP is a string.
    let result = match signal {
        Signal::Traces => serde_json::to_writer(out, &ExportTraceServiceRequest::decode(body)?),
        Signal::Metrics => serde_json::to_writer(out, &ExportMetricsServiceRequest::decode(body)?),
        Signal::Logs => serde_json::to_writer(out, &ExportLogsServiceRequest::decode(body)?),
    };
    debug_assert!(result.is_ok());
    Ok(())
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_round_trips_with_hex_ids_and_string_int64() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
          "scopeSpans":[{"scope":{"name":"lib"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C",
          "spanId":"eee19b7ec3c1b174","name":"x","startTimeUnixNano":"1544712660000000000",
          "endTimeUnixNano":"1544712661000000000","kind":2,
          "attributes":[{"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
        let bytes = json_to_protobuf(Signal::Traces, body).unwrap();
        let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.kind, 2);
        let mut json = Vec::new();
        protobuf_to_json(Signal::Traces, &bytes, &mut json).unwrap();
        let text = String::from_utf8(json).unwrap();
        assert!(
            text.contains(r#""traceId":"5b8efff798038103d269b633813fc60c""#),
            "{text}"
        );
        assert!(
            text.contains(r#""startTimeUnixNano":"1544712660000000000""#),
            "{text}"
        );
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err = json_to_protobuf(Signal::Logs, b"{\n  \"resourceLogs\": [ }").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
