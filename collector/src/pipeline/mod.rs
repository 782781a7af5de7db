//! What travels between components, and how one component hands it to the next.
//!
//! A [`Batch`] is OTLP export-request bytes of one signal plus its item count. Each stage hands batches to the
//! next through the one-method-pair [`Consumer`] trait, whose error *is* the backpressure:
//!
//! * [`Consumer::try_consume`] is admission, used by receivers: it never waits. When there is no room it returns
//!   [`Refusal::Full`], which the receiver turns into gRPC `UNAVAILABLE` / HTTP 503 with a retry hint. This is the
//!   only place data may be refused.
//! * [`Consumer::consume`] is used behind admission (a batch processor flushing into exporter queues): it waits
//!   for room, so nothing accepted is ever dropped for lack of space.
//!
//! Every queue is a bounded [`queue::BoundedQueue`]; the last stage of a pipeline is a [`fanout::FanOut`] over
//! exporter queues that admits a batch into all of them or none.

pub mod fanout;
pub mod memory;
pub mod persistent;
pub mod precheck;
pub mod queue;
pub mod receipt;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vigil_proto::otlp::Signal;

/// A boxed future, the return type of the object-safe async trait methods in the collector.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One encoded, validated `Export*ServiceRequest` and the number of items in it.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// The encoded request.
    pub bytes: Bytes,
    /// Spans, data points or log records in it.
    pub items: u64,
    /// The check this chunk's receiver ran while validating it, which found nothing its processor would
    /// change; that processor passes the chunk on without walking it (see [`precheck`]). A stage that changes
    /// a chunk's content makes a new chunk, which carries no such mark.
    pub prechecked: Option<precheck::SharedPrecheck>,
    /// The receipt of the request this chunk came from, while a persistent queue downstream may still have
    /// to make it durable before the client is answered (see [`receipt`]).
    pub receipt: Option<receipt::Receipt>,
    /// The bytes a `memory_limiter` counted when it admitted this chunk, given back when the last copy of the
    /// chunk (and of every chunk derived from it) is dropped (see [`memory`]).
    pub memory: Option<memory::MemoryLease>,
}

impl Chunk {
    /// A chunk no receiver has checked for masking.
    pub fn new(bytes: Bytes, items: u64) -> Self {
        Chunk {
            bytes,
            items,
            prechecked: None,
            receipt: None,
            memory: None,
        }
    }

    /// A chunk made from this one with new content: it keeps the receipt (the client still waits for this
    /// data) and the memory lease (the new content takes the place of the old), not the precheck mark (the
    /// content changed).
    pub fn derived(&self, bytes: Bytes, items: u64) -> Self {
        Chunk {
            receipt: self.receipt.clone(),
            memory: self.memory.clone(),
            ..Chunk::new(bytes, items)
        }
    }
}

/// Encoded OTLP export requests of one signal, treated as one unit.
///
/// The payload is a list of chunks, each a valid encoded `Export*ServiceRequest`; because a request is a
/// repeated field, their concatenation is one valid request. Batching appends chunks instead of copying bytes,
/// and cloning a batch for fan-out only bumps reference counts.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The signal of every item in the batch.
    pub signal: Signal,
    /// Encoded request chunks, to be read as their concatenation.
    pub chunks: Vec<Chunk>,
    /// Spans, data points or log records in the batch (the sum over chunks).
    pub items: u64,
}

impl Batch {
    /// A batch of one encoded request with a known item count.
    pub fn new(signal: Signal, bytes: Bytes, items: u64) -> Self {
        Batch::from_chunk(signal, Chunk::new(bytes, items))
    }

    /// A batch of one chunk.
    pub fn from_chunk(signal: Signal, chunk: Chunk) -> Self {
        Batch {
            signal,
            items: chunk.items,
            chunks: vec![chunk],
        }
    }

    /// An empty batch of `signal`.
    pub fn empty(signal: Signal) -> Self {
        Batch {
            signal,
            chunks: Vec::new(),
            items: 0,
        }
    }

    /// Encoded size in bytes.
    pub fn byte_len(&self) -> usize {
        self.chunks.iter().map(|c| c.bytes.len()).sum()
    }

    /// Appends another batch of the same signal.
    pub fn append(&mut self, other: Batch) {
        debug_assert_eq!(self.signal, other.signal);
        self.chunks.extend(other.chunks);
        self.items += other.items;
    }

