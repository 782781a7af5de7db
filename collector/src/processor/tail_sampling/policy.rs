//! Tail-sampling policies, in the OpenTelemetry Collector's terms: each policy looks at a whole trace and says
//! sample or not; `invert_match` policies can veto.

use std::time::{Duration, Instant};

use serde::Deserialize;
use vigil::sampling::Threshold;
use vigil_proto::otlp::common::v1::{KeyValue, any_value};
use vigil_proto::otlp::trace::v1::{ResourceSpans, Span, status};

use crate::component::Checker;

/// What one policy says about a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the trace.
    Sampled,
    /// This policy does not keep it.
    NotSampled,
    /// An inverted policy matched nothing: keep, like `Sampled`.
    InvertSampled,
    /// An inverted policy matched: drop the trace whatever other policies say.
    InvertNotSampled,
}

impl Verdict {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Sampled => "sampled",
            Verdict::NotSampled => "not_sampled",
            Verdict::InvertSampled => "inverted_sampled",
            Verdict::InvertNotSampled => "inverted_not_sampled",
        }
    }
}

/// A policy as written in the config (`{name, type, <type>: {...}}`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Shown in metrics and errors.
    #[serde(default)]
    pub name: String,
    /// `always_sample`, `latency`, `status_code`, `string_attribute`, `numeric_attribute`,
    /// `boolean_attribute`, `probabilistic`, `rate_limiting`, `span_count`, `and` or `composite`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `latency`.
    pub latency: Option<LatencyConfig>,
    /// For `status_code`.
    pub status_code: Option<StatusCodeConfig>,
    /// For `string_attribute`.
    pub string_attribute: Option<StringAttributeConfig>,
    /// For `numeric_attribute`.
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// For `boolean_attribute`.
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// For `probabilistic`.
    pub probabilistic: Option<ProbabilisticConfig>,
    /// For `rate_limiting`.
    pub rate_limiting: Option<RateLimitingConfig>,
    /// For `span_count`.
    pub span_count: Option<SpanCountConfig>,
    /// For `and`.
    pub and: Option<AndConfig>,
    /// For `composite`.
    pub composite: Option<CompositeConfig>,
}

/// `latency`: traces lasting at least `threshold_ms` (and at most `upper_threshold_ms` when set).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Lower bound, milliseconds.
    pub threshold_ms: u64,
    /// Upper bound, milliseconds (0: none).
    #[serde(default)]
    pub upper_threshold_ms: u64,
}

/// `status_code`: traces with a span whose status is one of these (`OK`, `ERROR`, `UNSET`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// The status codes that keep a trace.
    pub status_codes: Vec<String>,
}

/// `string_attribute`: a span or resource attribute `key` with one of `values` (regexes when enabled).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// The attribute key.
    pub key: String,
    /// The values that match.
    pub values: Vec<String>,
    /// Treat `values` as regular expressions (anchored).
    #[serde(default)]
    pub enabled_regex_matching: bool,
    /// Veto traces that match, keep those that do not.
    #[serde(default)]
    pub invert_match: bool,
}

/// `numeric_attribute`: an integer attribute `key` within `min_value..=max_value`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// The attribute key.
    pub key: String,
    /// Smallest matching value.
    #[serde(default = "i64_min")]
    pub min_value: i64,
    /// Largest matching value.
    #[serde(default = "i64_max")]
    pub max_value: i64,
    /// Veto traces that match.
    #[serde(default)]
    pub invert_match: bool,
}

fn i64_min() -> i64 {
    i64::MIN
}

fn i64_max() -> i64 {
    i64::MAX
}

/// `boolean_attribute`: a boolean attribute `key` equal to `value`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// The attribute key.
    pub key: String,
    /// The matching value.
    pub value: bool,
    /// Veto traces that match.
    #[serde(default)]
    pub invert_match: bool,
}

/// `probabilistic`: a consistent percentage of traces (the same decision as `probabilistic_sampler` and the
/// SDK for the same trace id).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Percentage kept, 0–100.
    pub sampling_percentage: f64,
}

