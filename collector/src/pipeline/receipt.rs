//! Receipts: how a receiver learns that what it admitted is durable.
//!
//! When a pipeline ends in a persistent sending queue, a client must be answered only once its data is on
//! disk with the queue's durability. The receiver attaches a [`Receipt`] to each admitted chunk and awaits
//! the matching [`ReceiptWait`]. Every stage that passes a chunk on (or makes a new chunk from it) passes the
//! receipt with it; an in-memory sending queue releases it on admission, and a persistent queue releases it
//! once the record is written (and synced, with `fsync: always`). When the last copy of a receipt is
//! released, the receiver's wait ends: with success, or with the [`Refusal`] a persistent queue recorded
//! (the disk is full, a write failed), which the client gets as a retryable error.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::Refusal;

/// One admitted request's claim on durability, shared by every copy of its chunks.
#[derive(Clone, Debug)]
pub struct Receipt(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    outcome: Mutex<Outcome>,
}

#[derive(Debug)]
struct Outcome {
    answer: Option<oneshot::Sender<Result<(), Refusal>>>,
    failure: Option<Refusal>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let outcome = match self.outcome.get_mut() {
            Ok(outcome) => outcome,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(answer) = outcome.answer.take() {
            let _ = answer.send(match outcome.failure.take() {
                Some(refusal) => Err(refusal),
                None => Ok(()),
            });
        }
    }
}

/// The receiver's side of a [`Receipt`]: resolves when every copy of the receipt is released.
#[derive(Debug)]
pub struct ReceiptWait(oneshot::Receiver<Result<(), Refusal>>);

impl Receipt {
    /// A new receipt and the wait for it.
    pub fn new() -> (Receipt, ReceiptWait) {
        let (answer, wait) = oneshot::channel();
        let receipt = Receipt(Arc::new(Shared {
            outcome: Mutex::new(Outcome {
                answer: Some(answer),
                failure: None,
            }),
        }));
        (receipt, ReceiptWait(wait))
    }

    /// Records that this copy could not be made durable; the receiver answers with `refusal` once every copy
    /// is released. The first failure recorded wins.
    pub fn fail(&self, refusal: Refusal) {
        let mut outcome = match self.0.outcome.lock() {
            Ok(outcome) => outcome,
            Err(poisoned) => poisoned.into_inner(),
        };
        outcome.failure.get_or_insert(refusal);
    }
}

impl ReceiptWait {
    /// Waits until every copy of the receipt is released.
    pub async fn wait(self) -> Result<(), Refusal> {
        // The sender lives in the shared state, which always answers when dropped.
        self.0.await.unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn resolves_when_the_last_copy_is_released() {
        let (receipt, wait) = Receipt::new();
        let copy = receipt.clone();
        drop(receipt);
        let mut wait = Box::pin(wait.wait());
        assert!(
            futures_poll_once(&mut wait).is_none(),
            "one copy is still held"
        );
        drop(copy);
        assert_eq!(wait.await, Ok(()));
    }

    #[tokio::test]
    async fn a_failure_of_any_copy_is_the_answer() {
        let (receipt, wait) = Receipt::new();
        let copy = receipt.clone();
        copy.fail(Refusal::Full {
            retry_after: Duration::from_secs(2),
        });
        receipt.fail(Refusal::ShuttingDown);
        drop(copy);
        drop(receipt);
        assert_eq!(
            wait.wait().await,
            Err(Refusal::Full {
                retry_after: Duration::from_secs(2)
            })
        );
    }

    fn futures_poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(future).poll(&mut context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}
