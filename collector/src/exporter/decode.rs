//! What exporters read from a batch and from an OTLP backend's answer, kept here so that no exporter reaches
//! into another.

use prost::Message;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceResponse;
use vigil_proto::otlp::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceResponse;

use super::{ExportError, Exported};
use crate::pipeline::Batch;

/// Decodes the chunks of a metrics batch.
pub fn metrics_requests(batch: &Batch) -> Result<Vec<ExportMetricsServiceRequest>, ExportError> {
    batch
        .chunks
        .iter()
        .map(|chunk| {
            ExportMetricsServiceRequest::decode(chunk.bytes.clone()).map_err(|e| {
                ExportError::Undecodable {
                    message: format!("batch does not decode as OTLP metrics: {e}"),
                }
            })
        })
        .collect()
}

/// Reads the partial-success part of an `Export*ServiceResponse`.
pub fn partial_success(signal: Signal, body: &[u8]) -> Exported {
    let (rejected, message) = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
    }
    .unwrap_or_default();
    Exported {
        rejected: rejected.max(0) as u64,
        message,
        ..Default::default()
    }
}
