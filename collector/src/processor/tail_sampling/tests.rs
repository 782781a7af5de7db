use std::collections::HashSet;
use std::time::{Duration, Instant};
use vigil_proto::otlp::string_attribute as string;

use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};

use super::buffer::{Limits, Metrics, Output, TraceBuffer};
use super::policy::{Policy, PolicyConfig};
use super::*;
use crate::component::ComponentId;
use crate::processor::test_support::{Recorder, trace_id, traces};
use crate::telemetry::Registry;

fn policies(yaml_like: serde_json::Value) -> Vec<PolicyConfig> {
    serde_json::from_value(yaml_like).expect("policy configs")
}

fn limits() -> Limits {
    Limits {
        decision_wait: Duration::from_secs(10),
        num_traces: 100_000,
        max_bytes: 512 << 20,
        max_spans_per_trace: 10_000,
        sampled_cache_size: 100_000,
        non_sampled_cache_size: 100_000,
    }
}

fn buffer(limits: Limits, configs: &[PolicyConfig]) -> (TraceBuffer, Registry) {
    let registry = Registry::default();
    let compiled: Vec<Policy> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| Policy::new(c, i).unwrap())
        .collect();
    let metrics = Metrics::new(&registry, "tail_sampling", "traces", &compiled);
    (TraceBuffer::new(limits, compiled, metrics), registry)
}

/// A span of trace `n`: `millis` long, with an error status when `error`.
fn span(n: u64, index: u64, millis: u64, error: bool, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace_id(n),
        span_id: (index + 1).to_be_bytes().to_vec(),
        name: format!("op {index}"),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + millis * 1_000_000,
        status: Some(Status {
            code: if error {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Ok as i32
            },
            ..Default::default()
        }),
        attributes,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn kept_traces(out: &Output) -> HashSet<Vec<u8>> {
    out.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.trace_id.clone())
        .collect()
}

fn standard_policies() -> Vec<PolicyConfig> {
    policies(serde_json::json!([
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 500}},
        {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 20}},
    ]))
}

#[test]
fn errors_and_slow_traces_are_always_kept_and_the_rest_at_the_configured_rate() {
    let (mut buffer, registry) = buffer(limits(), &standard_policies());
    let start = Instant::now();
    let mut out = Output::default();
    let (mut errors, mut slow, mut ordinary) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..5000u64 {
        let (millis, error) = match n % 10 {
            0 => (20, true),
            1 => (900, false),
            _ => (20, false),
        };
        // Three spans per trace, in two requests: the decision waits for the whole trace.
        buffer.add(
            request(vec![span(n, 0, millis, false, vec![])]),
            start,
            &mut out,
        );
        buffer.add(
            request(vec![
                span(n, 1, 5, error, vec![]),
                span(n, 2, 5, false, vec![]),
            ]),
            start + Duration::from_secs(1),
            &mut out,
        );
        match n % 10 {
            0 => errors.push(trace_id(n)),
            1 => slow.push(trace_id(n)),
            _ => ordinary.push(trace_id(n)),
        }
    }
    assert_eq!(out.spans, 0, "nothing is decided before decision_wait");
    buffer.decide_due(start + Duration::from_secs(9), &mut out);
    assert_eq!(out.spans, 0);
    buffer.decide_due(start + Duration::from_secs(10), &mut out);
    let kept = kept_traces(&out);
    assert!(
        errors.iter().all(|id| kept.contains(id)),
        "every error trace"
    );
    assert!(slow.iter().all(|id| kept.contains(id)), "every slow trace");
    let ordinary_kept = ordinary.iter().filter(|id| kept.contains(*id)).count() as f64;
    // 4000 Bernoulli(0.2) trials: mean 800, standard deviation ≈ 25; four deviations either way.
    assert!(
        (700.0..=900.0).contains(&ordinary_kept),
        "{ordinary_kept} of 4000 at 20 %"
    );
    assert_eq!(out.spans as usize, kept.len() * 3, "kept traces are whole");
    assert_eq!(buffer.trace_count(), 0);
    assert_eq!(
        registry.counter_sum(
            "vigil_processor_tail_sampling_traces_total",
            &[("decision", "sampled")]
        ) as usize,
        kept.len()
    );
    assert_eq!(
        registry.counter_sum(
            "vigil_processor_tail_sampling_policy_verdicts_total",
            &[("policy", "errors"), ("verdict", "sampled")]
        ),
        500
    );
}

