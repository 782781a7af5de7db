//! The end of a pipeline: one batch into every exporter queue of the pipeline, all or none.

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

    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let mut permits = Vec::with_capacity(self.queues.len());
            for queue in &self.queues {
                permits.push(queue.reserve().await?);
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
}
