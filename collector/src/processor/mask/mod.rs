//! Processor `mask`: removes secrets and personal data from every request before it reaches an exporter,
//! with the SDK's masking engine ([`vigil::mask`]) and the same configuration terms (detectors, sensitive
//! keys, allow-list, rules, actions).
//!
//! Requests are masked on their encoded bytes ([`wire`]): a clean request passes without being decoded or
//! copied. The processor declares a check that the receivers in front of it run inside their validation walk
//! ([`precheck`], through [`crate::pipeline::precheck`]), so a request found clean there is not walked again
//! here. Replacements are counted per detector or rule in `vigil_mask_replacements_total`.

pub mod precheck;
pub mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use vigil::mask::{MaskConfig, Masker};
use vigil_proto::otlp::Signal;

use super::{Built, ProcessorContext};
use crate::component::Checker;
use crate::pipeline::precheck::SharedPrecheck;
use crate::pipeline::{Batch, BoxFuture, Chunk, Consumer, Refusal, SharedConsumer};
use crate::telemetry::Counter;

/// `processors.mask`: the SDK's [`MaskConfig`], compiled once when the config is read.
#[derive(Clone, Debug)]
pub struct MaskProcessorConfig {
    /// The configuration as written.
    pub config: MaskConfig,
    /// The compiled engine (`None` when `enabled: false`).
    pub masker: Option<Masker>,
    /// The engine's check, run by the receivers in front of the processor (`None` when `enabled: false`).
    pub precheck: Option<SharedPrecheck>,
}

impl MaskProcessorConfig {
    /// Compiles `config`, reporting a bad rule or a `hash` action without a key at `path`.
    pub fn new(check: &mut Checker<'_>, path: &str, config: MaskConfig) -> Option<Self> {
        let masker = if config.enabled {
            match Masker::new(&config) {
                Ok(masker) => Some(masker),
                Err(e) => {
                    check.error(path, e.to_string());
                    return None;
                }
            }
        } else {
            None
        };
        let precheck = masker
            .clone()
            .map(|masker| SharedPrecheck::new(precheck::MaskCheck(masker)));
        Some(MaskProcessorConfig {
            config,
            masker,
            precheck,
        })
    }
}

/// Builds a mask processor in front of `next`.
pub fn build(
    config: &MaskProcessorConfig,
    context: ProcessorContext<'_>,
    next: SharedConsumer,
) -> Built {
    let (Some(masker), Some(precheck)) = (config.masker.clone(), config.precheck.clone()) else {
        return Built {
            entry: next,
            stage: None,
        };
    };
    let id = context.id.to_string();
    for (detector, _) in masker.replacements() {
        let counted = masker.clone();
        let name = detector.to_string();
        context.registry.counter_fn(
            "vigil_mask_replacements_total",
            "Values masked by a mask processor, by detector or rule.",
            &[("processor", id.as_str()), ("detector", detector)],
            move || {
                counted
                    .replacements()
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |(_, count)| count)
            },
        );
    }
    let labels = [("processor", id.as_str()), ("pipeline", context.pipeline)];
    Built {
        entry: Arc::new(MaskStage {
            masker,
            precheck,
            next,
            failed_items: context.registry.counter(
                "vigil_mask_failed_items_total",
                "Items dropped because a mask processor could not walk their request (never sent unmasked).",
                &labels,
            ),
        }),
        stage: None,
    }
}

/// The stateless masking stage.
struct MaskStage {
    masker: Masker,
    /// The check of this engine the receivers run: a chunk carrying it was found clean there.
    precheck: SharedPrecheck,
    next: SharedConsumer,
    failed_items: Counter,
}

impl MaskStage {
    /// Masks every chunk of `batch`; a chunk that cannot be walked is dropped and counted rather than sent on
    /// unmasked.
    fn mask(&self, batch: Batch) -> Batch {
        let checked = |chunk: &Chunk| {
            chunk
                .prechecked
                .as_ref()
                .is_some_and(|checked| checked.is(&self.precheck))
        };
        // Nearly every batch was found clean by its receiver: pass it on as it is.
        if batch.chunks.iter().all(checked) {
            return batch;
        }
        let mut masked = Batch::empty(batch.signal);
        for chunk in batch.chunks {
            if checked(&chunk) {
                masked.push(chunk);
                continue;
            }
            match wire::mask_request(batch.signal, &chunk.bytes, &self.masker) {
                Ok(wire::Outcome::Keep) => masked.push(chunk),
                Ok(wire::Outcome::Replace(bytes)) => {
                    masked.push(chunk.derived(Bytes::from(bytes), chunk.items))
                }
                Ok(wire::Outcome::Drop) => {}
                Err(e) => {
                    self.failed_items.add(chunk.items);
                    tracing::error!(
                        signal = signal_name(batch.signal),
                        items = chunk.items,
                        problem = e.0,
                        "mask: request could not be walked; dropped instead of exported unmasked"
                    );
                }
            }
        }
        masked
    }
}

fn signal_name(signal: Signal) -> &'static str {
    signal.as_str()
}

impl Consumer for MaskStage {
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal> {
        self.next.try_consume(self.mask(batch))
    }

    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        let masked = self.mask(batch);
        self.next.consume(masked)
    }
}
