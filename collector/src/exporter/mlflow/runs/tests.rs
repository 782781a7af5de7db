use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use vigil_proto::otlp::metrics::v1::{
    Gauge, Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
    number_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn rules() -> Rules {
    Rules {
        run_attributes: vec!["mlflow.experiment".into(), "experiment_id".into()],
        resource_experiment_attribute: "mlflow.experiment_name".into(),
        param_prefixes: vec!["param.".into()],
        metrics: vec!["training.*".into(), "eval.*".into()],
        step_attributes: vec!["step".into(), "epoch".into()],
        heartbeat: Duration::from_secs(60),
    }
}

fn resource(extra: Vec<KeyValue>) -> Option<Resource> {
    let mut attributes = vec![
        s("service.name", "trainer"),
        s("service.instance.id", "i-1"),
    ];
    attributes.extend(extra);
    Some(Resource {
        attributes,
        ..Default::default()
    })
}

fn spans(resource: Option<Resource>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn span(
    name: &str,
    trace: u8,
    id: u8,
    parent: Option<u8>,
    attributes: Vec<KeyValue>,
    error: bool,
) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 9_000_000_000,
        attributes,
        status: error.then(|| Status {
            code: StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn gauge(
    resource: Option<Resource>,
    name: &str,
    points: Vec<(Vec<KeyValue>, f64, u64)>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource,
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![OtlpMetric {
                    name: name.into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: points
                            .into_iter()
                            .map(|(attributes, value, time)| NumberDataPoint {
                                attributes,
                                time_unix_nano: time,
                                value: Some(number_data_point::Value::AsDouble(value)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs(resource: Option<Resource>, trace: u8, body: &str) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    trace_id: vec![trace; 16],
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(body.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn steps(actions: &[Action]) -> Vec<(String, i64, f64)> {
    actions
        .iter()
        .flat_map(|a| match a {
            Action::Log { batch, .. } => batch
                .metrics
                .iter()
                .map(|m| (m.key.clone(), m.step, m.value))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn globs_match_like_shell_patterns() {
    assert!(glob("training.*", "training.loss"));
    assert!(glob("training.*", "training."));
    assert!(!glob("training.*", "trainingloss"));
    assert!(glob("*", "anything"));
    assert!(glob("model.*.acc", "model.val.acc"));
    assert!(!glob("model.*.acc", "model.val.loss"));
    assert!(glob("exact", "exact"));
    assert!(!glob("exact", "exactly"));
    assert!(glob("a*b*c", "a_b_b_c"));
    assert!(!glob("a*b*c", "acb"));
}

#[test]
fn a_run_span_is_a_run_with_params_tags_times_and_status_and_a_retry_adds_nothing() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    let request = spans(
        resource(vec![]),
        vec![
            span(
                "train",
                1,
                1,
                None,
                vec![
                    s("mlflow.experiment", "churn"),
                    i("param.lr", 3),
                    s("other", "x"),
                ],
                true,
            ),
            span("child", 1, 2, Some(1), vec![], false),
        ],
    );
    let actions = tracker.spans(&request, now);
    assert_eq!(actions.len(), 2, "{actions:?}");
    let Action::Start { run, spec } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(spec.experiment, "churn");
    assert_eq!(spec.name, "train");
    assert_eq!(spec.start_ms, 1000);
    assert_eq!(spec.params, vec![MlflowTag::new("lr", "3")]);
    let tags = spec.tags.clone().unwrap_or_default();
    assert!(tags.contains(&MlflowTag::new("service.name", "trainer")));
    assert!(tags.contains(&MlflowTag::new("mlflow.source.name", "trainer")));
    assert_eq!(
        actions[1],
        Action::End {
            run: *run,
            status: RunStatus::Failed,
            end_ms: 9000
        }
    );
    assert!(tracker.spans(&request, now).is_empty(), "a retried batch");
}

#[test]
fn configured_metrics_become_points_at_their_step_once() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    let named = resource(vec![s("mlflow.experiment_name", "churn")]);
    let first = gauge(
        named.clone(),
        "training.loss",
        vec![
            (vec![i("epoch", 1)], 0.9, 10),
            (vec![i("epoch", 2), s("split", "val")], 0.8, 10),
        ],
    );
    let actions = tracker.metrics(&first, now);
    assert!(
        matches!(&actions[0], Action::Start { spec, .. } if spec.experiment == "churn" && spec.name == "trainer")
    );
    assert_eq!(
        steps(&actions),
        vec![
            ("training.loss".into(), 1, 0.9),
            ("training.loss/val".into(), 2, 0.8)
        ]
    );
    // The SDK exports the same gauge values again with a new timestamp, and a batch is retried: no new points.
    let again = gauge(
        named.clone(),
        "training.loss",
        vec![
            (vec![i("epoch", 1)], 0.9, 20),
            (vec![i("epoch", 2), s("split", "val")], 0.8, 20),
        ],
    );
    assert!(steps(&tracker.metrics(&again, now)).is_empty());
    assert!(steps(&tracker.metrics(&first, now)).is_empty());
    // Without a step attribute each new timestamp is the next step.
    let unstepped = |time| gauge(named.clone(), "eval.accuracy", vec![(vec![], 0.5, time)]);
    assert_eq!(
        steps(&tracker.metrics(&unstepped(1), now)),
        vec![("eval.accuracy".into(), 0, 0.5)]
    );
    assert!(
        steps(&tracker.metrics(&unstepped(1), now)).is_empty(),
        "retried"
    );
    assert_eq!(
        steps(&tracker.metrics(&unstepped(2), now)),
        vec![("eval.accuracy".into(), 1, 0.5)]
    );
    // Other metrics stay out.
    assert!(
        tracker
            .metrics(&gauge(named, "http.requests", vec![(vec![], 1.0, 1)]), now)
            .is_empty()
    );
}

#[test]
fn metrics_before_the_run_span_wait_for_it() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    // The resource names no experiment: its points are held until a run span starts a run for it.
    let held = tracker.metrics(
        &gauge(
            resource(vec![]),
            "training.loss",
            vec![(vec![i("step", 7)], 0.5, 1)],
        ),
        now,
    );
    assert!(held.is_empty());
    let actions = tracker.spans(
        &spans(
            resource(vec![]),
            vec![span(
                "fit",
                2,
                1,
                None,
                vec![s("experiment_id", "exp")],
                false,
            )],
        ),
        now,
    );
    assert!(matches!(&actions[0], Action::Start { .. }));
    assert_eq!(steps(&actions), vec![("training.loss".into(), 7, 0.5)]);
    assert!(matches!(
        actions.last(),
        Some(Action::End {
            status: RunStatus::Finished,
            ..
        })
    ));
}

#[test]
fn a_run_span_adopts_the_run_its_resource_metrics_started() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    let named = resource(vec![s("mlflow.experiment_name", "churn")]);
    let first = tracker.metrics(
        &gauge(
            named.clone(),
            "training.loss",
            vec![(vec![i("epoch", 1)], 0.9, 1)],
        ),
        now,
    );
    let Action::Start { run, .. } = &first[0] else {
        panic!("{first:?}")
    };
    let actions = tracker.spans(
        &spans(
            named,
            vec![span("train", 3, 1, None, vec![i("param.lr", 1)], false)],
        ),
        now,
    );
    assert_eq!(actions.len(), 2, "{actions:?}");
    let Action::Log { run: logged, batch } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(logged, run);
    assert_eq!(batch.params, vec![MlflowTag::new("lr", "1")]);
    assert!(
        batch
            .tags
            .contains(&MlflowTag::new("mlflow.runName", "train"))
    );
    assert!(matches!(actions[1], Action::End { run: ended, .. } if ended == *run));
}

#[test]
fn an_explicit_run_id_attaches_and_is_never_ended_by_the_heartbeat() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    let request = gauge(
        resource(vec![s("mlflow.run_id", "abc123")]),
        "training.loss",
        vec![(vec![i("step", 1)], 0.1, 1)],
    );
    let actions = tracker.metrics(&request, now);
    assert!(
        matches!(&actions[0], Action::Start { spec, .. } if spec.attach.as_deref() == Some("abc123"))
    );
    assert_eq!(steps(&actions).len(), 1);
    // Later data for the same id goes to the same run.
    let more = tracker.metrics(
        &gauge(
            resource(vec![s("mlflow.run_id", "abc123")]),
            "training.loss",
            vec![(vec![i("step", 2)], 0.1, 2)],
        ),
        now,
    );
    assert_eq!(more.len(), 1, "{more:?}");
    let later = tracker.expire(now + Duration::from_secs(3600), 0);
    assert!(
        !later.iter().any(|a| matches!(a, Action::End { .. })),
        "{later:?}"
    );
    assert!(
        later.iter().any(|a| matches!(a, Action::Forget { .. })),
        "forgotten once quiet"
    );
}

#[test]
fn logs_follow_their_trace_or_their_resource() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    let started = tracker.metrics(
        &gauge(
            resource(vec![s("mlflow.experiment_name", "e")]),
            "training.loss",
            vec![(vec![], 1.0, 1)],
        ),
        now,
    );
    let Action::Start { run, .. } = &started[0] else {
        panic!()
    };
    let actions = tracker.logs(&logs(resource(vec![]), 9, "epoch 1 done"), now);
    let [Action::Lines { run: target, lines }] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(target, run);
    let line: serde_json::Value =
        serde_json::from_slice(lines.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(line["body"], "epoch 1 done");
    assert_eq!(line["trace_id"], "09".repeat(16));
    // Another resource with no run: nothing.
    let other = Some(Resource {
        attributes: vec![s("service.name", "elsewhere")],
        ..Default::default()
    });
    assert!(tracker.logs(&logs(other, 8, "x"), now).is_empty());
}

#[test]
fn a_quiet_job_has_its_run_ended_killed_once() {
    let mut tracker = Tracker::new(rules());
    let start = Instant::now();
    let started = tracker.metrics(
        &gauge(
            resource(vec![s("mlflow.experiment_name", "e")]),
            "training.loss",
            vec![(vec![], 1.0, 1)],
        ),
        start,
    );
    let Action::Start { run, .. } = &started[0] else {
        panic!()
    };
    assert!(
        tracker
            .expire(start + Duration::from_secs(59), 0)
            .is_empty(),
        "not yet"
    );
    let ended = tracker.expire(start + Duration::from_secs(61), 42);
    assert_eq!(
        ended,
        vec![Action::End {
            run: *run,
            status: RunStatus::Killed,
            end_ms: 42
        }]
    );
    assert!(
        tracker
            .expire(start + Duration::from_secs(62), 43)
            .is_empty(),
        "once"
    );
}

#[test]
fn traces_of_runs_are_split_by_experiment() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    let request = spans(
        resource(vec![]),
        vec![
            span("a", 1, 1, None, vec![s("mlflow.experiment", "one")], false),
            span("b", 2, 1, None, vec![s("mlflow.experiment", "two")], false),
            span("a-child", 1, 2, Some(1), vec![], false),
            span("unrelated", 3, 1, None, vec![], false),
        ],
    );
    tracker.spans(&request, now);
    let parts = tracker.trace_experiments(&request);
    let names: Vec<(&str, usize)> = parts
        .iter()
        .map(|(e, r)| (e.as_str(), r.resource_spans[0].scope_spans[0].spans.len()))
        .collect();
    assert_eq!(names, vec![("one", 2), ("two", 1)]);
    assert_eq!(parts[0].1.resource_spans[0].resource, resource(vec![]));
}

#[test]
fn logs_before_the_run_span_wait_for_it() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    // A span-named run: its logs arrive long before the span (exported when the job ends).
    assert!(
        tracker
            .logs(&logs(resource(vec![]), 4, "epoch 1 done"), now)
            .is_empty()
    );
    let actions = tracker.spans(
        &spans(
            resource(vec![]),
            vec![span(
                "fit",
                4,
                1,
                None,
                vec![s("experiment_id", "exp")],
                false,
            )],
        ),
        now,
    );
    let lines = actions
        .iter()
        .find_map(|a| match a {
            Action::Lines { lines, .. } => Some(String::from_utf8_lossy(lines).into_owned()),
            _ => None,
        })
        .unwrap_or_default();
    assert!(lines.contains("epoch 1 done"), "{actions:?}");
}

#[test]
fn repeats_are_recognised_across_a_generation_change() {
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    let named = resource(vec![s("mlflow.experiment_name", "e")]);
    let first = gauge(
        named.clone(),
        "training.loss",
        vec![(vec![i("step", 0)], 1.0, 1)],
    );
    assert_eq!(steps(&tracker.metrics(&first, now)).len(), 1);
    // Fill a whole generation of other points.
    let many: Vec<(Vec<KeyValue>, f64, u64)> = (1..=SEEN_PER_RUN as i64 + 1)
        .map(|step| (vec![i("step", step)], 1.0, 1))
        .collect();
    tracker.metrics(&gauge(named, "training.loss", many), now);
    assert!(
        steps(&tracker.metrics(&first, now)).is_empty(),
        "still a repeat"
    );
}

#[test]
fn jobs_without_an_instance_id_are_told_apart_by_host_and_pid() {
    let job = |pid: i64| {
        Some(Resource {
            attributes: vec![
                s("service.name", "trainer"),
                s("host.name", "gpu-1"),
                i("process.pid", pid),
                s("mlflow.experiment_name", "e"),
            ],
            ..Default::default()
        })
    };
    let mut tracker = Tracker::new(rules());
    let now = Instant::now();
    let a = tracker.metrics(&gauge(job(1), "training.loss", vec![(vec![], 1.0, 1)]), now);
    let b = tracker.metrics(&gauge(job(2), "training.loss", vec![(vec![], 1.0, 1)]), now);
    assert!(matches!(a[0], Action::Start { .. }));
    assert!(
        matches!(b[0], Action::Start { .. }),
        "a second job, a second run"
    );
}
