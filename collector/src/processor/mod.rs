//! Processors: what happens to a batch between its receiver and its exporters.
//!
//! A processor is built with the consumer that follows it and returns the consumer that precedes it, so
//! pipelines are assembled back to front from config and no processor knows its neighbours. Stateless
//! processors wrap the next consumer; stateful ones (batch) own a task and a bounded queue.

pub mod batch;
pub mod mask;
pub mod memory_limiter;
pub mod probabilistic_sampler;
pub mod tail_sampling;
#[cfg(test)]
pub(crate) mod test_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_proto::otlp::Signal;

use crate::component::{Checker, ComponentId};
use crate::pipeline::memory::MemoryAccount;
use crate::pipeline::precheck::SharedPrecheck;
use crate::pipeline::queue::{BoundedQueue, QueueGauges, QueueReceiver};
use crate::pipeline::{Batch, BoxFuture, Consumer, Refusal, SharedConsumer};
use crate::telemetry::Registry;

/// A processor's configuration, by type.
#[derive(Clone, Debug)]
pub enum ProcessorConfig {
    /// `batch`: groups items into larger batches by size, bytes and time.
    Batch(batch::BatchConfig),
    /// `mask`: masks secrets and personal data with the SDK's engine.
    Mask(mask::MaskProcessorConfig),
    /// `memory_limiter`: refuses data before the collector's memory passes a limit.
    MemoryLimiter(memory_limiter::MemoryLimiterConfig),
    /// `probabilistic_sampler`: keeps a consistent percentage of traces and logs.
    ProbabilisticSampler(probabilistic_sampler::ProbabilisticSamplerConfig),
    /// `tail_sampling`: keeps whole traces by policies after seeing them.
    TailSampling(tail_sampling::TailSamplingConfig),
}

impl ProcessorConfig {
    /// The factory: decodes the section of a processor of type `kind`.
    pub fn decode(check: &mut Checker<'_>, path: &str, kind: &str, value: &Value) -> Option<Self> {
        match kind {
            "batch" => {
                let config: batch::BatchConfig = check.decode(path, value)?;
                config.validate(check, path);
                Some(ProcessorConfig::Batch(config))
            }
            "mask" => {
                let config: vigil::mask::MaskConfig = check.decode(path, value)?;
                mask::MaskProcessorConfig::new(check, path, config).map(ProcessorConfig::Mask)
            }
            "memory_limiter" => memory_limiter::MemoryLimiterConfig::decode(check, path, value)
                .map(ProcessorConfig::MemoryLimiter),
            "probabilistic_sampler" => {
                let config: probabilistic_sampler::ProbabilisticSamplerConfig =
                    check.decode(path, value)?;
                config.validate(check, path);
                Some(ProcessorConfig::ProbabilisticSampler(config))
            }
            "tail_sampling" => {
                let config: tail_sampling::TailSamplingConfig = check.decode(path, value)?;
                config.validate(check, path);
                Some(ProcessorConfig::TailSampling(config))
            }
            other => {
                check.error(
                    path,
                    format!(
                        "unknown processor type `{other}`; known types: batch, mask, memory_limiter, \
                         probabilistic_sampler, tail_sampling"
                    ),
                );
                None
            }
        }
    }

    /// The check this processor asks the receivers of its pipelines to run while they validate each request,
    /// if it declares one (see [`crate::pipeline::precheck`]).
    pub fn precheck(&self) -> Option<SharedPrecheck> {
        match self {
            ProcessorConfig::Mask(config) => config.precheck.clone(),
            _ => None,
        }
    }

    /// Builds this processor for one pipeline in front of `next`.
    pub fn build(&self, context: ProcessorContext<'_>, next: SharedConsumer) -> Built {
        match self {
            ProcessorConfig::Batch(config) => batch::build(config, context, next),
            ProcessorConfig::Mask(config) => mask::build(config, context, next),
            ProcessorConfig::MemoryLimiter(config) => memory_limiter::build(config, context, next),
            ProcessorConfig::ProbabilisticSampler(config) => {
                probabilistic_sampler::build(config, context, next)
            }
            ProcessorConfig::TailSampling(config) => tail_sampling::build(config, context, next),
        }
    }
}

/// What a processor is built with.
pub struct ProcessorContext<'a> {
    /// The processor's id.
    pub id: &'a ComponentId,
    /// The pipeline it is built for (`traces`, `logs/audit`, …).
    pub pipeline: &'a str,
    /// The signal of that pipeline.
    pub signal: Signal,
    /// Self-metrics.
    pub registry: &'a Registry,
    /// The bytes of accepted data held collector-wide, which `memory_limiter` admits against.
    pub memory: &'a MemoryAccount,
}

/// A processor stage that owns a task.
pub struct StageTask {
    /// Set to `true` to make the task stop taking input, flush what it holds, and end.
    pub closing: watch::Sender<bool>,
    /// The task; it ends after its last flush.
    pub task: JoinHandle<()>,
    /// Items admitted into the stage and not yet handed to the next one: what is lost if the task is aborted.
    pub held_items: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A built processor: the consumer in front of it and, for stateful processors, its task.
pub struct Built {
    /// Where the previous stage sends batches.
    pub entry: SharedConsumer,
    /// The task to stop at shutdown, for stateful processors.
    pub stage: Option<StageTask>,
}

/// A bounded queue in front of a stateful processor, its size and capacity published as self-metrics.
pub fn processor_queue(
    capacity: usize,
    context: &ProcessorContext<'_>,
) -> (BoundedQueue, QueueReceiver) {
    let (queue, receiver) = BoundedQueue::new(capacity);
    let id = context.id.to_string();
    queue.publish_gauges(
        context.registry,
        QueueGauges {
            size_name: "vigil_processor_queue_size",
            size_help: "Requests waiting in a processor's queue.",
            capacity_name: "vigil_processor_queue_capacity",
            capacity_help: "Most requests a processor's queue holds.",
        },
        &[("processor", id.as_str()), ("pipeline", context.pipeline)],
    );
    (queue, receiver)
}

/// The entry of a stateful processor: admission into its queue, counting what is admitted as held by the
/// stage until the stage's task hands it on.
pub struct QueuedEntry {
    queue: BoundedQueue,
    held_items: Arc<AtomicU64>,
}

impl QueuedEntry {
    /// Admits into `queue`, adding admitted items to `held_items`.
    pub fn new(queue: BoundedQueue, held_items: Arc<AtomicU64>) -> Self {
        QueuedEntry { queue, held_items }
    }
}

impl Consumer for QueuedEntry {
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal> {
        let items = batch.items;
        let permit = self.queue.try_reserve()?;
        self.held_items.fetch_add(items, Ordering::Relaxed);
        permit.send(batch);
        Ok(())
    }

    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            let items = batch.items;
            let permit = self.queue.reserve().await?;
            self.held_items.fetch_add(items, Ordering::Relaxed);
            permit.send(batch);
            Ok(())
        })
    }
}
