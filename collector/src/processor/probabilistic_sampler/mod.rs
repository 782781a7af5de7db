//! Processor `probabilistic_sampler`: keeps a percentage of traces (and of logs), consistently.
//!
//! The decision comes from each trace's randomness and a threshold ([`vigil::sampling`]): the same trace id
//! gets the same decision on every collector and in the `vigil` SDK's head sampler, and a trace kept at 10 % is
//! also kept at 50 %. Kept spans carry the threshold they were sampled at in their trace state (`ot=th:…`), so
//! backends can re-weight counts. Modes follow the OpenTelemetry Collector's: `proportional` (default) samples
//! what arrives by the configured fraction again, so probabilities multiply; `equalizing` brings everything
//! down to the configured probability and leaves already less-probable spans alone.
//!
//! Logs are sampled by their trace id (`attribute_source: traceID`, so a kept trace keeps its logs) or by the
//! hash of an attribute (`attribute_source: record`, `from_attribute`); `sampling_priority` names an attribute
//! whose numeric value overrides the percentage for that record (0 drops it). Metrics pass unchanged.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use vigil::sampling::{Threshold, randomness, with_threshold};
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};

use super::{Built, ProcessorContext};
use crate::component::Checker;
use crate::pipeline::{Batch, BoxFuture, Consumer, Refusal, SharedConsumer};
use crate::telemetry::Counter;

/// How an incoming threshold combines with the configured one.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Probabilities multiply: 50 % of spans already sampled at 50 % keeps 25 % of the original.
    #[default]
    Proportional,
    /// Everything ends at the configured probability at most.
    Equalizing,
}

/// Where a log record's randomness comes from.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum AttributeSource {
    /// The record's trace id (records of one trace share the decision).
    #[default]
    #[serde(rename = "traceID")]
    TraceId,
    /// The hash of the attribute named by `from_attribute`.
    #[serde(rename = "record")]
    Record,
}

/// `processors.probabilistic_sampler`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProbabilisticSamplerConfig {
    /// Percentage kept, 0–100 (required).
    pub sampling_percentage: Option<f64>,
    /// Mixed into the hash of `from_attribute` (logs with `attribute_source: record`).
    pub hash_seed: u32,
    /// `proportional` or `equalizing`.
    pub mode: Mode,
    /// Hexadecimal digits of the threshold written to trace state (1–14).
    pub sampling_precision: u8,
    /// Drop items whose randomness cannot be determined (no trace id, bad `ot=th`) instead of keeping them.
    pub fail_closed: bool,
    /// Logs: `traceID` or `record`.
    pub attribute_source: AttributeSource,
    /// Logs with `attribute_source: record`: the attribute whose value is hashed.
    pub from_attribute: String,
    /// Logs: an attribute whose numeric value is the percentage for that record (0 drops it).
    pub sampling_priority: String,
}

impl Default for ProbabilisticSamplerConfig {
    fn default() -> Self {
        ProbabilisticSamplerConfig {
            sampling_percentage: None,
            hash_seed: 0,
            mode: Mode::Proportional,
            sampling_precision: 4,
            fail_closed: true,
            attribute_source: AttributeSource::TraceId,
            from_attribute: String::new(),
            sampling_priority: String::new(),
        }
    }
}

impl ProbabilisticSamplerConfig {
    /// Checks the fields and their relations.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        match self.sampling_percentage {
            None => check.error(
                &format!("{path}.sampling_percentage"),
                "is required: the percentage of traces and logs to keep, 0–100",
            ),
            Some(p) if !(0.0..=100.0).contains(&p) || p.is_nan() => check.error(
                &format!("{path}.sampling_percentage"),
                format!("must be between 0 and 100, not {p}"),
            ),
            _ => {}
        }
        if !(1..=14).contains(&self.sampling_precision) {
            check.error(
                &format!("{path}.sampling_precision"),
                format!(
                    "must be 1–14 hexadecimal digits, not {}",
                    self.sampling_precision
                ),
            );
        }
        if self.attribute_source == AttributeSource::Record && self.from_attribute.is_empty() {
            check.error(
                &format!("{path}.from_attribute"),
                "is required with `attribute_source: record`: the attribute whose value decides",
            );
        }
    }

    fn threshold(&self) -> Threshold {
        let percentage = self.sampling_percentage.unwrap_or(100.0);
        Threshold::from_probability(percentage / 100.0, self.sampling_precision)
            .unwrap_or(Threshold::ALWAYS)
    }
}

