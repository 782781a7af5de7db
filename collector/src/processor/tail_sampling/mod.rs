//! Processor `tail_sampling`: keeps or drops whole traces after seeing them, by policies (errors, slow
//! traces, attributes, a probability, rates), configured as in the OpenTelemetry Collector.
//!
//! Spans are buffered per trace for `decision_wait` after a trace's first span, then every policy judges the
//! trace: kept if any policy samples it and no inverted policy vetoes it. Memory is bounded ([`buffer`]):
//! `num_traces`, a byte budget (`max_memory_mib`) and `max_spans_per_trace`; traces pushed out by the bounds are
//! decided early rather than dropped unseen. Spans arriving after their trace's decision follow it. At shutdown
//! every buffered trace is decided and sent, so nothing accepted vanishes without a decision.

pub mod buffer;
pub mod policy;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use tokio::sync::watch;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;

use self::buffer::{Limits, Metrics, Output, TraceBuffer};
use self::policy::{Policy, PolicyConfig};
use super::{Built, ProcessorContext, QueuedEntry, StageTask};
use crate::component::Checker;
use crate::pipeline::queue::QueueReceiver;
use crate::pipeline::{Batch, SharedConsumer};

/// `processors.tail_sampling.decision_cache`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Trace ids remembered as sampled (late spans of these are sent).
    pub sampled_cache_size: usize,
    /// Trace ids remembered as not sampled (late spans of these are dropped).
    pub non_sampled_cache_size: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled_cache_size: 100_000,
            non_sampled_cache_size: 100_000,
        }
    }
}

/// `processors.tail_sampling`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    /// How long a trace is buffered after its first span.
    #[serde(with = "crate::component::duration")]
    pub decision_wait: Duration,
    /// Most traces buffered at once.
    pub num_traces: usize,
    /// Accepted for otelcol configs; Vigil sizes its tables as traces arrive.
    pub expected_new_traces_per_sec: u64,
    /// Most memory, in MiB of encoded spans, the buffer may hold.
    pub max_memory_mib: u64,
    /// A trace reaching this many spans is decided at once.
    pub max_spans_per_trace: u64,
    /// How many decisions are remembered for late spans.
    pub decision_cache: DecisionCacheConfig,
    /// Requests that may wait for the sampler before receivers are told to retry.
    pub queue_size: usize,
    /// The policies.
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            decision_wait: Duration::from_secs(30),
            num_traces: 50_000,
            expected_new_traces_per_sec: 0,
            max_memory_mib: 512,
            max_spans_per_trace: 10_000,
            decision_cache: DecisionCacheConfig::default(),
            queue_size: 1024,
            policies: Vec::new(),
        }
    }
}

impl TailSamplingConfig {
    /// Checks the fields and every policy.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.decision_wait.is_zero() {
            check.error(&format!("{path}.decision_wait"), "must be longer than 0s");
        }
        for (field, value) in [
            ("num_traces", self.num_traces as u64),
            ("max_memory_mib", self.max_memory_mib),
            ("max_spans_per_trace", self.max_spans_per_trace),
            ("queue_size", self.queue_size as u64),
        ] {
            if value == 0 {
                check.error(&format!("{path}.{field}"), "must be at least 1");
            }
        }
        policy::validate(check, path, &self.policies);
    }

    fn limits(&self) -> Limits {
        Limits {
            decision_wait: self.decision_wait,
            num_traces: self.num_traces,
            max_bytes: (self.max_memory_mib as usize).saturating_mul(1 << 20),
            max_spans_per_trace: self.max_spans_per_trace,
            sampled_cache_size: self.decision_cache.sampled_cache_size,
            non_sampled_cache_size: self.decision_cache.non_sampled_cache_size,
        }
    }
}

