//! Processor `batch`: groups incoming requests into batches of `send_batch_size` items, or whatever has
//! arrived after `timeout`, and splits batches above `send_batch_max_size` / `send_batch_max_bytes`.
//!
//! Batching appends the requests' encoded chunks (no copy, no decode). A request larger than the maximum is
//! split at its top-level resource entries; one resource entry is never split, so a single entry holding more
//! items than the maximum travels as one (oversized) batch.
//!
//! Unlike the OpenTelemetry Collector's batch processor, flushing waits for room downstream instead of
//! dropping: a slow exporter fills this processor's bounded queue, and the receiver then refuses new data
//! with a retryable error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use vigil_proto::otlp::scan;

use super::{Built, ProcessorContext, QueuedEntry, StageTask};
use crate::component::Checker;
use crate::pipeline::queue::QueueReceiver;
use crate::pipeline::{Batch, Chunk, SharedConsumer};
use crate::telemetry::{Counter, Histogram};

/// `processors.batch`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Items that trigger sending a batch.
    pub send_batch_size: u64,
    /// Most items in one batch; 0 means no limit.
    pub send_batch_max_size: u64,
    /// Most encoded bytes in one batch; 0 means no limit.
    pub send_batch_max_bytes: usize,
    /// Longest time an item waits before its batch is sent, however small.
    #[serde(with = "crate::component::duration")]
    pub timeout: Duration,
    /// Requests that may wait for this processor before receivers are told to retry.
    pub queue_size: usize,
}

/// Default items per batch (as otelcol).
pub const DEFAULT_SEND_BATCH_SIZE: u64 = 8192;
/// Default batch timeout (as otelcol).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Default requests waiting in front of the batcher.
pub const DEFAULT_QUEUE_SIZE: usize = 1024;

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: DEFAULT_SEND_BATCH_SIZE,
            send_batch_max_size: 0,
            send_batch_max_bytes: 0,
            timeout: DEFAULT_TIMEOUT,
            queue_size: DEFAULT_QUEUE_SIZE,
        }
    }
}

impl BatchConfig {
    /// Checks relations between fields.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.send_batch_size == 0 {
            check.error(&format!("{path}.send_batch_size"), "must be at least 1");
        }
        if self.send_batch_max_size != 0 && self.send_batch_max_size < self.send_batch_size {
            check.error(
                &format!("{path}.send_batch_max_size"),
                format!(
                    "must be 0 (no limit) or at least send_batch_size ({})",
                    self.send_batch_size
                ),
            );
        }
        if self.timeout.is_zero() {
            check.error(&format!("{path}.timeout"), "must be longer than 0s");
        }
        if self.queue_size == 0 {
            check.error(&format!("{path}.queue_size"), "must be at least 1");
        }
    }
}

struct Metrics {
    batch_items: Histogram,
    by_size: Counter,
    by_timeout: Counter,
    by_shutdown: Counter,
}

/// Builds a batch processor in front of `next`.
pub fn build(config: &BatchConfig, context: ProcessorContext<'_>, next: SharedConsumer) -> Built {
    let (queue, receiver) = super::processor_queue(config.queue_size, &context);
    let id = context.id.to_string();
    let labels = [("processor", id.as_str()), ("pipeline", context.pipeline)];
    let registry = context.registry;
    let trigger = |reason: &'static str| {
        registry.counter(
            "vigil_processor_batch_sends_total",
            "Batches sent by the batch processor, by what triggered them.",
            &[
                ("processor", id.as_str()),
                ("pipeline", context.pipeline),
                ("trigger", reason),
            ],
        )
    };
    let metrics = Metrics {
        batch_items: registry.histogram(
            "vigil_processor_batch_send_size",
            "Items per batch sent by the batch processor.",
            &labels,
            &[10.0, 100.0, 1000.0, 5000.0, 10000.0, 50000.0, 100000.0],
        ),
        by_size: trigger("size"),
        by_timeout: trigger("timeout"),
        by_shutdown: trigger("shutdown"),
    };
    let (closing, closing_rx) = watch::channel(false);
    let held_items = Arc::new(AtomicU64::new(0));
    let batcher = Batcher {
        config: config.clone(),
        pending: Batch::empty(context.signal),
        next,
        metrics,
        held_items: held_items.clone(),
    };
    let task = tokio::spawn(batcher.run(receiver, closing_rx));
    Built {
        entry: Arc::new(QueuedEntry::new(queue, held_items.clone())),
        stage: Some(StageTask {
            closing,
            task,
            held_items,
        }),
    }
}

