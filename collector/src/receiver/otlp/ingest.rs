//! The transport-independent half of the OTLP receiver: validate, admit, count, answer.

use bytes::Bytes;
use prost::Message;
use vigil_proto::otlp::collector::logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse};
use vigil_proto::otlp::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use vigil_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use vigil_proto::otlp::{Signal, scan};

use crate::pipeline::receipt::{Receipt, ReceiptWait};
use crate::pipeline::{Batch, Chunk, Refusal};
use crate::receiver::Outputs;
use crate::telemetry::{Counter, Registry};

/// Why a request was not accepted at all.
#[derive(Debug)]
pub enum IngestError {
    /// The payload is malformed; retrying it cannot help.
    Invalid(String),
    /// No pipeline of this receiver takes the signal.
    NotAccepted(Signal),
    /// The pipeline is full or shutting down; the client should retry.
    Refused(Refusal),
}

/// A request that was (at least partly) accepted.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Items rejected as invalid (partial success), zero when all were accepted.
    pub rejected: u64,
    /// Why the rejected items were rejected.
    pub message: String,
    /// When a persistent queue downstream must store the data before the client is answered: the wait for
    /// it, and the items admitted (counted as accepted once stored).
    durable: Option<(ReceiptWait, u64)>,
}

struct SignalCounters {
    accepted: Counter,
    /// By [`Refusal::REASONS`], in that order.
    refused: [Counter; Refusal::REASONS.len()],
    invalid: Counter,
    requests_invalid: Counter,
}

/// Validates requests and admits them into the pipelines, counting every item by outcome.
pub struct Ingest {
    outputs: Outputs,
    counters: [SignalCounters; 3],
}

fn index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Metrics => 1,
        Signal::Logs => 2,
    }
}