#[test]
fn late_spans_follow_the_decision() {
    let (mut buffer, registry) = buffer(limits(), &standard_policies());
    let start = Instant::now();
    let mut out = Output::default();
    // Trace 0 has an error (kept); find a trace the probabilistic policy drops.
    let dropped = (1..1000u64)
        .find(|&n| {
            let id: [u8; 16] = trace_id(n).try_into().unwrap();
            !vigil::sampling::Threshold::from_probability(0.2, 14)
                .unwrap()
                .keeps(vigil::sampling::randomness(&id, ""))
        })
        .unwrap();
    buffer.add(request(vec![span(0, 0, 10, true, vec![])]), start, &mut out);
    buffer.add(
        request(vec![span(dropped, 0, 10, false, vec![])]),
        start,
        &mut out,
    );
    buffer.decide_due(start + Duration::from_secs(10), &mut out);
    assert_eq!(out.spans, 1);
    let mut late = Output::default();
    buffer.add(
        request(vec![
            span(0, 5, 10, false, vec![]),
            span(dropped, 5, 10, false, vec![]),
        ]),
        start + Duration::from_secs(60),
        &mut late,
    );
    assert_eq!(late.spans, 1, "only the kept trace's late span passes");
    assert_eq!(kept_traces(&late), HashSet::from([trace_id(0)]));
    assert_eq!(buffer.trace_count(), 0, "late spans are not buffered again");
    assert_eq!(
        registry.counter_sum(
            "vigil_processor_tail_sampling_late_spans_total",
            &[("decision", "not_sampled")]
        ),
        1
    );
}

#[test]
fn memory_stays_within_bounds_with_too_many_traces_and_one_huge_trace() {
    let budget = 2 << 20;
    let limits = Limits {
        num_traces: 1000,
        max_bytes: budget,
        max_spans_per_trace: 10_000,
        ..limits()
    };
    let (mut buffer, registry) = buffer(limits, &standard_policies());
    let start = Instant::now();
    let mut out = Output::default();
    // More traces than num_traces.
    for n in 0..5000u64 {
        buffer.add(
            request(vec![span(n, 0, 10, false, vec![])]),
            start,
            &mut out,
        );
        assert!(buffer.trace_count() <= 1000);
        assert!(buffer.bytes() <= budget);
    }
    assert!(
        registry.counter_sum(
            "vigil_processor_tail_sampling_decisions_total",
            &[("reason", "num_traces")]
        ) >= 4000,
        "the oldest traces were decided early to make room"
    );
    // One trace of 50,000 spans, arriving in requests of 1,000 alongside ordinary traces.
    let huge = 1_000_000u64;
    let mut huge_kept = 0;
    for chunk in 0..50u64 {
        let spans: Vec<Span> = (0..1000)
            .map(|i| span(huge, chunk * 1000 + i, 10, chunk == 0 && i == 0, vec![]))
            .collect();
        let mut step = Output::default();
        buffer.add(request(spans), start, &mut step);
        buffer.add(
            request(vec![span(2_000_000 + chunk, 0, 10, false, vec![])]),
            start,
            &mut step,
        );
        huge_kept += step
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| s.trace_id == trace_id(huge))
            .count();
        assert!(buffer.bytes() <= budget, "within the byte budget");
        assert!(buffer.trace_count() <= 1000);
    }
    assert_eq!(
        huge_kept, 50_000,
        "decided at 10,000 spans; the rest followed as late spans"
    );
    assert_eq!(
        registry.counter_sum(
            "vigil_processor_tail_sampling_decisions_total",
            &[("reason", "trace_size")]
        ),
        1
    );
    // The ordinary traces that arrived with it were not pushed out by it.
    for chunk in 0..50u64 {
        let id: [u8; 16] = trace_id(2_000_000 + chunk).try_into().unwrap();
        assert!(
            buffer.holds(&id),
            "ordinary trace {chunk} still awaits its decision"
        );
    }
    let mut rest = Output::default();
    buffer.decide_due(start + Duration::from_secs(10), &mut rest);
    assert_eq!(buffer.trace_count(), 0);
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn boolean(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}

/// Decides one trace per attribute set, all at once; returns which were kept.
fn decide_each(configs: serde_json::Value, traces: Vec<Vec<Span>>) -> Vec<bool> {
    let (mut buffer, _) = buffer(limits(), &policies(configs));
    let start = Instant::now();
    let mut out = Output::default();
    let ids: Vec<Vec<u8>> = traces.iter().map(|t| t[0].trace_id.clone()).collect();
    for spans in traces {
        buffer.add(request(spans), start, &mut out);
    }
    buffer.decide_all(start, &mut out);
    let kept = kept_traces(&out);
    ids.iter().map(|id| kept.contains(id)).collect()
}