/// Builds the sampler in front of `next`.
pub fn build(
    config: &ProbabilisticSamplerConfig,
    context: ProcessorContext<'_>,
    next: SharedConsumer,
) -> Built {
    let id = context.id.to_string();
    if context.signal == Signal::Metrics {
        tracing::warn!(
            processor = %id,
            pipeline = context.pipeline,
            "probabilistic_sampler samples traces and logs; metrics pass unchanged"
        );
        return Built {
            entry: next,
            stage: None,
        };
    }
    let counter = |name: &'static str, help: &'static str, sampled: &str| {
        context.registry.counter(
            name,
            help,
            &[
                ("processor", id.as_str()),
                ("pipeline", context.pipeline),
                ("sampled", sampled),
            ],
        )
    };
    let (name, help) = match context.signal {
        Signal::Logs => (
            "vigil_processor_probabilistic_sampler_log_records_total",
            "Log records seen by the probabilistic sampler, by decision.",
        ),
        _ => (
            "vigil_processor_probabilistic_sampler_spans_total",
            "Spans seen by the probabilistic sampler, by decision.",
        ),
    };
    Built {
        entry: Arc::new(Sampler {
            config: config.clone(),
            threshold: config.threshold(),
            next,
            kept: counter(name, help, "true"),
            dropped: counter(name, help, "false"),
        }),
        stage: None,
    }
}

struct Sampler {
    config: ProbabilisticSamplerConfig,
    threshold: Threshold,
    next: SharedConsumer,
    kept: Counter,
    dropped: Counter,
}

/// The decision for one item: kept with the threshold to record, or dropped.
fn decide(
    mode: Mode,
    configured: Threshold,
    incoming: Option<Threshold>,
    randomness: u64,
) -> Option<Threshold> {
    let threshold = match (mode, incoming) {
        (_, None) => configured,
        (Mode::Proportional, Some(incoming)) => configured.combined(incoming),
        (Mode::Equalizing, Some(incoming)) => configured.max(incoming),
    };
    (threshold != Threshold::NEVER && threshold.keeps(randomness)).then_some(threshold)
}

impl Sampler {
    fn sample(&self, batch: Batch) -> Batch {
        let mut out = Batch::empty(batch.signal);
        for chunk in &batch.chunks {
            let sampled = match batch.signal {
                Signal::Traces => self.traces(&chunk.bytes),
                Signal::Logs => self.logs(&chunk.bytes),
                Signal::Metrics => Some((chunk.bytes.to_vec(), chunk.items)),
            };
            match sampled {
                Some((bytes, items)) if items > 0 => {
                    out.push(chunk.derived(Bytes::from(bytes), items))
                }
                Some(_) => {}
                // Validated on receipt, so this is a bug: say so, count the loss.
                None => {
                    self.dropped.add(chunk.items);
                    tracing::error!(
                        items = chunk.items,
                        "probabilistic_sampler: request does not decode; dropped"
                    );
                }
            }
        }
        out
    }

