//! The end of a pipeline: one batch into every exporter queue of the pipeline, all or none.
//!
//! Behind admission (a batch processor flushing), a full queue is waited for, so nothing accepted is dropped;
//! but a batch whose clients are still waiting for it to be stored (see [`super::receipt`]) is refused
//! instead, through its receipts, so those clients get "retry later" at once.

use super::queue::SendingQueue;
use super::{Batch, BoxFuture, Consumer, Refusal};

/// Hands each batch to several exporter queues.
///
/// Admission reserves a slot in every queue before sending to any, so a client is never told "retry" for data
/// that one exporter already took (which would duplicate it) nor "ok" for data one exporter could not take.
#[derive(Clone)]
pub struct FanOut {
    queues: Vec<SendingQueue>,
}

impl FanOut {
    /// A fan-out over the given exporter queues.
    pub fn new(queues: Vec<SendingQueue>) -> Self {
        FanOut { queues }
    }
}

impl Consumer for FanOut {
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal> {
        match self.queues.as_slice() {
            [one] => {
                one.try_reserve()?.send(batch);
                Ok(())
            }
            many => {
                let permits = many
                    .iter()
                    .map(SendingQueue::try_reserve)
                    .collect::<Result<Vec<_>, _>>()?;
                for permit in permits {
                    permit.send(batch.clone());
                }
                Ok(())
            }
        }
    }

    fn consume(&self, mut batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let mut permits = Vec::with_capacity(self.queues.len());
            for queue in &self.queues {
                let permit = match queue.try_reserve() {
                    Ok(permit) => permit,
                    // Clients still wait for part of this batch to be stored: answer them "retry later" now
                    // rather than hold their requests until room appears (nothing was sent to any queue yet).
                    // What nobody waits for (a connector's output) waits for room as usual.
                    Err(refusal @ Refusal::Full { .. }) if batch.awaits_receipt() => {
                        batch.refuse_waiting(&refusal);
                        if batch.chunks.is_empty() {
                            return Ok(());
                        }
                        queue.reserve().await?
                    }
                    Err(_) => queue.reserve().await?,
                };
                permits.push(permit);
            }
            for permit in permits {
                permit.send(batch.clone());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::queue::BoundedQueue;
    use bytes::Bytes;
    use vigil_proto::otlp::Signal;

    #[tokio::test]
    async fn all_or_nothing_admission() {
        let (a, mut rx_a) = BoundedQueue::new(1);
        let (b, mut rx_b) = BoundedQueue::new(2);
        let fanout = FanOut::new(vec![
            SendingQueue::Memory(a.clone()),
            SendingQueue::Memory(b.clone()),
        ]);
        let batch = Batch::new(Signal::Logs, Bytes::from_static(b"x"), 3);
        fanout.try_consume(batch.clone()).unwrap();
        // `a` is full now: the second batch must go to neither queue.
        assert!(fanout.try_consume(batch.clone()).is_err());
        assert_eq!(a.len(), 1);
        assert_eq!(b.len(), 1);
        assert_eq!(rx_a.recv().await.unwrap().items, 3);
        assert_eq!(rx_b.recv().await.unwrap().items, 3);
    }

    #[tokio::test]
    async fn behind_admission_a_full_queue_refuses_waiting_clients_and_holds_the_rest() {
        use crate::pipeline::Chunk;
        use crate::pipeline::receipt::Receipt;
        let (queue, mut rx) = BoundedQueue::new(1);
        let fanout = FanOut::new(vec![SendingQueue::Memory(queue)]);
        fanout
            .try_consume(Batch::new(Signal::Logs, Bytes::from_static(b"f"), 1))
            .unwrap();
        let (receipt, wait) = Receipt::new();
        let mut batch = Batch::new(Signal::Logs, Bytes::from_static(b"connector"), 2);
        batch.push(Chunk {
            receipt: Some(receipt),
            ..Chunk::new(Bytes::from_static(b"client"), 3)
        });
        let consuming = tokio::spawn(async move { fanout.consume(batch).await });
        // The client is answered at once, while the queue is still full.
        assert!(matches!(wait.wait().await, Err(Refusal::Full { .. })));
        assert_eq!(rx.recv().await.unwrap().items, 1);
        consuming.await.unwrap().unwrap();
        let held = rx.recv().await.unwrap();
        assert_eq!(
            held.items, 2,
            "the chunk nobody waits for still goes through"
        );
        assert_eq!(held.to_bytes(), Bytes::from_static(b"connector"));
    }
}