struct Batcher {
    config: BatchConfig,
    pending: Batch,
    next: SharedConsumer,
    metrics: Metrics,
    held_items: Arc<AtomicU64>,
}

enum Trigger {
    Size,
    Timeout,
    Shutdown,
}

impl Batcher {
    async fn run(mut self, mut input: QueueReceiver, mut closing: watch::Receiver<bool>) {
        let mut deadline: Option<Instant> = None;
        let mut closed = false;
        loop {
            tokio::select! {
                biased;
                _ = crate::pipeline::raised(&mut closing), if !closed => {
                    // Stop admission; what is already queued is still received below.
                    input.close();
                    closed = true;
                }
                received = input.recv() => match received {
                    Some(batch) => {
                        if self.pending.items == 0 {
                            deadline = Some(Instant::now() + self.config.timeout);
                        }
                        self.pending.append(batch);
                        if self.pending.items >= self.config.send_batch_size || self.over_bytes() {
                            if !self.flush(Trigger::Size, false).await { return; }
                            deadline = (self.pending.items > 0).then(|| Instant::now() + self.config.timeout);
                        }
                    }
                    None => {
                        self.flush(Trigger::Shutdown, true).await;
                        return;
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if !self.flush(Trigger::Timeout, true).await { return; }
                    deadline = None;
                }
            }
        }
    }

    fn over_bytes(&self) -> bool {
        self.config.send_batch_max_bytes > 0
            && self.pending.byte_len() >= self.config.send_batch_max_bytes
    }

    /// Sends full batches; with `all`, sends the remainder too. Returns `false` when downstream is gone.
    async fn flush(&mut self, trigger: Trigger, all: bool) -> bool {
        loop {
            let full = self.pending.items >= self.config.send_batch_size || self.over_bytes();
            if self.pending.items == 0 || !(full || all) {
                return true;
            }
            let batch = self.take_one();
            let counter = match trigger {
                Trigger::Size => &self.metrics.by_size,
                Trigger::Timeout => &self.metrics.by_timeout,
                Trigger::Shutdown => &self.metrics.by_shutdown,
            };
            counter.add(1);
            self.metrics.batch_items.observe(batch.items as f64);
            let items = batch.items;
            if self.next.consume(batch).await.is_err() {
                tracing::error!(
                    "batch processor: downstream queue closed before the batch processor; this is a bug"
                );
                return false;
            }
            self.held_items.fetch_sub(items, Ordering::Relaxed);
        }
    }

    /// Takes the next batch to send from `pending`, respecting the maximum size and bytes.
    fn take_one(&mut self) -> Batch {
        let max_items = match self.config.send_batch_max_size {
            0 => u64::MAX,
            n => n,
        };
        let max_bytes = match self.config.send_batch_max_bytes {
            0 => usize::MAX,
            n => n,
        };
        if self.pending.items <= max_items && self.pending.byte_len() <= max_bytes {
            let signal = self.pending.signal;
            return std::mem::replace(&mut self.pending, Batch::empty(signal));
        }
        let mut queue: VecDeque<Chunk> = std::mem::take(&mut self.pending.chunks).into();
        self.pending.items = 0;
        let mut out = Batch::empty(self.pending.signal);
        let mut out_bytes = 0;
        while let Some(chunk) = queue.pop_front() {
            let fits =
                out.items + chunk.items <= max_items && out_bytes + chunk.bytes.len() <= max_bytes;
            if fits {
                out_bytes += chunk.bytes.len();
                out.push(chunk);
                continue;
            }
            let pieces = split(self.pending.signal, &chunk);
            if pieces.len() > 1 {
                for piece in pieces.into_iter().rev() {
                    queue.push_front(piece);
                }
                continue;
            }
            if out.items == 0 {
                // One resource entry larger than the limit: it cannot be split without decoding.
                out.push(chunk);
            } else {
                queue.push_front(chunk);
            }
            break;
        }
        for chunk in queue {
            self.pending.push(chunk);
        }
        out
    }
}

/// Splits a chunk into one chunk per top-level resource entry (zero-copy slices).
fn split(signal: vigil_proto::otlp::Signal, chunk: &Chunk) -> Vec<Chunk> {
    // Chunks were validated on receipt: the entries' structure is enough.
    match scan::entries(signal, &chunk.bytes) {
        entries if entries.len() > 1 => entries
            .into_iter()
            .map(|(bytes, items)| Chunk {
                // Part of a chunk with nothing to mask has nothing to mask.
                prechecked: chunk.prechecked.clone(),
                ..chunk.derived(chunk.bytes.slice(bytes), items)
            })
            .collect(),
        _ => vec![chunk.clone()],
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