/// Builds the tail sampler in front of `next` (traces pipelines; other signals pass unchanged).
pub fn build(
    config: &TailSamplingConfig,
    context: ProcessorContext<'_>,
    next: SharedConsumer,
) -> Built {
    let id = context.id.to_string();
    if context.signal != Signal::Traces {
        tracing::warn!(
            processor = %id,
            pipeline = context.pipeline,
            "tail_sampling samples traces; {} pass unchanged",
            context.signal.as_str()
        );
        return Built {
            entry: next,
            stage: None,
        };
    }
    // Validated with the config; an error here cannot happen, but is not a panic either.
    let policies: Vec<Policy> = config
        .policies
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Policy::new(p, i).ok())
        .collect();
    let metrics = Metrics::new(context.registry, &id, context.pipeline, &policies);
    let buffer = TraceBuffer::new(config.limits(), policies, metrics);
    let (queue, receiver) = super::processor_queue(config.queue_size, &context);
    let labels = [("processor", id.as_str()), ("pipeline", context.pipeline)];
    let held_items = Arc::new(AtomicU64::new(0));
    let buffered_traces = Arc::new(AtomicU64::new(0));
    let buffered_bytes = Arc::new(AtomicU64::new(0));
    for (name, help, value) in [
        (
            "vigil_processor_tail_sampling_buffered_traces",
            "Traces the tail sampler holds awaiting a decision.",
            buffered_traces.clone(),
        ),
        (
            "vigil_processor_tail_sampling_buffered_bytes",
            "Encoded bytes of spans the tail sampler holds.",
            buffered_bytes.clone(),
        ),
    ] {
        context.registry.gauge_fn(name, help, &labels, move || {
            value.load(Ordering::Relaxed) as f64
        });
    }
    let (closing, closing_rx) = watch::channel(false);
    let sampler = Sampler {
        buffer,
        next,
        held_items: held_items.clone(),
        buffered_traces,
        buffered_bytes,
        tick: (config.decision_wait / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    };
    let task = tokio::spawn(sampler.run(receiver, closing_rx));
    Built {
        entry: Arc::new(QueuedEntry::new(queue, held_items.clone())),
        stage: Some(StageTask {
            closing,
            task,
            held_items,
        }),
    }
}

struct Sampler {
    buffer: TraceBuffer,
    next: SharedConsumer,
    held_items: Arc<AtomicU64>,
    buffered_traces: Arc<AtomicU64>,
    buffered_bytes: Arc<AtomicU64>,
    tick: Duration,
}

impl Sampler {
    async fn run(mut self, mut input: QueueReceiver, mut closing: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closed = false;
        loop {
            let buffered_before = self.buffer.span_count();
            let mut received = 0;
            let mut out = Output::default();
            let mut last = false;
            tokio::select! {
                biased;
                _ = crate::pipeline::raised(&mut closing), if !closed => {
                    input.close();
                    closed = true;
                    continue;
                }
                batch = input.recv() => match batch {
                    Some(batch) => {
                        received = batch.items;
                        let now = tokio::time::Instant::now().into_std();
                        for chunk in &batch.chunks {
                            match ExportTraceServiceRequest::decode(chunk.bytes.clone()) {
                                Ok(request) => self.buffer.add(request, now, &mut out),
                                // Validated on receipt, so this is a bug: say so.
                                Err(e) => tracing::error!(
                                    items = chunk.items,
                                    error = %e,
                                    "tail_sampling: request does not decode; dropped"
                                ),
                            }
                        }
                    }
                    None => {
                        let now = tokio::time::Instant::now().into_std();
                        self.buffer.decide_all(now, &mut out);
                        last = true;
                    }
                },
                _ = ticks.tick() => {
                    let now = tokio::time::Instant::now().into_std();
                    self.buffer.decide_due(now, &mut out);
                }
            }
            let sent = self.send(out).await;
            // Held: what waits in the queue plus what the buffer holds.
            let buffered_after = self.buffer.span_count();
            self.held_items.fetch_sub(received, Ordering::Relaxed);
            if buffered_after >= buffered_before {
                self.held_items
                    .fetch_add(buffered_after - buffered_before, Ordering::Relaxed);
            } else {
                self.held_items
                    .fetch_sub(buffered_before - buffered_after, Ordering::Relaxed);
            }
            self.buffered_traces
                .store(self.buffer.trace_count() as u64, Ordering::Relaxed);
            self.buffered_bytes
                .store(self.buffer.bytes() as u64, Ordering::Relaxed);
            if !sent || last {
                return;
            }
        }
    }

    /// Sends what was kept. `false` when downstream is gone.
    async fn send(&mut self, mut out: Output) -> bool {
        if out.spans == 0 {
            return true;
        }
        let request = out.request();
        let batch = Batch::new(
            Signal::Traces,
            Bytes::from(request.encode_to_vec()),
            out.spans,
        );
        let sent = self.next.consume(batch).await.is_ok();
        if !sent {
            tracing::error!(
                "tail_sampling: downstream queue closed before the sampler; this is a bug"
            );
        }
        sent
    }
}
