use std::path::Path;

use super::*;

#[test]
fn translated_samples_keep_prometheus_names() {
    let labels: crate::prometheus::store::Labels =
        vec![("job".to_string(), "api".to_string())].into();
    let series = crate::prometheus::store::Series {
        value: SeriesValue::Histogram(crate::prometheus::store::Histogram {
            bounds: vec![0.1, 1.0],
            counts: vec![2, 3, 1],
            sum: 4.5,
            count: 6,
        }),
        updated: std::time::Instant::now(),
        timestamp_ms: 0,
        label_text: Arc::from(""),
        exemplars: Vec::new(),
        start_time_unix_nano: 0,
    };
    let changed = Changed {
        name: "latency_seconds",
        kind: crate::prometheus::naming::Kind::Histogram,
        labels: &labels,
        series: &series,
        help: "",
        unit: "s",
        ended: false,
    };
    let samples = samples_of(&changed);
    let text: Vec<String> = samples
        .iter()
        .map(|(n, v, extra)| format!("{n}({extra:?})={v}"))
        .collect();
    assert_eq!(
        text,
        [
            "latency_seconds_bucket(Some((\"le\", \"0.1\")))=2",
            "latency_seconds_bucket(Some((\"le\", \"1\")))=5",
            "latency_seconds_bucket(Some((\"le\", \"+Inf\")))=6",
            "latency_seconds_sum(None)=4.5",
            "latency_seconds_count(None)=6",
        ]
    );
}

#[test]
fn output_series_put_job_and_instance_back_in_the_resource() {
    let sample = Sample {
        labels: tsdb::sorted(vec![
            (NAME.into(), "ALERTS".into()),
            ("job".into(), "ml/trainer".into()),
            ("instance".into(), "host-1".into()),
            ("alertname".into(), "TrainingFailed".into()),
        ]),
        value: 1.0,
    };
    let ended = vec![tsdb::sorted(vec![
        (NAME.into(), "ALERTS".into()),
        ("alertname".into(), "Gone".into()),
    ])];
    let request = to_otlp(vec![sample], ended, 1_000);
    // Resources by (job, instance): the ended series (no job) sorts first.
    let resource = &request.resource_metrics[1];
    let attributes: Vec<(String, String)> = resource
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                crate::prometheus::store::value_text(kv.value.as_ref()),
            )
        })
        .collect();
    assert_eq!(
        attributes,
        [
            ("service.name".to_string(), "trainer".to_string()),
            ("service.namespace".into(), "ml".into()),
            ("service.instance.id".into(), "host-1".into())
        ]
    );
    let metric = &resource.scope_metrics[0].metrics[0];
    assert_eq!(metric.name, "ALERTS");
    let Some(metric::Data::Gauge(gauge)) = &metric.data else {
        panic!("a gauge");
    };
    assert_eq!(gauge.data_points[0].attributes[0].key, "alertname");
    assert_eq!(
        crate::prometheus::store::value_text(gauge.data_points[0].attributes[0].value.as_ref()),
        "TrainingFailed"
    );
    assert_eq!(gauge.data_points[0].time_unix_nano, 1_000_000_000);
    assert_eq!(gauge.data_points[0].flags, 0);
    assert_eq!(
        gauge.data_points[0].value,
        Some(vigil_proto::otlp::metrics::v1::number_data_point::Value::AsDouble(1.0))
    );
    // An ended series: no job, so its own resource; no value, flagged as having none.
    let gone = &request.resource_metrics[0].scope_metrics[0].metrics[0];
    let Some(metric::Data::Gauge(gone)) = &gone.data else {
        panic!("a gauge");
    };
    assert_eq!(gone.data_points[0].flags, 1);
    assert!(gone.data_points[0].value.is_none());
}