impl Ingest {
    /// Counters are labelled with the receiver id and transport (`grpc`, `http`).
    pub fn new(receiver: &str, transport: &str, outputs: Outputs, registry: &Registry) -> Self {
        let make = |signal: Signal| {
            let labels = [
                ("receiver", receiver),
                ("transport", transport),
                ("signal", signal.as_str()),
            ];
            let refused = |reason: &'static str| {
                registry.counter(
                    "vigil_receiver_refused_items_total",
                    "Items refused with a retryable error, by reason; the client keeps them.",
                    &[
                        ("receiver", receiver),
                        ("transport", transport),
                        ("signal", signal.as_str()),
                        ("reason", reason),
                    ],
                )
            };
            SignalCounters {
                accepted: registry.counter(
                    "vigil_receiver_accepted_items_total",
                    "Items admitted into a pipeline; each is later exported or counted as dropped.",
                    &labels,
                ),
                refused: Refusal::REASONS.map(refused),
                invalid: refused("invalid"),
                requests_invalid: registry.counter(
                    "vigil_receiver_invalid_requests_total",
                    "Requests rejected as malformed (bad encoding, framing, content type, size).",
                    &labels,
                ),
            }
        };
        Ingest {
            outputs,
            counters: Signal::ALL.map(make),
        }
    }

    /// Whether some pipeline takes `signal`.
    pub fn takes(&self, signal: Signal) -> bool {
        self.outputs.get(signal).is_some()
    }

    /// Counts a request rejected before its payload could be read (bad content type, too large, bad gzip).
    pub fn count_invalid_request(&self, signal: Signal) {
        self.counters[index(signal)].requests_invalid.add(1);
    }

    /// Validates an encoded request and admits its valid part.
    pub fn ingest(&self, signal: Signal, body: Bytes) -> Result<Accepted, IngestError> {
        let counters = &self.counters[index(signal)];
        if !self.takes(signal) {
            counters.requests_invalid.add(1);
            return Err(IngestError::NotAccepted(signal));
        }
        let precheck = self.outputs.precheck(signal);
        let scanned = match precheck {
            Some(check) => check.scan(signal, &body),
            None => scan::scan(signal, &body),
        };
        let summary = match scanned {
            Ok(summary) => summary,
            Err(error) => {
                counters.requests_invalid.add(1);
                return Err(IngestError::Invalid(format!(
                    "malformed OTLP {signal} request: {error}"
                )));
            }
        };
        // Every valid entry was shown to the check (invalid ones are never flagged, and are not admitted).
        let prechecked = precheck
            .filter(|_| summary.resources.iter().all(|e| !e.flagged))
            .cloned();
        let (receipt, wait) = match self.outputs.durable(signal) {
            true => {
                let (receipt, wait) = Receipt::new();
                (Some(receipt), Some(wait))
            }
            false => (None, None),
        };
        let durable = wait.map(|wait| (wait, summary.items));
        let Some(first_error) = summary.first_error() else {
            if summary.items > 0 {
                let chunk = Chunk {
                    prechecked,
                    receipt,
                    ..Chunk::new(body, summary.items)
                };
                self.admit(signal, Batch::from_chunk(signal, chunk))?;
            }
            return Ok(Accepted {
                durable,
                ..Accepted::default()
            });
        };
        let message = format!(
            "rejected {} of {} {}: {first_error}",
            summary.rejected_items,
            summary.rejected_items + summary.items,
            signal.item_name()
        );
        counters.invalid.add(summary.rejected_items);
        if summary.items == 0 {
            counters.requests_invalid.add(1);
            return Err(IngestError::Invalid(message));
        }
        // The valid entries, each without its invalid items: what every exporter can decode.
        let valid = scan::without_invalid(&body, &summary);
        let chunk = Chunk {
            prechecked,
            receipt,
            ..Chunk::new(Bytes::from(valid), summary.items)
        };
        self.admit(signal, Batch::from_chunk(signal, chunk))?;
        Ok(Accepted {
            rejected: summary.rejected_items,
            message,
            durable,
        })
    }

    /// Waits until a persistent queue downstream has stored what `accepted` admitted (at once when none
    /// must), and counts it as accepted; a queue that was full or could not store it turns the answer into
    /// a retryable refusal, counted as such.
    pub async fn stored(
        &self,
        signal: Signal,
        mut accepted: Accepted,
    ) -> Result<Accepted, IngestError> {
        let Some((wait, items)) = accepted.durable.take() else {
            return Ok(accepted);
        };
        match wait.wait().await {
            Ok(()) => {
                self.counters[index(signal)].accepted.add(items);
                Ok(accepted)
            }
            Err(refusal) => {
                self.count_refused(signal, &refusal, items);
                Err(IngestError::Refused(refusal))
            }
        }
    }

    fn count_refused(&self, signal: Signal, refusal: &Refusal, items: u64) {
        let reason = refusal.reason();
        if let Some(at) = Refusal::REASONS.iter().position(|known| *known == reason) {
            self.counters[index(signal)].refused[at].add(items);
        }
    }

    /// Admits a batch; counts it as accepted unless a persistent queue must store it first (then
    /// [`Ingest::stored`] counts it).
    fn admit(&self, signal: Signal, batch: Batch) -> Result<(), IngestError> {
        let items = batch.items;
        let Some(consumer) = self.outputs.get(signal) else {
            return Err(IngestError::NotAccepted(signal));
        };
        match consumer.try_consume(batch) {
            Ok(()) => {
                if !self.outputs.durable(signal) {
                    self.counters[index(signal)].accepted.add(items);
                }
                Ok(())
            }
            Err(refusal) => {
                self.count_refused(signal, &refusal, items);
                Err(IngestError::Refused(refusal))
            }
        }
    }
}

