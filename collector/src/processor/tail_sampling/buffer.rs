//! The tail sampler's state: spans held per trace until the trace is decided, within bounds.
//!
//! Every method takes the current time, so tests drive it with any clock. Bounds: at most `num_traces` traces
//! and `max_bytes` of buffered spans (the oldest traces are decided early to make room), and at most
//! `max_spans_per_trace` spans in one trace (a trace reaching it is decided at once), so one huge trace cannot
//! starve the others. Decisions are remembered (two bounded caches), so spans arriving after their trace was
//! decided follow the decision.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use prost::Message as _;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::policy::{Policy, TraceView, Verdict};
use crate::telemetry::{Counter, Registry};

/// The buffer's bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// How long a trace is buffered after its first span before it is decided.
    pub decision_wait: Duration,
    /// Most traces buffered at once.
    pub num_traces: usize,
    /// Most bytes of encoded spans buffered at once.
    pub max_bytes: usize,
    /// Spans after which a trace is decided without waiting.
    pub max_spans_per_trace: u64,
    /// Trace ids remembered as sampled.
    pub sampled_cache_size: usize,
    /// Trace ids remembered as not sampled.
    pub non_sampled_cache_size: usize,
}

/// Why a trace was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `decision_wait` passed.
    Wait,
    /// Room was needed for a new trace (`num_traces`).
    NumTraces,
    /// Room was needed for new spans (`max_bytes`).
    Memory,
    /// The trace reached `max_spans_per_trace`.
    TraceSize,
    /// The collector is shutting down.
    Shutdown,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Wait => "decision_wait",
            Reason::NumTraces => "num_traces",
            Reason::Memory => "memory",
            Reason::TraceSize => "trace_size",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// Spans to send on, and how many.
#[derive(Default, Debug)]
pub struct Output {
    /// Kept spans, by resource and scope.
    pub resource_spans: Vec<ResourceSpans>,
    /// Their number.
    pub spans: u64,
}

impl Output {
    fn keep(&mut self, fragments: Vec<ResourceSpans>, spans: u64) {
        self.resource_spans.extend(fragments);
        self.spans += spans;
    }

    /// The kept spans as one export request.
    pub fn request(&mut self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: std::mem::take(&mut self.resource_spans),
        }
    }
}

struct Pending {
    fragments: Vec<ResourceSpans>,
    spans: u64,
    bytes: usize,
    arrived: Instant,
    generation: u64,
}

/// Trace ids remembered in arrival order, forgetting the oldest beyond a capacity.
struct Remembered {
    ids: HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
    capacity: usize,
}

