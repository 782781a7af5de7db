use vigil::opentelemetry::trace::{SpanKind, TraceId};
use vigil::opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vigil_proto::otlp::trace::v1::Span;

use super::*;
use crate::component::ComponentId;
use crate::processor::test_support::{Recorder, trace_id, traces};
use crate::telemetry::Registry;

fn sampler(config: ProbabilisticSamplerConfig, signal: Signal) -> (Built, Arc<Recorder>, Registry) {
    let recorder = Arc::new(Recorder::default());
    let id = ComponentId::parse("probabilistic_sampler").unwrap();
    let registry = Registry::default();
    let built = build(
        &config,
        ProcessorContext {
            id: &id,
            pipeline: signal.as_str(),
            signal,
            registry: &registry,
            memory: &crate::pipeline::memory::MemoryAccount::default(),
        },
        recorder.clone(),
    );
    (built, recorder, registry)
}

fn percent(p: f64) -> ProbabilisticSamplerConfig {
    ProbabilisticSamplerConfig {
        sampling_percentage: Some(p),
        ..Default::default()
    }
}

fn span(n: u64, trace_state: &str) -> Span {
    Span {
        trace_id: trace_id(n),
        span_id: vec![1; 8],
        name: format!("span {n}"),
        trace_state: trace_state.into(),
        ..Default::default()
    }
}

#[test]
fn keeps_the_configured_share_of_traces_within_statistical_bounds() {
    let (built, recorder, registry) = sampler(percent(25.0), Signal::Traces);
    for chunk in 0..20u64 {
        let spans = (chunk * 1000..(chunk + 1) * 1000)
            .map(|n| span(n, ""))
            .collect();
        built.entry.try_consume(traces(spans)).unwrap();
    }
    let kept = recorder.spans().len() as f64;
    // 20,000 Bernoulli(0.25) trials: mean 5,000, standard deviation ≈ 61; four deviations either way.
    assert!(
        (4755.0..=5245.0).contains(&kept),
        "kept {kept} of 20000 at 25 %"
    );
    let counted = registry.counter_sum(
        "vigil_processor_probabilistic_sampler_spans_total",
        &[("sampled", "true")],
    );
    assert_eq!(counted as f64, kept);
    let batches = recorder.0.lock().unwrap();
    assert_eq!(
        batches.iter().map(|b| b.items).sum::<u64>() as f64,
        kept,
        "item counts follow the sampling"
    );
}

#[test]
fn decisions_match_the_sdk_head_sampler_for_the_same_trace_ids() {
    let sdk = vigil::sampling::ConsistentSampler::new(0.3);
    let (built, recorder, _) = sampler(percent(30.0), Signal::Traces);
    let spans: Vec<Span> = (0..3000u64).map(|n| span(n, "")).collect();
    built.entry.try_consume(traces(spans)).unwrap();
    let kept: std::collections::HashSet<Vec<u8>> =
        recorder.spans().into_iter().map(|s| s.trace_id).collect();
    let mut disagreements = 0;
    for n in 0..3000u64 {
        let id = trace_id(n);
        let bytes: [u8; 16] = id.as_slice().try_into().unwrap();
        let result = sdk.should_sample(
            None,
            TraceId::from_bytes(bytes),
            "x",
            &SpanKind::Internal,
            &[],
            &[],
        );
        let sdk_keeps = result.decision == SamplingDecision::RecordAndSample;
        disagreements += usize::from(sdk_keeps != kept.contains(&id));
    }
    assert_eq!(disagreements, 0, "the SDK and the collector decide alike");
}

#[test]
fn kept_spans_record_their_threshold_and_modes_combine_incoming_ones() {
    let (built, recorder, _) = sampler(percent(50.0), Signal::Traces);
    let spans: Vec<Span> = (0..2000u64)
        .map(|n| span(n, "vendor=x,ot=th:8;rv:ffffffffffffff"))
        .collect();
    built.entry.try_consume(traces(spans)).unwrap();
    let kept = recorder.spans();
    assert_eq!(
        kept.len(),
        2000,
        "rv = max keeps every span at any threshold"
    );
    assert_eq!(
        kept[0].trace_state, "vendor=x,ot=rv:ffffffffffffff;th:c",
        "50 % of 50 % is 25 % (proportional)"
    );

    let equalizing = ProbabilisticSamplerConfig {
        mode: Mode::Equalizing,
        ..percent(50.0)
    };
    let (built, recorder, _) = sampler(equalizing, Signal::Traces);
    let spans = vec![
        span(1, "ot=th:c;rv:ffffffffffffff"),
        span(2, "ot=rv:ffffffffffffff"),
    ];
    built.entry.try_consume(traces(spans)).unwrap();
    let states: Vec<String> = recorder
        .spans()
        .into_iter()
        .map(|s| s.trace_state)
        .collect();
    assert_eq!(
        states,
        ["ot=rv:ffffffffffffff;th:c", "ot=rv:ffffffffffffff;th:8"]
    );

    let (built, recorder, _) = sampler(percent(50.0), Signal::Traces);
    let spans = vec![span(1, "ot=th:zz"), span(2, "ot=rv:00000000000000")];
    built.entry.try_consume(traces(spans)).unwrap();
    assert!(
        recorder.spans().is_empty(),
        "an invalid threshold fails closed; rv = 0 is below any threshold but 0"
    );
}

