//! The bounded queue between two stages, and the sending queue in front of an exporter (in memory, or
//! persistent).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::persistent::PersistentQueue;
use super::{Batch, BoxFuture, Consumer, DEFAULT_RETRY_AFTER, Refusal};
use crate::telemetry::Registry;

/// Names and help texts of a queue's length and capacity gauges.
#[derive(Clone, Copy, Debug)]
pub struct QueueGauges {
    /// Name of the length gauge.
    pub size_name: &'static str,
    /// Help of the length gauge.
    pub size_help: &'static str,
    /// Name of the capacity gauge.
    pub capacity_name: &'static str,
    /// Help of the capacity gauge.
    pub capacity_help: &'static str,
}

/// The sending half of a bounded batch queue; admission fails fast when it is full.
#[derive(Clone, Debug)]
pub struct BoundedQueue {
    sender: mpsc::Sender<Batch>,
}

/// The receiving half, owned by the stage's task.
pub type QueueReceiver = mpsc::Receiver<Batch>;

impl BoundedQueue {
    /// A queue holding at most `capacity` batches (at least one).
    pub fn new(capacity: usize) -> (Self, QueueReceiver) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (BoundedQueue { sender }, receiver)
    }

    /// Batches waiting in the queue.
    pub fn len(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Whether no batch is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most batches the queue holds.
    pub fn capacity(&self) -> usize {
        self.sender.max_capacity()
    }

    /// Reserves a slot without waiting, so several queues can be filled all-or-nothing.
    pub fn try_reserve(&self) -> Result<mpsc::Permit<'_, Batch>, Refusal> {
        self.sender.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => Refusal::Full {
                retry_after: DEFAULT_RETRY_AFTER,
            },
            mpsc::error::TrySendError::Closed(()) => Refusal::ShuttingDown,
        })
    }

    /// Reserves a slot, waiting for one.
    pub async fn reserve(&self) -> Result<mpsc::Permit<'_, Batch>, Refusal> {
        self.sender
            .reserve()
            .await
            .map_err(|_| Refusal::ShuttingDown)
    }

    /// Publishes the queue's length and capacity as the gauges named in `gauges`
    /// (read at scrape time).
    pub fn publish_gauges(
        &self,
        registry: &Registry,
        gauges: QueueGauges,
        labels: &[(&str, &str)],
    ) {
        let reader = self.clone();
        registry.gauge_fn(gauges.size_name, gauges.size_help, labels, move || {
            reader.len() as f64
        });
        let capacity = self.capacity() as f64;
        registry.gauge_fn(
            gauges.capacity_name,
            gauges.capacity_help,
            labels,
            move || capacity,
        );
    }

    /// This queue as a shared consumer.
    pub fn into_consumer(self) -> Arc<dyn Consumer> {
        Arc::new(self)
    }
}

impl Consumer for BoundedQueue {
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal> {
        self.try_reserve()?.send(batch);
        Ok(())
    }

    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            self.reserve().await?.send(batch);
            Ok(())
        })
    }
}

/// An exporter's sending queue: batches wait here for the exporter's consumers.
#[derive(Clone)]
pub enum SendingQueue {
    /// In memory, bounded in batches (`queue_size`).
    Memory(BoundedQueue),
    /// On disk, bounded in bytes (`storage.max_size_mib`).
    Persistent(Arc<PersistentQueue>),
}

/// Room reserved in a [`SendingQueue`] for one batch.
pub enum SendPermit<'a> {
    /// A slot in an in-memory queue.
    Memory(mpsc::Permit<'a, Batch>),
    /// Room in a persistent queue.
    Persistent(&'a PersistentQueue),
}

impl SendPermit<'_> {
    /// Sends `batch` into the reserved room. An in-memory queue releases the batch's receipts at once (this
    /// copy needs no durability); a persistent queue releases them once the batch is stored.
    pub fn send(self, mut batch: Batch) {
        match self {
            SendPermit::Memory(permit) => {
                batch.release_receipts();
                permit.send(batch);
            }
            SendPermit::Persistent(queue) => queue.write(batch),
        }
    }
}

impl SendingQueue {
    /// Reserves room without waiting.
    pub fn try_reserve(&self) -> Result<SendPermit<'_>, Refusal> {
        match self {
            SendingQueue::Memory(queue) => queue.try_reserve().map(SendPermit::Memory),
            SendingQueue::Persistent(queue) => {
                queue.try_reserve()?;
                Ok(SendPermit::Persistent(queue))
            }
        }
    }

    /// Reserves room, waiting for it.
    pub async fn reserve(&self) -> Result<SendPermit<'_>, Refusal> {
        match self {
            SendingQueue::Memory(queue) => queue.reserve().await.map(SendPermit::Memory),
            SendingQueue::Persistent(queue) => {
                queue.reserve().await?;
                Ok(SendPermit::Persistent(queue))
            }
        }
    }

    /// Whether the queue is on disk (so receivers wait for it to store what they admit).
    pub fn is_persistent(&self) -> bool {
        matches!(self, SendingQueue::Persistent(_))
    }
}

impl Consumer for SendingQueue {
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal> {
        self.try_reserve()?.send(batch);
        Ok(())
    }

    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            self.reserve().await?.send(batch);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use vigil_proto::otlp::Signal;

    fn batch() -> Batch {
        Batch::new(Signal::Traces, Bytes::from_static(b""), 1)
    }

    #[tokio::test]
    async fn refuses_when_full_and_reports_length() {
        let (queue, mut rx) = BoundedQueue::new(2);
        queue.try_consume(batch()).unwrap();
        queue.try_consume(batch()).unwrap();
        assert_eq!(queue.len(), 2);
        assert!(matches!(
            queue.try_consume(batch()),
            Err(Refusal::Full { .. })
        ));
        rx.recv().await.unwrap();
        assert_eq!(queue.len(), 1);
        queue.try_consume(batch()).unwrap();
        rx.close();
        assert_eq!(queue.try_consume(batch()), Err(Refusal::ShuttingDown));
    }
}