impl Remembered {
    fn new(capacity: usize) -> Self {
        Remembered {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn insert(&mut self, id: [u8; 16]) {
        if self.capacity == 0 || !self.ids.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn contains(&self, id: &[u8; 16]) -> bool {
        self.ids.contains(id)
    }
}

/// The self-metrics of one tail sampler.
pub struct Metrics {
    sampled: Counter,
    not_sampled: Counter,
    late_sampled: Counter,
    late_dropped: Counter,
    evictions: [Counter; 5],
    policies: Vec<[Counter; 4]>,
}

impl Metrics {
    /// Registers the metrics of processor `id` in `pipeline`.
    pub fn new(registry: &Registry, id: &str, pipeline: &str, policies: &[Policy]) -> Self {
        let counter = |name, help, label: &str, value: &str| {
            registry.counter(
                name,
                help,
                &[("processor", id), ("pipeline", pipeline), (label, value)],
            )
        };
        let decisions = |decision| {
            counter(
                "vigil_processor_tail_sampling_traces_total",
                "Traces decided by the tail sampler, by decision.",
                "decision",
                decision,
            )
        };
        let late = |decision| {
            counter(
                "vigil_processor_tail_sampling_late_spans_total",
                "Spans that arrived after their trace was decided, by the decision they followed.",
                "decision",
                decision,
            )
        };
        let early = |reason: Reason| {
            counter(
                "vigil_processor_tail_sampling_decisions_total",
                "Traces decided, by why: after decision_wait, or early to stay within num_traces, the byte \
                 budget or max_spans_per_trace, or at shutdown.",
                "reason",
                reason.label(),
            )
        };
        let verdicts = |policy: &str| {
            [
                Verdict::Sampled,
                Verdict::NotSampled,
                Verdict::InvertSampled,
                Verdict::InvertNotSampled,
            ]
            .map(|verdict| {
                registry.counter(
                    "vigil_processor_tail_sampling_policy_verdicts_total",
                    "What each tail-sampling policy said about each trace.",
                    &[
                        ("processor", id),
                        ("pipeline", pipeline),
                        ("policy", policy),
                        ("verdict", verdict.label()),
                    ],
                )
            })
        };
        Metrics {
            sampled: decisions("sampled"),
            not_sampled: decisions("not_sampled"),
            late_sampled: late("sampled"),
            late_dropped: late("not_sampled"),
            evictions: [
                Reason::Wait,
                Reason::NumTraces,
                Reason::Memory,
                Reason::TraceSize,
                Reason::Shutdown,
            ]
            .map(early),
            policies: policies.iter().map(|p| verdicts(&p.name)).collect(),
        }
    }
}

fn verdict_index(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Sampled => 0,
        Verdict::NotSampled => 1,
        Verdict::InvertSampled => 2,
        Verdict::InvertNotSampled => 3,
    }
}

fn reason_index(reason: Reason) -> usize {
    match reason {
        Reason::Wait => 0,
        Reason::NumTraces => 1,
        Reason::Memory => 2,
        Reason::TraceSize => 3,
        Reason::Shutdown => 4,
    }
}

/// Buffered traces awaiting their decision.
pub struct TraceBuffer {
    limits: Limits,
    policies: Vec<Policy>,
    metrics: Metrics,
    traces: HashMap<[u8; 16], Pending>,
    order: VecDeque<([u8; 16], u64)>,
    bytes: usize,
    spans: u64,
    generation: u64,
    sampled: Remembered,
    not_sampled: Remembered,
}

impl TraceBuffer {
    /// An empty buffer deciding with `policies`.
    pub fn new(limits: Limits, policies: Vec<Policy>, metrics: Metrics) -> Self {
        TraceBuffer {
            sampled: Remembered::new(limits.sampled_cache_size),
            not_sampled: Remembered::new(limits.non_sampled_cache_size),
            limits,
            policies,
            metrics,
            traces: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            spans: 0,
            generation: 0,
        }
    }

    /// Traces buffered now.
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Encoded bytes buffered now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether trace `id` is buffered, awaiting its decision.
    pub fn holds(&self, id: &[u8; 16]) -> bool {
        self.traces.contains_key(id)
    }

    /// Spans buffered now.
    pub fn span_count(&self) -> u64 {
        self.spans
    }

    /// Takes in the spans of `request` at `now`; spans of decided traces follow their decision at once.
    pub fn add(&mut self, request: ExportTraceServiceRequest, now: Instant, out: &mut Output) {
        for (id, fragment, spans) in split_by_trace(request) {
            let Some(id) = id else {
                // No trace id: nothing to group by, so it is not the tail sampler's to judge.
                out.keep(vec![fragment], spans);
                continue;
            };
            if self.sampled.contains(&id) {
                self.metrics.late_sampled.add(spans);
                out.keep(vec![fragment], spans);
                continue;
            }
            if self.not_sampled.contains(&id) {
                self.metrics.late_dropped.add(spans);
                continue;
            }
            if !self.traces.contains_key(&id) {
                while self.traces.len() >= self.limits.num_traces.max(1) {
                    if !self.decide_oldest(Reason::NumTraces, now, out) {
                        break;
                    }
                }
                self.generation += 1;
                self.order.push_back((id, self.generation));
                self.traces.insert(
                    id,
                    Pending {
                        fragments: Vec::new(),
                        spans: 0,
                        bytes: 0,
                        arrived: now,
                        generation: self.generation,
                    },
                );
            }
            let bytes = fragment.encoded_len() + 64;
            let full = {
                let pending = self.traces.get_mut(&id).expect("inserted above");
                pending.fragments.push(fragment);
                pending.spans += spans;
                pending.bytes += bytes;
                pending.spans >= self.limits.max_spans_per_trace
            };
            self.bytes += bytes;
            self.spans += spans;
            if full {
                self.decide(id, Reason::TraceSize, now, out);
            }
        }
        while self.bytes > self.limits.max_bytes {
            if !self.decide_oldest(Reason::Memory, now, out) {
                break;
            }
        }
    }

    /// Decides every trace whose `decision_wait` has passed at `now`.
    pub fn decide_due(&mut self, now: Instant, out: &mut Output) {
        while let Some(&(id, generation)) = self.order.front() {
            match self.traces.get(&id) {
                Some(pending) if pending.generation == generation => {
                    if now.saturating_duration_since(pending.arrived) < self.limits.decision_wait {
                        return;
                    }
                    self.order.pop_front();
                    self.decide(id, Reason::Wait, now, out);
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Decides everything buffered (at shutdown).
    pub fn decide_all(&mut self, now: Instant, out: &mut Output) {
        while self.decide_oldest(Reason::Shutdown, now, out) {}
    }

    /// When the oldest buffered trace is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.order.iter().find_map(|(id, generation)| {
            self.traces
                .get(id)
                .filter(|p| p.generation == *generation)
                .map(|p| p.arrived + self.limits.decision_wait)
        })
    }

    fn decide_oldest(&mut self, reason: Reason, now: Instant, out: &mut Output) -> bool {
        while let Some((id, generation)) = self.order.pop_front() {
            if self
                .traces
                .get(&id)
                .is_some_and(|p| p.generation == generation)
            {
                self.decide(id, reason, now, out);
                return true;
            }
        }
        false
    }

    fn decide(&mut self, id: [u8; 16], reason: Reason, now: Instant, out: &mut Output) {
        let Some(pending) = self.traces.remove(&id) else {
            return;
        };
        self.bytes -= pending.bytes;
        self.spans -= pending.spans;
        self.metrics.evictions[reason_index(reason)].add(1);
        let view = TraceView {
            fragments: &pending.fragments,
            spans: pending.spans,
        };
        let (mut sampled, mut vetoed) = (false, false);
        for (policy, counters) in self.policies.iter_mut().zip(&self.metrics.policies) {
            let verdict = policy.evaluate(&view, now);
            counters[verdict_index(verdict)].add(1);
            match verdict {
                Verdict::Sampled | Verdict::InvertSampled => sampled = true,
                Verdict::InvertNotSampled => vetoed = true,
                Verdict::NotSampled => {}
            }
        }
        if sampled && !vetoed {
            self.metrics.sampled.add(1);
            self.sampled.insert(id);
            out.keep(pending.fragments, pending.spans);
        } else {
            self.metrics.not_sampled.add(1);
            self.not_sampled.insert(id);
        }
    }
}

/// The request's spans grouped by trace: `(trace id, its spans under their resource and scope, count)`;
/// spans without a 16-byte trace id come with `None`.
fn split_by_trace(
    request: ExportTraceServiceRequest,
) -> Vec<(Option<[u8; 16]>, ResourceSpans, u64)> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        } = resource_spans;
        for scope in scope_spans {
            let mut by_trace: Vec<(Option<[u8; 16]>, Vec<Span>)> = Vec::new();
            let mut index: HashMap<Option<[u8; 16]>, usize> = HashMap::new();
            for span in scope.spans {
                let id = <[u8; 16]>::try_from(span.trace_id.as_slice()).ok();
                let slot = *index.entry(id).or_insert_with(|| {
                    by_trace.push((id, Vec::new()));
                    by_trace.len() - 1
                });
                by_trace[slot].1.push(span);
            }
            for (id, spans) in by_trace {
                let count = spans.len() as u64;
                out.push((
                    id,
                    ResourceSpans {
                        resource: resource.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: scope.scope.clone(),
                            spans,
                            schema_url: scope.schema_url.clone(),
                        }],
                        schema_url: schema_url.clone(),
                    },
                    count,
                ));
            }
        }
    }
    out
}
