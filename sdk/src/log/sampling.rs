//! Log sampling for high-volume call sites: per call site, the first `first` records of each `interval` are
//! kept, then one in `thereafter`. WARNING and above are never sampled unless configured, records inside a
//! sampled trace can be kept whole, and when a call site's interval ends with records suppressed, its next
//! record is preceded by a summary saying how many.
//!
//! Sampling happens before any sink (console, file, OTLP), when the sinks' layer is asked whether an event is
//! enabled (`Layer::event_enabled`), so every sink sees the same records and a suppressed record costs no
//! formatting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use opentelemetry::trace::TraceContextExt as _;
use serde::Deserialize;
use tracing::callsite::Identifier;
use tracing::{Event, Level, Metadata};
use tracing_core::field::FieldSet;

use super::clock::Clock;

/// How records are sampled (`sampling:` in the logging YAML, or [`crate::Builder::log_sampling`]).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSamplingConfig {
    /// Records kept per call site at the start of each interval.
    pub first: u64,
    /// After those, one record in this many is kept (0 keeps none; 1 keeps all).
    pub thereafter: u64,
    /// The length of an interval.
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// Sample WARNING, ERROR and CRITICAL records too (off: they are always kept).
    pub sample_warnings: bool,
    /// Keep every record logged inside a sampled trace.
    pub keep_sampled_traces: bool,
}

impl Default for LogSamplingConfig {
    fn default() -> Self {
        LogSamplingConfig {
            first: 100,
            thereafter: 100,
            interval: Duration::from_secs(1),
            sample_warnings: false,
            keep_sampled_traces: true,
        }
    }
}

/// `interval: 1s` / `500ms` / `2m` in YAML.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub(super) fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 1s, 500ms or 2m"))?;
        let seconds = match unit.trim() {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ms, s, m or h)"
                ));
            }
        };
        if seconds <= 0.0 {
            return Err(format!("`{text}` must be longer than 0s"));
        }
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// One call site's counts in the current interval.
#[derive(Default)]
struct Slot {
    window: AtomicU64,
    seen: AtomicU64,
    suppressed: AtomicU64,
}

/// The layer that decides which records every sink gets; place it first.
pub struct LogSampler {
    config: LogSamplingConfig,
    clock: Arc<dyn Clock>,
    slots: RwLock<HashMap<Identifier, Arc<Slot>>>,
    suppressed_total: Arc<AtomicU64>,
}

impl LogSampler {
    /// A sampler with `config`, timing intervals with `clock`.
    pub fn new(config: LogSamplingConfig, clock: Arc<dyn Clock>) -> Self {
        LogSampler {
            config,
            clock,
            slots: RwLock::new(HashMap::new()),
            suppressed_total: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records suppressed so far, over all call sites (shared, for a metric).
    pub fn suppressed(&self) -> Arc<AtomicU64> {
        self.suppressed_total.clone()
    }

    fn slot(&self, callsite: Identifier) -> Arc<Slot> {
        if let Some(slot) = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&callsite)
        {
            return slot.clone();
        }
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(callsite)
            .or_default()
            .clone()
    }

    /// Whether `event` is kept; `Some(n)` in the second place when a summary of `n` suppressed records of
    /// the previous interval is due.
    fn decide(&self, event: &Event<'_>) -> (bool, Option<u64>) {
        let metadata = event.metadata();
        if metadata.target() == SUMMARY_TARGET
            || (!self.config.sample_warnings && *metadata.level() <= Level::WARN)
        {
            return (true, None);
        }
        let slot = self.slot(metadata.callsite());
        let window = (self.clock.now().as_nanos() / self.config.interval.as_nanos().max(1)) as u64;
        let mut summary = None;
        let previous = slot.window.load(Ordering::Relaxed);
        if previous != window
            && slot
                .window
                .compare_exchange(previous, window, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            slot.seen.store(0, Ordering::Relaxed);
            let suppressed = slot.suppressed.swap(0, Ordering::Relaxed);
            if suppressed > 0 {
                summary = Some(suppressed);
            }
        }
        let seen = slot.seen.fetch_add(1, Ordering::Relaxed);
        let keep = seen < self.config.first
            || (self.config.thereafter > 0
                && (seen - self.config.first).is_multiple_of(self.config.thereafter))
            || (self.config.keep_sampled_traces && in_sampled_trace());
        if !keep {
            slot.suppressed.fetch_add(1, Ordering::Relaxed);
            self.suppressed_total.fetch_add(1, Ordering::Relaxed);
        }
        (keep, summary)
    }
}

/// The target of summary records (never sampled).
pub const SUMMARY_TARGET: &str = "vigil::log::sampling";

fn in_sampled_trace() -> bool {
    let context = opentelemetry::Context::current();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid() && span_context.is_sampled()
}

/// The call site of summary records. A summary cannot be logged with `tracing::info!` from inside the
/// subscriber (a nested dispatch goes nowhere), so the sampler builds the event and hands it to the sinks.
struct SummaryCallsite;

static SUMMARY_CALLSITE: SummaryCallsite = SummaryCallsite;

static SUMMARY_METADATA: Metadata<'static> = Metadata::new(
    "log sampling summary",
    SUMMARY_TARGET,
    Level::INFO,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(
        &[
            "message",
            "suppressed",
            "sampled_target",
            "sampled_location",
        ],
        tracing_core::identify_callsite!(&SUMMARY_CALLSITE),
    ),
    tracing_core::metadata::Kind::EVENT,
);

impl tracing_core::Callsite for SummaryCallsite {
    fn set_interest(&self, _interest: tracing_core::subscriber::Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &SUMMARY_METADATA
    }
}

impl LogSampler {
    /// Whether `event` is kept. When its call site's last interval ended with records suppressed, `emit` is
    /// first handed the summary record to pass to the sinks.
    pub(crate) fn sample(&self, event: &Event<'_>, emit: impl FnOnce(&Event<'_>)) -> bool {
        let (keep, summary) = self.decide(event);
        if let Some(suppressed) = summary {
            let metadata = event.metadata();
            let fields = SUMMARY_METADATA.fields();
            let field = |name| fields.field(name).expect("declared above");
            let (message, count, target, location) = (
                field("message"),
                field("suppressed"),
                field("sampled_target"),
                field("sampled_location"),
            );
            let text = format!(
                "log sampling suppressed {suppressed} records from {} in the last interval",
                metadata.target()
            );
            let place = format!(
                "{}:{}",
                metadata.file().unwrap_or("?"),
                metadata.line().unwrap_or(0)
            );
            let values: [(
                &tracing_core::field::Field,
                Option<&dyn tracing_core::field::Value>,
            ); 4] = [
                (&message, Some(&text.as_str())),
                (&count, Some(&suppressed)),
                (&target, Some(&metadata.target())),
                (&location, Some(&place.as_str())),
            ];
            let value_set = fields.value_set(&values);
            emit(&Event::new(&SUMMARY_METADATA, &value_set));
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::clock::ManualClock;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            humantime_serde_compat::parse("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            humantime_serde_compat::parse("2m"),
            Ok(Duration::from_secs(120))
        );
        assert!(humantime_serde_compat::parse("fast").is_err());
        assert!(humantime_serde_compat::parse("0s").is_err());
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let error = serde_json::from_str::<LogSamplingConfig>(r#"{"frist": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("frist"), "{error}");
        let _ = ManualClock::at(0);
    }
}
