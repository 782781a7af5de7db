//! Consistent probability sampling, as the OpenTelemetry specification defines it (trace state `ot=th:…`):
//! one piece of code for the SDK's head sampler and the collector's `probabilistic_sampler` and
//! `tail_sampling` processors, so every component makes the same decision for the same trace.
//!
//! Each trace carries 56 bits of randomness `R`: the `rv` value of its `ot` trace-state entry when present,
//! else the low 56 bits of its trace id (random in W3C trace ids). A sampler keeping a fraction `p` uses the
//! rejection threshold `T = (1 − p) · 2⁵⁶` and keeps the trace when `R ≥ T`. Lower probabilities mean higher
//! thresholds, so a trace kept at 10 % is also kept at 50 %, and a span records the threshold it was sampled at
//! (`ot=th:…`) so backends can re-weight counts by `1 / p`.
//!
//! ```
//! use vigil::sampling::Threshold;
//!
//! let ten_percent = Threshold::from_probability(0.1, 4).unwrap();
//! assert_eq!(ten_percent.to_hex(), "e666");
//! let randomness = vigil::sampling::randomness(&[0xff; 16], "");
//! assert!(ten_percent.keeps(randomness));
//! assert_eq!(vigil::sampling::with_threshold("ot=rv:0123456789abcd;xx:1,vendor=a", ten_percent),
//!            "ot=rv:0123456789abcd;xx:1;th:e666,vendor=a");
//! ```

/// Randomness and thresholds have 56 bits.
pub const MAX_THRESHOLD: u64 = 1 << 56;

/// A rejection threshold: traces whose randomness is at least this value are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Threshold(u64);

impl Threshold {
    /// Keeps everything (`th:0`).
    pub const ALWAYS: Threshold = Threshold(0);
    /// Keeps nothing (not encodable in trace state: such spans are never exported).
    pub const NEVER: Threshold = Threshold(MAX_THRESHOLD);

    /// The threshold keeping a fraction `probability` (0–1), rounded to `precision` hexadecimal digits (1–14;
    /// the collector's default is 4). `None` for a probability outside 0–1.
    pub fn from_probability(probability: f64, precision: u8) -> Option<Threshold> {
        if !(0.0..=1.0).contains(&probability) || probability.is_nan() {
            return None;
        }
        if probability == 0.0 {
            return Some(Threshold::NEVER);
        }
        let exact = (1.0 - probability) * MAX_THRESHOLD as f64;
        let digits = u32::from(precision.clamp(1, 14));
        let unit = 1u64 << (56 - 4 * digits);
        let rounded = ((exact / unit as f64).round() as u64).saturating_mul(unit);
        // Rounding must not turn a small probability into "keep nothing".
        Some(Threshold(rounded.min(MAX_THRESHOLD - unit)))
    }

    /// The raw 56-bit value.
    pub fn value(self) -> u64 {
        self.0
    }

    /// The fraction of traces this threshold keeps.
    pub fn probability(self) -> f64 {
        1.0 - self.0 as f64 / MAX_THRESHOLD as f64
    }

    /// Whether a trace with `randomness` is kept.
    pub fn keeps(self, randomness: u64) -> bool {
        randomness >= self.0
    }

    /// The trace-state form: up to 14 hexadecimal digits, trailing zeros removed (`0` keeps everything).
    pub fn to_hex(self) -> String {
        if self.0 == 0 {
            return "0".into();
        }
        let full = format!("{:014x}", self.0.min(MAX_THRESHOLD - 1));
        full.trim_end_matches('0').to_string()
    }

    /// Parses the trace-state form (1–14 hexadecimal digits, padded with zeros on the right).
    pub fn parse(text: &str) -> Option<Threshold> {
        if text.is_empty() || text.len() > 14 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let value = u64::from_str_radix(text, 16).ok()? << (4 * (14 - text.len()));
        Some(Threshold(value))
    }

    /// The threshold of applying `self` to traces already sampled at `other`: the probabilities multiply.
    pub fn combined(self, other: Threshold) -> Threshold {
        let kept = self.probability() * other.probability();
        let exact = ((1.0 - kept) * MAX_THRESHOLD as f64).round() as u64;
        Threshold(exact.clamp(self.0.max(other.0), MAX_THRESHOLD))
    }
}