#[test]
fn attribute_count_rate_and_combining_policies() {
    let with = |n: u64, attributes: Vec<KeyValue>| vec![span(n, 0, 10, false, attributes)];
    // An inverted match vetoes whatever else samples.
    let kept = decide_each(
        serde_json::json!([
            {"name": "all", "type": "always_sample"},
            {"name": "no-health", "type": "string_attribute",
             "string_attribute": {"key": "http.route", "values": ["/health.*"], "enabled_regex_matching": true, "invert_match": true}},
        ]),
        vec![
            with(1, vec![string("http.route", "/healthz")]),
            with(2, vec![string("http.route", "/orders")]),
        ],
    );
    assert_eq!(kept, [false, true]);
    let kept = decide_each(
        serde_json::json!([
            {"type": "numeric_attribute", "numeric_attribute": {"key": "http.status_code", "min_value": 500, "max_value": 599}},
            {"type": "boolean_attribute", "boolean_attribute": {"key": "debug", "value": true}},
        ]),
        vec![
            with(1, vec![int("http.status_code", 503)]),
            with(2, vec![int("http.status_code", 200)]),
            with(3, vec![boolean("debug", true)]),
        ],
    );
    assert_eq!(kept, [true, false, true]);
    let kept = decide_each(
        serde_json::json!([
            {"type": "and", "and": {"and_sub_policy": [
                {"name": "big", "type": "span_count", "span_count": {"min_spans": 3}},
                {"name": "checkout", "type": "string_attribute", "string_attribute": {"key": "service", "values": ["checkout"]}},
            ]}},
        ]),
        vec![
            (0..3)
                .map(|i| span(1, i, 10, false, vec![string("service", "checkout")]))
                .collect(),
            (0..2)
                .map(|i| span(2, i, 10, false, vec![string("service", "checkout")]))
                .collect(),
            (0..3)
                .map(|i| span(3, i, 10, false, vec![string("service", "cart")]))
                .collect(),
        ],
    );
    assert_eq!(kept, [true, false, false]);
    // 100 spans per second: ten traces of ten spans, then nothing more this second.
    let kept = decide_each(
        serde_json::json!([{"type": "rate_limiting", "rate_limiting": {"spans_per_second": 100}}]),
        (0..50u64)
            .map(|n| (0..10).map(|i| span(n, i, 10, false, vec![])).collect())
            .collect(),
    );
    assert_eq!(kept.iter().filter(|k| **k).count(), 10);
    // Composite: errors get 50 % of 20 spans/s, everything else the other 50 %.
    let kept = decide_each(
        serde_json::json!([{"type": "composite", "composite": {
            "max_total_spans_per_second": 20,
            "policy_order": ["errors", "everything"],
            "composite_sub_policy": [
                {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
                {"name": "everything", "type": "always_sample"},
            ],
            "rate_allocation": [{"policy": "errors", "percent": 50}],
        }}]),
        (0..40u64)
            .map(|n| vec![span(n, 0, 10, n % 2 == 0, vec![])])
            .collect(),
    );
    let errors_kept = kept.iter().step_by(2).filter(|k| **k).count();
    let others_kept = kept.iter().skip(1).step_by(2).filter(|k| **k).count();
    assert_eq!((errors_kept, others_kept), (10, 10));
}

#[tokio::test(start_paused = true)]
async fn the_processor_waits_decides_and_flushes_at_shutdown() {
    let recorder = Arc::new(Recorder::default());
    let id = ComponentId::parse("tail_sampling").unwrap();
    let registry = Registry::default();
    let config = TailSamplingConfig {
        decision_wait: Duration::from_secs(5),
        policies: standard_policies(),
        ..Default::default()
    };
    let built = build(
        &config,
        ProcessorContext {
            id: &id,
            pipeline: "traces",
            signal: Signal::Traces,
            registry: &registry,
            memory: &crate::pipeline::memory::MemoryAccount::default(),
        },
        recorder.clone(),
    );
    built
        .entry
        .try_consume(traces(vec![span(0, 0, 10, true, vec![])]))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(recorder.spans().is_empty(), "still within decision_wait");
    built
        .entry
        .try_consume(traces(vec![
            span(0, 1, 10, false, vec![]),
            span(7, 0, 900, false, vec![]),
        ]))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        recorder.spans().len(),
        2,
        "trace 0 decided with both its spans"
    );
    let stage = built.stage.expect("a task");
    assert_eq!(
        stage.held_items.load(Ordering::Relaxed),
        1,
        "trace 7 is held"
    );
    stage.closing.send(true).unwrap();
    stage.task.await.unwrap();
    assert_eq!(
        recorder.spans().len(),
        3,
        "the slow trace was decided at shutdown"
    );
    assert_eq!(stage.held_items.load(Ordering::Relaxed), 0);
}

#[test]
fn policy_errors_are_reported_where_they_are() {
    let check = |json: serde_json::Value| -> String {
        let configs = policies(json);
        configs
            .iter()
            .enumerate()
            .find_map(|(i, c)| Policy::new(c, i).err())
            .unwrap_or_default()
    };
    assert!(
        check(serde_json::json!([{"type": "latancy"}])).contains("unknown policy type `latancy`")
    );
    assert!(
        check(serde_json::json!([{"name": "slow", "type": "latency"}]))
            .contains("needs its `latency` section")
    );
    assert!(check(serde_json::json!([{"type": "status_code", "status_code": {"status_codes": ["FAILED"]}}])).contains("FAILED"));
    assert!(check(serde_json::json!([{"type": "string_attribute", "string_attribute": {"key": "k", "values": ["("], "enabled_regex_matching": true}}])).contains("regex"));
    assert!(check(serde_json::json!([{"type": "composite", "composite": {"max_total_spans_per_second": 1, "policy_order": ["x"], "composite_sub_policy": []}}])).contains("`x`"));
    let unknown_field = serde_json::from_value::<Vec<PolicyConfig>>(
        serde_json::json!([{"type": "latency", "latency": {"threshold": 5}}]),
    )
    .unwrap_err()
    .to_string();
    assert!(unknown_field.contains("threshold"), "{unknown_field}");
}