/// The shipped rule files, evaluated on the series the SDK and `spanmetrics` produce: the recording rules give
/// the seed names their meaning, and the seed alerts fire on them.
#[test]
fn the_shipped_rules_fire_on_vigil_data() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/monitoring");
    let mut groups = Vec::new();
    for file in ["recording.yaml", "alerts.yaml"] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        groups.extend(rules::load(&path, &text, &|_| None).unwrap());
    }
    assert_eq!(groups[1].rules.len(), 4, "the four seed rules");
    let series = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![
            (NAME.to_string(), name.to_string()),
            ("job".to_string(), "trainer".to_string()),
            ("instance".to_string(), "host-1".to_string()),
        ];
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        tsdb::sorted(labels)
    };
    let mut db = Tsdb::new(Duration::from_secs(3600), 1000);
    let now = 1_800_000_000_000;
    for step in 0..=20 {
        let t = now - 300_000 + step * 15_000;
        // 10 calls/s, 2 of them errors: an error rate of 0.2.
        let calls = |code: &str| {
            series(
                "traces_span_metrics_calls_total",
                &[
                    ("service_name", "trainer"),
                    ("span_name", "epoch"),
                    ("status_code", code),
                ],
            )
        };
        db.append(calls("STATUS_CODE_UNSET"), t, (step * 120) as f64);
        db.append(calls("STATUS_CODE_ERROR"), t, (step * 30) as f64);
    }
    db.append(
        series(
            "system_filesystem_utilization_ratio",
            &[("system_filesystem_mountpoint", "/data")],
        ),
        now,
        0.95,
    );
    db.append(
        series(
            "hw_gpu_utilization_ratio",
            &[("hw_gpu_task", "general"), ("hw_id", "0")],
        ),
        now,
        0.05,
    );
    db.append(
        series(
            "training_status",
            &[("status", "failed"), ("model", "lgbm")],
        ),
        now,
        1.0,
    );
    db.append(
        series(
            "training_status",
            &[("status", "completed"), ("model", "lgbm")],
        ),
        now,
        0.0,
    );
    let mut fired = BTreeMap::new();
    for group in &groups {
        for rule in &group.rules {
            let samples = promql::instant(&rule.expr, &db, now).unwrap();
            match &rule.kind {
                RuleKind::Record { name } => {
                    for sample in samples {
                        let mut labels = state::result_labels(&sample, &rule.labels);
                        labels.push((NAME.into(), name.clone()));
                        db.append(tsdb::sorted(labels), now, sample.value);
                    }
                }
                RuleKind::Alert { .. } => {
                    let mut state = RuleState::default();
                    state.evaluate(rule, &samples, now);
                    for alert in state.active.values() {
                        fired.insert(rule.name().to_string(), (alert.labels.clone(), alert.value));
                    }
                }
            }
        }
    }
    let names: Vec<&str> = fired.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "gpu_utilization_low",
            "high_error_rate",
            "low_disk_space",
            "training_failed"
        ]
    );
    let (labels, value) = &fired["high_error_rate"];
    assert!((value - 0.2).abs() < 1e-9, "{value}");
    assert_eq!(label(labels, "service_name"), Some("trainer"));
    assert_eq!(label(labels, "severity"), Some("critical"));
    let (labels, value) = &fired["low_disk_space"];
    assert!((value - 5.0).abs() < 1e-9, "{value}");
    assert_eq!(label(labels, "system_filesystem_mountpoint"), Some("/data"));
    assert_eq!(fired["gpu_utilization_low"].1, 0.05);
    let (labels, _) = &fired["training_failed"];
    assert_eq!(label(labels, "model"), Some("lgbm"));
    assert_eq!(label(labels, "status"), Some("failed"));
}

/// A rule's own `no_data` wins over the connector's; the other rules, and recording rules, keep the
/// connector's policy whole.
#[test]
fn a_rule_s_own_no_data_overrides_the_connector_s() {
    let text = "alerts:\n  - name: own\n    condition: up == 0\n    no_data: alerting\n  - name: inherited\n    condition: up == 0\n";
    let groups = rules::load(Path::new("alerts.yaml"), text, &|_| None).unwrap();
    let connector = state::Policy {
        no_data: state::NoData::KeepLast,
        no_data_after: 5,
        flap_threshold: 4,
        flap_window_ms: 60_000,
    };
    let own = rule_policy(&groups[0].rules[0], &connector);
    assert_eq!(
        own,
        state::Policy {
            no_data: state::NoData::Alerting,
            ..connector.clone()
        }
    );
    assert_eq!(rule_policy(&groups[0].rules[1], &connector), connector);
}