/// The value of sub-key `name` (`th`, `rv`) of the `ot` entry of a W3C `tracestate` header.
pub fn ot_value<'a>(tracestate: &'a str, name: &str) -> Option<&'a str> {
    let ot = tracestate
        .split(',')
        .map(str::trim)
        .find_map(|entry| entry.strip_prefix("ot="))?;
    ot.split(';').find_map(|pair| {
        pair.split_once(':')
            .filter(|(key, _)| *key == name)
            .map(|(_, value)| value)
    })
}

/// A trace's 56 bits of randomness: `ot=rv:` when the trace state has a valid one, else the low 56 bits of the
/// trace id.
pub fn randomness(trace_id: &[u8; 16], tracestate: &str) -> u64 {
    if let Some(rv) = ot_value(tracestate, "rv")
        && rv.len() == 14
        && let Ok(value) = u64::from_str_radix(rv, 16)
    {
        return value;
    }
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id[9..16]);
    u64::from_be_bytes(low)
}

/// The threshold a span was already sampled at (`ot=th:`), if any.
pub fn threshold_of(tracestate: &str) -> Option<Threshold> {
    ot_value(tracestate, "th").and_then(Threshold::parse)
}

/// `tracestate` with `ot=th:` set to `threshold` (other `ot` sub-keys and other vendors' entries kept; the `ot`
/// entry stays where it was, or goes first when new).
pub fn with_threshold(tracestate: &str, threshold: Threshold) -> String {
    let th = format!("th:{}", threshold.to_hex());
    let mut entries: Vec<String> = Vec::new();
    let mut found = false;
    for entry in tracestate
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        match entry.strip_prefix("ot=") {
            Some(ot) => {
                found = true;
                let mut parts: Vec<&str> = ot
                    .split(';')
                    .filter(|p| !p.is_empty() && !p.starts_with("th:"))
                    .collect();
                parts.push(&th);
                entries.push(format!("ot={}", parts.join(";")));
            }
            None => entries.push(entry.to_string()),
        }
    }
    if !found {
        entries.insert(0, format!("ot={th}"));
    }
    entries.join(",")
}

/// The SDK's head sampler: keeps a fraction of root traces by their randomness and records the threshold in
/// the trace state (`ot=th:`), so the collector's samplers and backends agree with it. Wrap it in
/// `ParentBasedSampler` so child spans follow their parent.
#[derive(Clone, Debug)]
pub struct ConsistentSampler {
    threshold: Threshold,
}

impl ConsistentSampler {
    /// Keeps `probability` (0–1, clamped) of traces.
    pub fn new(probability: f64) -> Self {
        ConsistentSampler {
            threshold: Threshold::from_probability(probability.clamp(0.0, 1.0), 14)
                .unwrap_or(Threshold::ALWAYS),
        }
    }
}

impl opentelemetry_sdk::trace::ShouldSample for ConsistentSampler {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        _name: &str,
        _span_kind: &opentelemetry::trace::SpanKind,
        _attributes: &[opentelemetry::KeyValue],
        _links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        use opentelemetry::trace::{TraceContextExt as _, TraceState};
        let parent_state = parent_context
            .filter(|cx| cx.has_active_span())
            .map(|cx| cx.span().span_context().trace_state().clone())
            .unwrap_or_default();
        let header = parent_state.header();
        let keep = self.threshold != Threshold::NEVER
            && self
                .threshold
                .keeps(randomness(&trace_id.to_bytes(), &header));
        let (decision, trace_state) = if keep {
            let state = TraceState::from_key_value(
                with_threshold(&header, self.threshold)
                    .split(',')
                    .filter_map(|entry| entry.split_once('=')),
            )
            .unwrap_or(parent_state);
            (
                opentelemetry_sdk::trace::SamplingDecision::RecordAndSample,
                state,
            )
        } else {
            (
                opentelemetry_sdk::trace::SamplingDecision::Drop,
                parent_state,
            )
        };
        opentelemetry_sdk::trace::SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state,
        }
    }
}