    fn traces(&self, bytes: &[u8]) -> Option<(Vec<u8>, u64)> {
        let mut request = ExportTraceServiceRequest::decode(bytes).ok()?;
        let (mut kept, mut dropped) = (0u64, 0u64);
        for resource in &mut request.resource_spans {
            for scope in &mut resource.scope_spans {
                scope.spans.retain_mut(|span| {
                    let Ok(trace_id) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
                        dropped += u64::from(self.config.fail_closed);
                        kept += u64::from(!self.config.fail_closed);
                        return !self.config.fail_closed;
                    };
                    let incoming = match vigil::sampling::ot_value(&span.trace_state, "th") {
                        None => None,
                        Some(th) => match Threshold::parse(th) {
                            Some(threshold) => Some(threshold),
                            None if self.config.fail_closed => {
                                dropped += 1;
                                return false;
                            }
                            None => None,
                        },
                    };
                    let r = randomness(&trace_id, &span.trace_state);
                    match decide(self.config.mode, self.threshold, incoming, r) {
                        Some(threshold) => {
                            if threshold != Threshold::ALWAYS || incoming.is_some() {
                                span.trace_state = with_threshold(&span.trace_state, threshold);
                            }
                            kept += 1;
                            true
                        }
                        None => {
                            dropped += 1;
                            false
                        }
                    }
                });
            }
            resource.scope_spans.retain(|s| !s.spans.is_empty());
        }
        request.resource_spans.retain(|r| !r.scope_spans.is_empty());
        self.kept.add(kept);
        self.dropped.add(dropped);
        Some((request.encode_to_vec(), kept))
    }

    fn logs(&self, bytes: &[u8]) -> Option<(Vec<u8>, u64)> {
        let mut request = ExportLogsServiceRequest::decode(bytes).ok()?;
        let (mut kept, mut dropped) = (0u64, 0u64);
        for resource in &mut request.resource_logs {
            for scope in &mut resource.scope_logs {
                scope.log_records.retain_mut(|record| {
                    let configured = match self.priority(&record.attributes) {
                        Some(threshold) => threshold,
                        None => self.threshold,
                    };
                    let r = match self.config.attribute_source {
                        AttributeSource::TraceId => {
                            <[u8; 16]>::try_from(record.trace_id.as_slice())
                                .ok()
                                .filter(|id| id.iter().any(|&b| b != 0))
                                .map(|id| randomness(&id, ""))
                        }
                        AttributeSource::Record => {
                            attribute_text(&record.attributes, &self.config.from_attribute)
                                .map(|value| hashed(self.config.hash_seed, &value))
                        }
                    };
                    let keep = match r {
                        Some(r) => match decide(self.config.mode, configured, None, r) {
                            Some(threshold) => {
                                record.attributes.retain(|a| a.key != "sampling.threshold");
                                record.attributes.push(KeyValue {
                                    key: "sampling.threshold".into(),
                                    value: Some(AnyValue {
                                        value: Some(any_value::Value::StringValue(
                                            threshold.to_hex(),
                                        )),
                                    }),
                                    ..Default::default()
                                });
                                true
                            }
                            None => false,
                        },
                        None => !self.config.fail_closed,
                    };
                    if keep {
                        kept += 1;
                    } else {
                        dropped += 1;
                    }
                    keep
                });
            }
            resource.scope_logs.retain(|s| !s.log_records.is_empty());
        }
        request.resource_logs.retain(|r| !r.scope_logs.is_empty());
        self.kept.add(kept);
        self.dropped.add(dropped);
        Some((request.encode_to_vec(), kept))
    }

    /// The threshold from a record's `sampling_priority` attribute (a percentage), when configured and present.
    fn priority(&self, attributes: &[KeyValue]) -> Option<Threshold> {
        if self.config.sampling_priority.is_empty() {
            return None;
        }
        let value = attributes
            .iter()
            .find(|a| a.key == self.config.sampling_priority)?
            .value
            .as_ref()?
            .value
            .as_ref()?;
        let percentage = match value {
            any_value::Value::IntValue(n) => *n as f64,
            any_value::Value::DoubleValue(x) => *x,
            any_value::Value::StringValue(text) => text.trim().parse().ok()?,
            _ => return None,
        };
        Threshold::from_probability(
            (percentage / 100.0).clamp(0.0, 1.0),
            self.config.sampling_precision,
        )
    }
}

fn attribute_text(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|a| a.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(text) => text.clone(),
        any_value::Value::IntValue(n) => n.to_string(),
        any_value::Value::DoubleValue(x) => x.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::BytesValue(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => return None,
    })
}

/// 56 bits of randomness from a seed and an attribute value (FNV-1a 64, mixed, top bits).
fn hashed(seed: u32, value: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.to_be_bytes().iter().chain(value.as_bytes()) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs: finish with a multiply-xorshift, keep the top 56 bits.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash >> 8
}

impl Consumer for Sampler {
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal> {
        let sampled = self.sample(batch);
        if sampled.items == 0 {
            return Ok(());
        }
        self.next.try_consume(sampled)
    }

    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        let sampled = self.sample(batch);
        Box::pin(async move {
            if sampled.items == 0 {
                return Ok(());
            }
            self.next.consume(sampled).await
        })
    }
}

#[cfg(test)]
mod tests;