    /// Appends one chunk.
    pub fn push(&mut self, chunk: Chunk) {
        self.items += chunk.items;
        self.chunks.push(chunk);
    }

    /// The chunks' bytes, for writers that send them back to back.
    pub fn byte_chunks(&self) -> Vec<Bytes> {
        self.chunks.iter().map(|c| c.bytes.clone()).collect()
    }

    /// Whether a client is still waiting for some of this batch to be stored.
    pub fn awaits_receipt(&self) -> bool {
        self.chunks.iter().any(|chunk| chunk.receipt.is_some())
    }

    /// Takes out the chunks whose clients are still waiting, answering those clients with `refusal`; the
    /// chunks nobody waits for (a connector's output) stay.
    pub fn refuse_waiting(&mut self, refusal: &Refusal) {
        self.chunks.retain(|chunk| match &chunk.receipt {
            Some(receipt) => {
                receipt.fail(refusal.clone());
                false
            }
            None => true,
        });
        self.items = self.chunks.iter().map(|chunk| chunk.items).sum();
    }

    /// Releases the receipts of every chunk: this copy needs no durability (an in-memory queue took it).
    pub fn release_receipts(&mut self) {
        for chunk in &mut self.chunks {
            chunk.receipt = None;
        }
    }

    /// Makes every chunk hold `lease` (replacing a lease taken earlier in the pipeline): the lease's bytes are
    /// given back once every chunk is gone.
    pub fn hold(&mut self, lease: &memory::MemoryLease) {
        for chunk in &mut self.chunks {
            chunk.memory = Some(lease.clone());
        }
    }

    /// Records on every chunk's receipt that this copy could not be made durable, then releases them.
    pub fn fail_receipts(&mut self, refusal: &Refusal) {
        for chunk in &mut self.chunks {
            if let Some(receipt) = chunk.receipt.take() {
                receipt.fail(refusal.clone());
            }
        }
    }

    /// The batch as one contiguous encoded request (copies only when there are several chunks).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.bytes.clone(),
            many => {
                let mut joined = Vec::with_capacity(self.byte_len());
                for chunk in many {
                    joined.extend_from_slice(&chunk.bytes);
                }
                Bytes::from(joined)
            }
        }
    }
}

/// Why a consumer did not take a batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No room right now; the sender should retry after the hint.
    #[error("pipeline is full, retry after {}ms", retry_after.as_millis())]
    Full {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// The collector is shutting down and takes no more data.
    #[error("collector is shutting down")]
    ShuttingDown,
    /// A `memory_limiter` found the collector's memory at its limit; the sender should retry.
    #[error("the collector is at its memory limit ({detail}), retry after {}ms", retry_after.as_millis())]
    MemoryLimit {
        /// Which limit was reached, with the numbers.
        detail: String,
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
    /// A persistent queue could not store the data (disk full, write error); the sender should retry.
    #[error("a persistent queue could not store the data ({message}); retry after {}ms", retry_after.as_millis())]
    Storage {
        /// What failed.
        message: String,
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
}

impl Refusal {
    /// Every value [`Refusal::reason`] returns.
    pub const REASONS: [&'static str; 4] = [
        "queue_full",
        "memory_limit",
        "storage_error",
        "shutting_down",
    ];

    /// The metric label for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Full { .. } => "queue_full",
            Refusal::MemoryLimit { .. } => "memory_limit",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Storage { .. } => "storage_error",
        }
    }

    /// How long the client should wait before retrying.
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::Full { retry_after }
            | Refusal::MemoryLimit { retry_after, .. }
            | Refusal::Storage { retry_after, .. } => *retry_after,
            Refusal::ShuttingDown => Duration::from_secs(5),
        }
    }
}

/// The next stage of a pipeline.
///
/// Implementations may be called concurrently from many tasks. Neither method may block a thread.
pub trait Consumer: Send + Sync + 'static {
    /// Admission: takes the batch now or refuses it; never waits.
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal>;

    /// Hands the batch on, waiting for room; fails only when the collector is shutting down.
    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>>;
}

/// A shared consumer.
pub type SharedConsumer = Arc<dyn Consumer>;

/// The hint given to clients when a pipeline is full: long enough for exporters to drain, short enough to keep
/// latency low.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Resolves once `flag` is `true` (or its sender is gone). Unlike `watch::Receiver::wait_for`, the future is
/// `Send` across `select!`, because the borrow guard is dropped inside.
pub async fn raised(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}
