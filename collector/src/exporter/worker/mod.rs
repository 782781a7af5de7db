//! The machinery every exporter shares: a bounded sending queue, concurrent consumers, retries with
//! exponential backoff and jitter that honour the backend's retry hint, and an account of every item.
//!
//! Every item that enters the queue ends in exactly one counter: `vigil_exporter_sent_items_total` or
//! `vigil_exporter_dropped_items_total{reason}` (`rejected_by_backend`, `permanent_error`, `undecodable`,
//! `retries_exhausted`, `shutdown`).
//!
//! One bad request never costs the others their data: when an exporter finds a batch undecodable
//! ([`ExportError::Undecodable`]), a batch of several requests is delivered again one request at a time and
//! only the requests that still fail are dropped. An exporter that reads each request on its own (the
//! `spanmetrics` connector) reports the items it could not read in [`Exported::undecodable`](crate::delivery::Exported::undecodable) instead, and the
//! rest of the batch counts as sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{ExportError, Exporter, QueueSettings, RetrySettings};
use crate::component::ComponentError;
pub use crate::delivery::Backoff;
use crate::pipeline::persistent::PersistentQueue;
use crate::pipeline::queue::{BoundedQueue, QueueGauges, QueueReceiver, SendingQueue};
use crate::pipeline::{Batch, BoxFuture};
use crate::telemetry::{Counter, Problems, Registry};

struct Accounts {
    sent: Counter,
    retries: Counter,
    rejected_by_backend: Counter,
    permanent_error: Counter,
    undecodable: Counter,
    retries_exhausted: Counter,
    shutdown: Counter,
    in_flight: AtomicU64,
}

/// Where consumers take batches from.
#[derive(Clone)]
enum Source {
    Memory(Arc<Mutex<QueueReceiver>>),
    Persistent(Arc<PersistentQueue>),
}

/// A running exporter with its queue and consumers.
pub struct ExporterWorker {
    id: String,
    queue: SendingQueue,
    source: Source,
    closing: watch::Sender<bool>,
    tasks: JoinSet<()>,
    exporter: Arc<dyn Exporter>,
    accounts: Arc<Accounts>,
}