fn log(n: Option<u64>, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        trace_id: n.map(trace_id).unwrap_or_default(),
        attributes,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("hello".into())),
        }),
        ..Default::default()
    }
}

fn logs(records: Vec<LogRecord>) -> Batch {
    let items = records.len() as u64;
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::new(Signal::Logs, Bytes::from(request.encode_to_vec()), items)
}

fn kept_logs(recorder: &Recorder) -> Vec<LogRecord> {
    recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| {
            ExportLogsServiceRequest::decode(b.to_bytes())
                .unwrap()
                .resource_logs
                .into_iter()
                .flat_map(|r| r.scope_logs)
                .flat_map(|s| s.log_records)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

#[test]
fn logs_follow_their_trace_or_an_attribute_and_priorities_override() {
    // By trace id: the logs of a trace get the trace's decision.
    let (spans_sampler, span_recorder, _) = sampler(percent(40.0), Signal::Traces);
    let (logs_sampler, log_recorder, _) = sampler(percent(40.0), Signal::Logs);
    spans_sampler
        .entry
        .try_consume(traces((0..500u64).map(|n| span(n, "")).collect()))
        .unwrap();
    logs_sampler
        .entry
        .try_consume(logs((0..500u64).map(|n| log(Some(n), vec![])).collect()))
        .unwrap();
    let span_ids: Vec<Vec<u8>> = span_recorder
        .spans()
        .into_iter()
        .map(|s| s.trace_id)
        .collect();
    let log_records = kept_logs(&log_recorder);
    let log_ids: Vec<Vec<u8>> = log_records.iter().map(|l| l.trace_id.clone()).collect();
    assert_eq!(span_ids, log_ids);
    assert!(
        log_records[0]
            .attributes
            .iter()
            .any(|a| a.key == "sampling.threshold"),
        "kept records say how they were sampled"
    );

    // No trace id: fail closed by default, kept with `fail_closed: false`.
    let (closed, recorder, _) = sampler(percent(40.0), Signal::Logs);
    closed
        .entry
        .try_consume(logs(vec![log(None, vec![])]))
        .unwrap();
    assert!(kept_logs(&recorder).is_empty());
    let open = ProbabilisticSamplerConfig {
        fail_closed: false,
        ..percent(40.0)
    };
    let (open, recorder, _) = sampler(open, Signal::Logs);
    open.entry
        .try_consume(logs(vec![log(None, vec![])]))
        .unwrap();
    assert_eq!(kept_logs(&recorder).len(), 1);

    // By attribute: the same user is always in or always out.
    let by_user = ProbabilisticSamplerConfig {
        attribute_source: AttributeSource::Record,
        from_attribute: "user.id".into(),
        sampling_priority: "priority".into(),
        ..percent(50.0)
    };
    let (by_user, recorder, _) = sampler(by_user, Signal::Logs);
    let user = |id: i64| kv("user.id", any_value::Value::IntValue(id));
    let records: Vec<LogRecord> = (0..400).map(|i| log(None, vec![user(i % 100)])).collect();
    by_user.entry.try_consume(logs(records)).unwrap();
    let kept = kept_logs(&recorder);
    assert_eq!(
        kept.len() % 4,
        0,
        "each user's four records share one decision"
    );
    assert!(
        (120..=280).contains(&kept.len()),
        "{} of 400 at 50 %",
        kept.len()
    );
    recorder.0.lock().unwrap().clear();
    let priority = |p: i64| kv("priority", any_value::Value::IntValue(p));
    by_user
        .entry
        .try_consume(logs(
            (0..100)
                .flat_map(|i| {
                    [
                        log(None, vec![user(i), priority(0)]),
                        log(None, vec![user(i), priority(100)]),
                    ]
                })
                .collect(),
        ))
        .unwrap();
    let kept = kept_logs(&recorder);
    assert_eq!(kept.len(), 100, "priority 0 drops, priority 100 keeps");
}

#[test]
fn metrics_pass_unchanged() {
    let (built, recorder, _) = sampler(percent(0.0), Signal::Metrics);
    let batch = Batch::new(Signal::Metrics, Bytes::from_static(b""), 3);
    built.entry.try_consume(batch).unwrap();
    assert_eq!(recorder.0.lock().unwrap()[0].items, 3);
}