/// `rate_limiting`: at most this many spans per second are kept by this policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// The budget of spans per second.
    pub spans_per_second: u64,
}

/// `span_count`: traces with `min_spans..=max_spans` spans (`max_spans` 0: no upper bound).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// Fewest spans.
    pub min_spans: u64,
    /// Most spans (0: none).
    #[serde(default)]
    pub max_spans: u64,
}

/// `and`: every sub-policy must sample.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// The sub-policies.
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `composite`: sub-policies in order, each with a share of a total spans-per-second budget.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// The total budget.
    pub max_total_spans_per_second: u64,
    /// Sub-policy names, in the order they are tried.
    pub policy_order: Vec<String>,
    /// The sub-policies.
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Percent of the budget per sub-policy; sub-policies not listed share what is left equally.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

/// One sub-policy's share of a composite budget.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    /// The sub-policy's name.
    pub policy: String,
    /// Its percent of `max_total_spans_per_second`.
    pub percent: f64,
}

/// A spans-per-second budget that refills each second.
#[derive(Debug)]
struct Budget {
    per_second: u64,
    second: Option<Instant>,
    used: u64,
}

impl Budget {
    fn new(per_second: u64) -> Self {
        Budget {
            per_second,
            second: None,
            used: 0,
        }
    }

    /// Takes `spans` from this second's budget if they fit.
    fn take(&mut self, now: Instant, spans: u64) -> bool {
        if self
            .second
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            self.second = Some(now);
            self.used = 0;
        }
        if self.used + spans <= self.per_second {
            self.used += spans;
            true
        } else {
            false
        }
    }
}

enum Rule {
    Always,
    Latency {
        min: u64,
        max: u64,
    },
    Status(Vec<i32>),
    Strings {
        key: String,
        values: Vec<String>,
        regexes: Vec<regex::Regex>,
        invert: bool,
    },
    Numbers {
        key: String,
        min: i64,
        max: i64,
        invert: bool,
    },
    Boolean {
        key: String,
        value: bool,
        invert: bool,
    },
    Probabilistic(Threshold),
    RateLimit(Budget),
    SpanCount {
        min: u64,
        max: u64,
    },
    And(Vec<Policy>),
    Composite(Vec<(Policy, Budget)>),
}

/// A compiled policy.
pub struct Policy {
    /// The configured name (or `type#index`).
    pub name: String,
    rule: Rule,
}

/// What a policy looks at: the trace's spans with their resources.
pub struct TraceView<'a> {
    /// The trace's buffered fragments.
    pub fragments: &'a [ResourceSpans],
    /// Its span count.
    pub spans: u64,
}

impl TraceView<'_> {
    fn spans(&self) -> impl Iterator<Item = &Span> {
        self.fragments
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
    }

    fn attributes(&self) -> impl Iterator<Item = &KeyValue> {
        let resource = self
            .fragments
            .iter()
            .flat_map(|r| r.resource.iter().flat_map(|r| &r.attributes));
        resource.chain(self.spans().flat_map(|s| &s.attributes))
    }

    fn trace_id(&self) -> Option<[u8; 16]> {
        self.spans()
            .next()
            .and_then(|s| <[u8; 16]>::try_from(s.trace_id.as_slice()).ok())
    }
}

fn inverted(matched: bool, invert: bool) -> Verdict {
    match (matched, invert) {
        (true, false) => Verdict::Sampled,
        (false, false) => Verdict::NotSampled,
        (true, true) => Verdict::InvertNotSampled,
        (false, true) => Verdict::InvertSampled,
    }
}