impl ExporterWorker {
    /// Starts `settings.num_consumers` consumers exporting through `exporter`. Fails only when a persistent
    /// queue cannot be opened.
    pub fn start(
        id: &str,
        exporter: Box<dyn Exporter>,
        queue_settings: &QueueSettings,
        retry: RetrySettings,
        registry: &Registry,
    ) -> Result<Self, ComponentError> {
        let labels = [("exporter", id)];
        let dropped = |reason: &'static str| registry.exporter_dropped(id, reason);
        let accounts = Arc::new(Accounts {
            sent: registry.counter(
                "vigil_exporter_sent_items_total",
                "Items delivered by an exporter.",
                &labels,
            ),
            retries: registry.counter(
                "vigil_exporter_retries_total",
                "Export attempts that failed with a retryable error and were retried.",
                &labels,
            ),
            rejected_by_backend: dropped("rejected_by_backend"),
            permanent_error: dropped("permanent_error"),
            undecodable: dropped("undecodable"),
            retries_exhausted: dropped("retries_exhausted"),
            shutdown: dropped("shutdown"),
            in_flight: AtomicU64::new(0),
        });
        let (queue, source) = match &queue_settings.storage {
            Some(storage) => {
                let persistent = PersistentQueue::open(id, storage, registry).map_err(|e| {
                    ComponentError::build(
                        format!("exporter {id}"),
                        format!("persistent queue: {e}"),
                    )
                })?;
                (
                    SendingQueue::Persistent(persistent.clone()),
                    Source::Persistent(persistent),
                )
            }
            None => {
                let (queue, receiver) = BoundedQueue::new(queue_settings.queue_size);
                queue.publish_gauges(
                    registry,
                    QueueGauges {
                        size_name: "vigil_exporter_queue_size",
                        size_help: "Batches waiting in an exporter's sending queue.",
                        capacity_name: "vigil_exporter_queue_capacity",
                        capacity_help: "Most batches an exporter's sending queue holds.",
                    },
                    &labels,
                );
                (
                    SendingQueue::Memory(queue),
                    Source::Memory(Arc::new(Mutex::new(receiver))),
                )
            }
        };
        let in_flight = accounts.clone();
        registry.gauge_fn(
            "vigil_exporter_in_flight_items",
            "Items an exporter is sending or waiting to retry.",
            &labels,
            move || in_flight.in_flight.load(Ordering::Relaxed) as f64,
        );
        let exporter: Arc<dyn Exporter> = Arc::from(exporter);
        let (closing, closing_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let consumers = queue_settings.num_consumers.max(1);
        for _ in 0..consumers {
            let consumer = Consumer {
                consumers,
                id: id.to_string(),
                component: problem_key(id),
                problems: registry.problems().clone(),
                exporter: exporter.clone(),
                source: source.clone(),
                retry: retry.clone(),
                accounts: accounts.clone(),
                closing: closing_rx.clone(),
            };
            tasks.spawn(consumer.run());
        }
        Ok(ExporterWorker {
            id: id.to_string(),
            queue,
            source,
            closing,
            tasks,
            exporter,
            accounts,
        })
    }

    /// The queue pipelines send into.
    pub fn queue(&self) -> SendingQueue {
        self.queue.clone()
    }

    /// Stops taking batches, exports what is queued until `deadline`, then gives up on the rest (counted as
    /// dropped with reason `shutdown`). Returns the number of items that could not be delivered for that reason.
    ///
    /// A persistent queue first stores what it was given, and its consumers only finish the records they
    /// hold: the rest stays on disk for the next start, and nothing is dropped.
    pub async fn shutdown(mut self, deadline: Instant) -> u64 {
        if let Source::Persistent(queue) = &self.source {
            queue.close().await;
        }
        let _ = self.closing.send(true);
        let drained = tokio::time::timeout_at(deadline, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        let mut lost = 0;
        if !drained {
            self.tasks.shutdown().await;
            if let Source::Memory(receiver) = &self.source {
                lost += self.accounts.in_flight.swap(0, Ordering::Relaxed);
                let mut receiver = receiver.lock().await;
                receiver.close();
                while let Ok(batch) = receiver.try_recv() {
                    lost += batch.items;
                }
                self.accounts.shutdown.add(lost);
            }
        }
        self.exporter.shutdown().await;
        if lost > 0 {
            tracing::error!(
                exporter = %self.id,
                items = lost,
                "shutdown deadline passed before everything was exported; these items were dropped"
            );
        }
        lost
    }
}

/// The name an exporter's problems are reported under on `/readyz`: `exporter/<id>`, or `connector/<id>`.
pub fn problem_key(id: &str) -> String {
    if id.starts_with("connector/") {
        id.to_string()
    } else {
        format!("exporter/{id}")
    }
}

struct Consumer {
    /// How many consumers share the receiver.
    consumers: usize,
    id: String,
    /// Where this exporter's problems are reported.
    component: String,
    problems: Problems,
    exporter: Arc<dyn Exporter>,
    source: Source,
    retry: RetrySettings,
    accounts: Arc<Accounts>,
    closing: watch::Receiver<bool>,
}

impl Consumer {
    async fn run(self) {
        match self.source.clone() {
            Source::Memory(receiver) => self.run_memory(receiver).await,
            Source::Persistent(queue) => self.run_persistent(queue).await,
        }
    }

    async fn run_persistent(mut self, queue: Arc<PersistentQueue>) {
        while let Some((batch, ticket)) = queue.take(&mut self.closing).await {
            self.accounts
                .in_flight
                .fetch_add(batch.items, Ordering::Relaxed);
            self.deliver(&batch).await;
            self.accounts
                .in_flight
                .fetch_sub(batch.items, Ordering::Relaxed);
            queue.done(ticket);
        }
    }

    async fn run_memory(mut self, receiver: Arc<Mutex<QueueReceiver>>) {
        let mut taken = Vec::new();
        loop {
            {
                let mut receiver = receiver.lock().await;
                // Each turn at the shared receiver costs a trip through the scheduler, which under load is long:
                // with a backlog, a consumer takes its share of it, not one batch.
                let share = (receiver.len() / self.consumers).max(1);
                tokio::select! {
                    biased;
                    _ = receiver.recv_many(&mut taken, share) => {}
                    _ = crate::pipeline::raised(&mut self.closing) => {
                        // No new batches from now on; the ones queued are still exported.
                        receiver.close();
                        receiver.recv_many(&mut taken, share).await;
                    }
                }
            }
            if taken.is_empty() {
                return;
            }
            let items: u64 = taken.iter().map(|batch| batch.items).sum();
            self.accounts.in_flight.fetch_add(items, Ordering::Relaxed);
            for batch in taken.drain(..) {
                self.deliver(&batch).await;
                self.accounts
                    .in_flight
                    .fetch_sub(batch.items, Ordering::Relaxed);
            }
        }
    }

    fn deliver<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, ()> {
        Box::pin(self.deliver_batch(batch))
    }

    async fn deliver_batch(&self, batch: &Batch) {
        let mut backoff = Backoff::new(&self.retry);
        loop {
            match self.exporter.export(batch).await {
                Ok(exported) => {
                    if exported.rejected == 0 {
                        self.problems.clear(&self.component);
                    }
                    let rejected = exported.rejected.min(batch.items);
                    let undecodable = exported.undecodable.min(batch.items - rejected);
                    self.accounts.sent.add(batch.items - rejected - undecodable);
                    if rejected > 0 {
                        self.accounts.rejected_by_backend.add(rejected);
                        tracing::warn!(
                            exporter = %self.id, rejected, message = %exported.message,
                            "backend rejected part of a batch"
                        );
                    }
                    if undecodable > 0 {
                        self.accounts.undecodable.add(undecodable);
                        tracing::warn!(
                            exporter = %self.id, undecodable, message = %exported.message,
                            "part of a batch could not be read; those items are dropped"
                        );
                    }
                    return;
                }
                Err(ExportError::Undecodable { message }) if batch.chunks.len() > 1 => {
                    tracing::warn!(
                        exporter = %self.id, requests = batch.chunks.len(), error = %message,
                        "batch could not be exported whole; sending its requests one by one"
                    );
                    for chunk in &batch.chunks {
                        let single = Batch::from_chunk(batch.signal, chunk.clone());
                        self.deliver(&single).await;
                    }
                    return;
                }
                Err(ExportError::Undecodable { message }) => {
                    self.accounts.undecodable.add(batch.items);
                    tracing::error!(
                        exporter = %self.id, items = batch.items, error = %message,
                        "request does not decode (or the backend called it malformed); dropped"
                    );
                    return;
                }
                Err(ExportError::Permanent { message }) => {
                    self.problems.report(&self.component, &message);
                    self.accounts.permanent_error.add(batch.items);
                    tracing::error!(
                        exporter = %self.id, items = batch.items, error = %message,
                        "export failed permanently; batch dropped"
                    );
                    return;
                }
                Err(ExportError::Retryable {
                    message,
                    retry_after,
                }) => {
                    let Some(wait) = backoff.next_wait(retry_after) else {
                        self.accounts.retries_exhausted.add(batch.items);
                        tracing::error!(
                            exporter = %self.id, items = batch.items, error = %message,
                            "export failed and retries are exhausted; batch dropped"
                        );
                        return;
                    };
                    self.accounts.retries.add(1);
                    tracing::warn!(
                        exporter = %self.id, error = %message, retry_in_ms = wait.as_millis() as u64,
                        "export failed; will retry"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
