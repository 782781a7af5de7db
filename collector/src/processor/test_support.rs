//! Helpers shared by the processors' unit tests.

use std::sync::Mutex;

use bytes::Bytes;
use prost::Message as _;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::pipeline::{Batch, BoxFuture, Consumer, Refusal};

/// Records every batch it is given.
#[derive(Default)]
pub(crate) struct Recorder(pub(crate) Mutex<Vec<Batch>>);

impl Recorder {
    /// Every span received so far, decoded, in order.
    pub(crate) fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|batch| {
                let request = ExportTraceServiceRequest::decode(batch.to_bytes()).unwrap();
                request
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Consumer for Recorder {
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal> {
        self.0.lock().unwrap().push(batch);
        Ok(())
    }
    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        self.0.lock().unwrap().push(batch);
        Box::pin(async { Ok(()) })
    }
}

/// A trace id whose low 56 bits (its sampling randomness) come from `n`, spread by a multiplicative hash.
pub(crate) fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    id
}

/// One request holding `spans` under one resource and scope.
pub(crate) fn traces(spans: Vec<Span>) -> Batch {
    let items = spans.len() as u64;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::new(Signal::Traces, Bytes::from(request.encode_to_vec()), items)
}

/// A small deterministic generator (xorshift): each call gives a number below its argument. For property tests
/// that build requests from a seed, so a failure names the seed that shows it.
pub(crate) fn numbers(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed | 1;
    move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below.max(1)
    }
}