/// The protobuf `Export*ServiceResponse` for a (partial) success.
pub fn response_protobuf(signal: Signal, accepted: &Accepted) -> Bytes {
    let rejected = accepted.rejected as i64;
    let message = accepted.message.clone();
    let partial = accepted.rejected > 0;
    Bytes::from(match signal {
        Signal::Traces => ExportTraceServiceResponse {
            partial_success: partial.then_some(ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Signal::Metrics => ExportMetricsServiceResponse {
            partial_success: partial.then_some(ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
        Signal::Logs => ExportLogsServiceResponse {
            partial_success: partial.then_some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message,
            }),
        }
        .encode_to_vec(),
    })
}

/// The OTLP/JSON `Export*ServiceResponse` for a (partial) success.
pub fn response_json(signal: Signal, accepted: &Accepted) -> Bytes {
    if accepted.rejected == 0 {
        return Bytes::from_static(b"{}");
    }
    let field = match signal {
        Signal::Traces => "rejectedSpans",
        Signal::Metrics => "rejectedDataPoints",
        Signal::Logs => "rejectedLogRecords",
    };
    let body = serde_json::json!({
        "partialSuccess": { field: accepted.rejected.to_string(), "errorMessage": accepted.message }
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use prost::Message as _;
    use vigil::mask::{MaskConfig, Masker};
    use vigil_proto::otlp::Signal;
    use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use vigil_proto::otlp::scan::{self, ScanError, Summary};
    use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::Ingest;
    use crate::pipeline::precheck::{Precheck, SharedPrecheck};
    use crate::processor::mask::precheck::MaskCheck;
    use crate::processor::test_support::Recorder;
    use crate::receiver::Outputs;
    use crate::telemetry::Registry;

    /// One resource entry per span name.
    fn request(names: &[&str]) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: names
                .iter()
                .map(|name| ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            name: name.to_string(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Ingests `body` and returns what the pipeline received: its items and the check it passed.
    fn admitted(check: Option<&SharedPrecheck>, body: Vec<u8>) -> (u64, Option<SharedPrecheck>) {
        let recorder = Arc::new(Recorder::default());
        let mut outputs = Outputs::default();
        outputs.add(Signal::Traces, recorder.clone());
        if let Some(check) = check {
            outputs.add_precheck(Signal::Traces, check.clone());
        }
        let ingest = Ingest::new("otlp", "grpc", outputs, &Registry::default());
        ingest.ingest(Signal::Traces, Bytes::from(body)).unwrap();
        let batches = recorder.0.lock().unwrap();
        let [batch] = batches.as_slice() else {
            panic!("one batch admitted, got {}", batches.len());
        };
        (batch.items, batch.chunks[0].prechecked.clone())
    }

    fn mask_check() -> SharedPrecheck {
        SharedPrecheck::new(MaskCheck(Masker::new(&MaskConfig::default()).unwrap()))
    }

    #[test]
    fn a_request_with_nothing_to_mask_is_marked_with_the_check_it_passed() {
        let check = mask_check();
        let (items, checked) = admitted(Some(&check), request(&["GET /items", "POST /cart"]));
        assert_eq!(items, 2);
        assert!(checked.is_some_and(|c| c.is(&check)));

        let (_, checked) = admitted(Some(&check), request(&["GET /items", "to bob@example.com"]));
        assert!(
            checked.is_none(),
            "one flagged entry leaves the request to the processor"
        );

        let (_, checked) = admitted(None, request(&["GET /items"]));
        assert!(checked.is_none(), "no pipeline asked for a check");
    }

    #[test]
    fn the_valid_part_of_a_partly_invalid_request_keeps_its_mark() {
        let check = mask_check();
        let mut body = request(&["GET /items", "BROKEN", "POST /cart"]);
        let at = body.windows(6).position(|w| w == b"BROKEN").unwrap();
        body[at] = 0xff;
        let (items, checked) = admitted(Some(&check), body);
        assert_eq!(items, 2, "the invalid entry is rejected");
        assert!(checked.is_some_and(|c| c.is(&check)));
    }

    /// A check the receiver knows nothing about: it flags entries whose span name starts with `!`.
    struct Bang;

    impl Precheck for Bang {
        fn scan(&self, signal: Signal, request: &[u8]) -> Result<Summary, ScanError> {
            let mut summary = scan::scan(signal, request)?;
            for entry in &mut summary.resources {
                // A span's `name` (field 5) of one byte, `!`.
                entry.flagged = request[entry.bytes.clone()]
                    .windows(3)
                    .any(|w| w == b"\x2a\x01!");
            }
            Ok(summary)
        }

        fn name(&self) -> &'static str {
            "bang"
        }
    }

    #[test]
    fn any_processor_s_check_runs_in_the_receiver() {
        let check = SharedPrecheck::new(Bang);
        let (_, checked) = admitted(Some(&check), request(&["GET /items"]));
        assert!(checked.is_some_and(|c| c.is(&check)));
        let (items, checked) = admitted(Some(&check), request(&["GET /items", "!"]));
        assert_eq!(items, 2, "a flagged request is admitted whole");
        assert!(checked.is_none(), "and left to the processor");
    }
}