impl Policy {
    /// Compiles `config` (already validated by [`validate`]).
    pub fn new(config: &PolicyConfig, index: usize) -> Result<Policy, String> {
        let name = if config.name.is_empty() {
            format!("{}#{index}", config.kind)
        } else {
            config.name.clone()
        };
        let missing = || {
            format!(
                "policy `{name}` of type `{}` needs its `{}` section",
                config.kind, config.kind
            )
        };
        let rule = match config.kind.as_str() {
            "always_sample" => Rule::Always,
            "latency" => {
                let c = config.latency.as_ref().ok_or_else(missing)?;
                Rule::Latency {
                    min: c.threshold_ms,
                    max: c.upper_threshold_ms,
                }
            }
            "status_code" => {
                let c = config.status_code.as_ref().ok_or_else(missing)?;
                let codes = c
                    .status_codes
                    .iter()
                    .map(|code| match code.to_ascii_uppercase().as_str() {
                        "OK" => Ok(status::StatusCode::Ok as i32),
                        "ERROR" => Ok(status::StatusCode::Error as i32),
                        "UNSET" => Ok(status::StatusCode::Unset as i32),
                        other => Err(format!(
                            "unknown status code `{other}`; use OK, ERROR or UNSET"
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Rule::Status(codes)
            }
            "string_attribute" => {
                let c = config.string_attribute.as_ref().ok_or_else(missing)?;
                let regexes = if c.enabled_regex_matching {
                    c.values
                        .iter()
                        .map(|v| {
                            regex::Regex::new(&format!("^(?:{v})$"))
                                .map_err(|e| format!("value `{v}` is not a valid regex: {e}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?
                } else {
                    Vec::new()
                };
                Rule::Strings {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    regexes,
                    invert: c.invert_match,
                }
            }
            "numeric_attribute" => {
                let c = config.numeric_attribute.as_ref().ok_or_else(missing)?;
                Rule::Numbers {
                    key: c.key.clone(),
                    min: c.min_value,
                    max: c.max_value,
                    invert: c.invert_match,
                }
            }
            "boolean_attribute" => {
                let c = config.boolean_attribute.as_ref().ok_or_else(missing)?;
                Rule::Boolean {
                    key: c.key.clone(),
                    value: c.value,
                    invert: c.invert_match,
                }
            }
            "probabilistic" => {
                let c = config.probabilistic.as_ref().ok_or_else(missing)?;
                let threshold = Threshold::from_probability(c.sampling_percentage / 100.0, 14)
                    .ok_or_else(|| {
                        format!(
                            "sampling_percentage must be between 0 and 100, not {}",
                            c.sampling_percentage
                        )
                    })?;
                Rule::Probabilistic(threshold)
            }
            "rate_limiting" => {
                let c = config.rate_limiting.as_ref().ok_or_else(missing)?;
                Rule::RateLimit(Budget::new(c.spans_per_second))
            }
            "span_count" => {
                let c = config.span_count.as_ref().ok_or_else(missing)?;
                Rule::SpanCount {
                    min: c.min_spans,
                    max: c.max_spans,
                }
            }
            "and" => {
                let c = config.and.as_ref().ok_or_else(missing)?;
                Rule::And(
                    c.and_sub_policy
                        .iter()
                        .enumerate()
                        .map(|(i, p)| Policy::new(p, i))
                        .collect::<Result<_, _>>()?,
                )
            }
            "composite" => {
                let c = config.composite.as_ref().ok_or_else(missing)?;
                let mut subs = Vec::new();
                let allocated: f64 = c.rate_allocation.iter().map(|a| a.percent).sum();
                let unallocated = c
                    .composite_sub_policy
                    .iter()
                    .filter(|p| !c.rate_allocation.iter().any(|a| a.policy == p.name))
                    .count();
                for name in &c.policy_order {
                    let (index, sub) = c
                        .composite_sub_policy
                        .iter()
                        .enumerate()
                        .find(|(_, p)| &p.name == name)
                        .ok_or_else(|| {
                            format!(
                                "policy_order names `{name}`, which is not a composite_sub_policy"
                            )
                        })?;
                    let percent = c
                        .rate_allocation
                        .iter()
                        .find(|a| &a.policy == name)
                        .map(|a| a.percent)
                        .unwrap_or_else(|| {
                            (100.0 - allocated).max(0.0) / unallocated.max(1) as f64
                        });
                    let budget = (c.max_total_spans_per_second as f64 * percent / 100.0) as u64;
                    subs.push((Policy::new(sub, index)?, Budget::new(budget)));
                }
                Rule::Composite(subs)
            }
            other => {
                return Err(format!(
                    "unknown policy type `{other}`; use always_sample, latency, status_code, string_attribute, \
                     numeric_attribute, boolean_attribute, probabilistic, rate_limiting, span_count, and or composite"
                ));
            }
        };
        Ok(Policy { name, rule })
    }

    /// This policy's verdict on `trace` at `now` (rate limits count against the current second).
    pub fn evaluate(&mut self, trace: &TraceView<'_>, now: Instant) -> Verdict {
        match &mut self.rule {
            Rule::Always => Verdict::Sampled,
            Rule::Latency { min, max } => {
                let start = trace
                    .spans()
                    .map(|s| s.start_time_unix_nano)
                    .min()
                    .unwrap_or(0);
                let end = trace
                    .spans()
                    .map(|s| s.end_time_unix_nano)
                    .max()
                    .unwrap_or(0);
                let millis = end.saturating_sub(start) / 1_000_000;
                inverted(millis >= *min && (*max == 0 || millis <= *max), false)
            }
            Rule::Status(codes) => inverted(
                trace
                    .spans()
                    .any(|s| codes.contains(&s.status.as_ref().map_or(0, |st| st.code))),
                false,
            ),
            Rule::Strings {
                key,
                values,
                regexes,
                invert,
            } => {
                let matched = trace.attributes().filter(|a| &a.key == key).any(|a| {
                    match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(text)) => {
                            if regexes.is_empty() {
                                values.iter().any(|v| v == text)
                            } else {
                                regexes.iter().any(|r| r.is_match(text))
                            }
                        }
                        _ => false,
                    }
                });
                inverted(matched, *invert)
            }
            Rule::Numbers {
                key,
                min,
                max,
                invert,
            } => {
                let matched = trace.attributes().filter(|a| &a.key == key).any(|a| {
                    match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::IntValue(n)) => (*min..=*max).contains(n),
                        Some(any_value::Value::DoubleValue(x)) => {
                            (*min as f64..=*max as f64).contains(x)
                        }
                        _ => false,
                    }
                });
                inverted(matched, *invert)
            }
            Rule::Boolean { key, value, invert } => {
                let matched = trace.attributes().filter(|a| &a.key == key).any(|a| {
                    matches!(
                        a.value.as_ref().and_then(|v| v.value.as_ref()),
                        Some(any_value::Value::BoolValue(b)) if b == value
                    )
                });
                inverted(matched, *invert)
            }
            Rule::Probabilistic(threshold) => {
                let keep = *threshold != Threshold::NEVER
                    && trace
                        .trace_id()
                        .is_some_and(|id| threshold.keeps(vigil::sampling::randomness(&id, "")));
                inverted(keep, false)
            }
            Rule::RateLimit(budget) => inverted(budget.take(now, trace.spans), false),
            Rule::SpanCount { min, max } => inverted(
                trace.spans >= *min && (*max == 0 || trace.spans <= *max),
                false,
            ),
            Rule::And(policies) => {
                let all = policies.iter_mut().all(|p| {
                    matches!(
                        p.evaluate(trace, now),
                        Verdict::Sampled | Verdict::InvertSampled
                    )
                });
                inverted(all, false)
            }
            Rule::Composite(policies) => {
                for (policy, budget) in policies.iter_mut() {
                    if matches!(
                        policy.evaluate(trace, now),
                        Verdict::Sampled | Verdict::InvertSampled
                    ) && budget.take(now, trace.spans)
                    {
                        return Verdict::Sampled;
                    }
                }
                Verdict::NotSampled
            }
        }
    }
}

/// Checks every policy (recursively) and reports problems at `path.policies[i]`.
pub fn validate(check: &mut Checker<'_>, path: &str, policies: &[PolicyConfig]) {
    if policies.is_empty() {
        check.error(
            &format!("{path}.policies"),
            "at least one policy is needed (e.g. `{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}`)",
        );
    }
    for (index, config) in policies.iter().enumerate() {
        if let Err(problem) = Policy::new(config, index) {
            check.error(&format!("{path}.policies[{index}]"), problem);
        }
    }
}