/// The head sampler named by `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (the standard values;
/// the ratio samplers are [`ConsistentSampler`]). `None` when the variable is unset; an error names the
/// variable and what it accepts.
pub fn sampler_from_env(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<Box<dyn opentelemetry_sdk::trace::ShouldSample>>, String> {
    use opentelemetry_sdk::trace::{ParentBasedSampler, Sampler};
    let Some(name) = get("OTEL_TRACES_SAMPLER").filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let ratio = || -> Result<f64, String> {
        match get("OTEL_TRACES_SAMPLER_ARG").filter(|v| !v.trim().is_empty()) {
            None => Ok(1.0),
            Some(arg) => arg
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    format!("OTEL_TRACES_SAMPLER_ARG=`{arg}` is not a probability between 0 and 1")
                }),
        }
    };
    let sampler: Box<dyn opentelemetry_sdk::trace::ShouldSample> = match name.trim() {
        "always_on" => Box::new(Sampler::AlwaysOn),
        "always_off" => Box::new(Sampler::AlwaysOff),
        "traceidratio" => Box::new(ConsistentSampler::new(ratio()?)),
        "parentbased_always_on" => Box::new(ParentBasedSampler::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Box::new(ParentBasedSampler::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => {
            Box::new(ParentBasedSampler::new(ConsistentSampler::new(ratio()?)))
        }
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER=`{other}` is not supported; use always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
            ));
        }
    };
    Ok(Some(sampler))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_specification_examples() {
        // From the OpenTelemetry "TraceState: Probability Sampling" examples.
        let cases = [
            (1.0, "0"),
            (0.5, "8"),
            (0.25, "c"),
            (0.1, "e666"),
            (0.01, "fd70a"),
        ];
        for (probability, hex) in cases {
            let precision = if probability == 0.01 { 5 } else { 4 };
            let threshold = Threshold::from_probability(probability, precision).unwrap();
            assert_eq!(threshold.to_hex(), hex, "p = {probability}");
            assert_eq!(Threshold::parse(hex), Some(threshold));
        }
        assert!(Threshold::from_probability(1.5, 4).is_none());
        assert!(Threshold::from_probability(-0.1, 4).is_none());
        assert!(Threshold::parse("g").is_none());
        assert!(Threshold::parse("123456789abcdef").is_none());
    }

    #[test]
    fn decisions_are_consistent_across_probabilities() {
        let low = Threshold::from_probability(0.1, 4).unwrap();
        let high = Threshold::from_probability(0.5, 4).unwrap();
        let mut kept_low = 0;
        for i in 0u64..10_000 {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            let r = randomness(&id, "");
            if low.keeps(r) {
                kept_low += 1;
                assert!(high.keeps(r), "kept at 10 % but not at 50 %");
            }
        }
        assert!(
            (800..1200).contains(&kept_low),
            "{kept_low} of 10000 at 10 %"
        );
    }

    #[test]
    fn randomness_prefers_rv_and_thresholds_combine() {
        assert_eq!(
            randomness(&[0; 16], "ot=rv:00000000000fff"),
            0xfff,
            "an explicit rv wins"
        );
        assert_eq!(randomness(&[0xab; 16], "ot=rv:bad"), 0x00ab_abab_abab_abab);
        let half = Threshold::from_probability(0.5, 4).unwrap();
        assert_eq!(half.combined(half).to_hex(), "c", "50 % of 50 % is 25 %");
        assert_eq!(
            threshold_of("x=1,ot=th:c;rv:1"),
            Some(Threshold::parse("c").unwrap())
        );
        assert_eq!(with_threshold("", half), "ot=th:8");
        assert_eq!(with_threshold("ot=th:c", half), "ot=th:8");
    }

    #[test]
    fn the_sampler_env_variables_are_checked() {
        let env = |sampler: &'static str, arg: &'static str| {
            move |name: &str| match name {
                "OTEL_TRACES_SAMPLER" => Some(sampler.to_string()),
                "OTEL_TRACES_SAMPLER_ARG" => Some(arg.to_string()),
                _ => None,
            }
        };
        assert!(
            sampler_from_env(env("parentbased_traceidratio", "0.25"))
                .unwrap()
                .is_some()
        );
        assert!(sampler_from_env(|_| None).unwrap().is_none());
        let error = sampler_from_env(env("traceidratio", "2")).err().unwrap();
        assert!(error.contains("OTEL_TRACES_SAMPLER_ARG"), "{error}");
        let error = sampler_from_env(env("jaeger_remote", "")).err().unwrap();
        assert!(error.contains("parentbased_traceidratio"), "{error}");
    }
}
