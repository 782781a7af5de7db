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

/// The reference for [`Alerting::ingest`]: every sample of every translated point through the general path
/// (labels built, sorted and looked up), as before counters and gauges found their series by identity.
fn reference_ingest(
    store: &Store,
    db: &mut Tsdb,
    request: &ExportMetricsServiceRequest,
    now: i64,
) -> u64 {
    let mut over_cap = 0;
    store.ingest(request, &mut |changed| {
        if changed.ended {
            return;
        }
        let t = if changed.series.timestamp_ms > 0 {
            changed.series.timestamp_ms
        } else {
            now
        };
        for (name, value, extra) in samples_of(&changed) {
            let mut labels: Labels = changed.labels.to_vec();
            labels.push((NAME.into(), name));
            if let Some((k, v)) = extra {
                labels.push((k.into(), v));
            }
            if db.append(tsdb::sorted(labels), t, value) == tsdb::Appended::OverCap {
                over_cap += 1;
            }
        }
    });
    over_cap
}

/// Every series' labels and samples, in a fixed order.
fn contents(db: &Tsdb) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let mut all: Vec<_> = db
        .select(None)
        .map(|(labels, samples)| (labels.clone(), samples.iter().copied().collect()))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

mod identity_path {
    use proptest::prelude::*;
    use vigil_proto::otlp::metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics, Sum, metric,
    };

    use super::*;

    /// One data point: metric (0–3: two gauges, a counter, a histogram), series (0–3), time step, value,
    /// and whether the point says "no recorded value".
    type Point = (u8, u8, u8, u32, bool);

    fn request(points: &[Point], base_ms: i64) -> ExportMetricsServiceRequest {
        let metrics = points
            .iter()
            .map(|&(metric, series, step, value, ended)| {
                let attributes = vec![KeyValue {
                    key: "device".into(),
                    value: text_value(&format!("d{series}")),
                    ..KeyValue::default()
                }];
                let time_unix_nano = (base_ms + i64::from(step) * 5_000) as u64 * 1_000_000;
                let flags = u32::from(ended);
                let number = NumberDataPoint {
                    attributes: attributes.clone(),
                    time_unix_nano,
                    value: Some(number_data_point::Value::AsDouble(f64::from(value))),
                    flags,
                    ..NumberDataPoint::default()
                };
                let (name, data) = match metric {
                    0 | 1 => (
                        format!("gauge_{metric}"),
                        metric::Data::Gauge(Gauge {
                            data_points: vec![number],
                        }),
                    ),
                    2 => (
                        "requests".to_string(),
                        metric::Data::Sum(Sum {
                            data_points: vec![number],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        }),
                    ),
                    _ => (
                        "latency".to_string(),
                        metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                attributes,
                                time_unix_nano,
                                count: u64::from(value),
                                sum: Some(f64::from(value)),
                                bucket_counts: vec![u64::from(value), 0],
                                explicit_bounds: vec![1.0],
                                flags,
                                ..HistogramDataPoint::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        }),
                    ),
                };
                Metric {
                    name,
                    data: Some(data),
                    ..Metric::default()
                }
            })
            .collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: text_value("trainer"),
                        ..KeyValue::default()
                    }],
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    #[test]
    fn each_counter_and_gauge_series_keeps_its_handle() {
        let alerting =
            Alerting::new(&AlertingConfig::default(), "alerting", &Registry::default()).unwrap();
        let base_ms = 1_800_000_000_000;
        // Two gauge series and a counter, then the same series again a step later.
        let points = [
            (0, 0, 0, 1, false),
            (0, 1, 0, 2, false),
            (2, 0, 0, 3, false),
        ];
        alerting.ingest(&request(&points, base_ms), base_ms);
        alerting.ingest(&request(&points, base_ms + 15_000), base_ms + 15_000);
        let engine = alerting.lock();
        assert_eq!(engine.points.handles.len(), 3);
        assert_eq!(engine.db.len(), 3);
        assert!(
            engine
                .db
                .select(None)
                .all(|(_, samples)| samples.len() == 2)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Batches of points over several pushes, with compactions between pushes that forget series (so
        /// handles go stale) and a series cap that is reached: the tsdb ends up exactly as the general path
        /// leaves it, and the same samples are dropped at the cap.
        #[test]
        fn counters_and_gauges_by_identity_store_what_the_general_path_stores(
            pushes in proptest::collection::vec(
                (proptest::collection::vec((0u8..4, 0u8..4, 0u8..4, 0u32..100, proptest::bool::weighted(0.05)), 1..12), any::<bool>()),
                1..10,
            ),
            max_series in 3usize..20,
        ) {
            let config = AlertingConfig::default();
            let alerting = Alerting::new(&config, "alerting", &Registry::default()).unwrap();
            let retention = Duration::from_secs(30);
            alerting.lock().db = Tsdb::new(retention, max_series);
            let store = Store::new(StoreSettings { max_series: config.max_series, ..StoreSettings::default() });
            let mut reference = Tsdb::new(retention, max_series);
            let mut reference_dropped = 0;
            let mut base_ms = 1_800_000_000_000;
            for (points, compact) in pushes {
                let request = request(&points, base_ms);
                alerting.ingest(&request, base_ms);
                reference_dropped += reference_ingest(&store, &mut reference, &request, base_ms);
                if compact {
                    let mut engine = alerting.lock();
                    let before = engine.db.generation();
                    engine.db.compact(base_ms + 20_000);
                    let generation = engine.db.generation();
                    engine.points.forget_moved(generation);
                    // Handles into moved series are dropped with the series' label text they keep alive.
                    prop_assert!(generation == before || engine.points.handles.is_empty());
                    reference.compact(base_ms + 20_000);
                }
                prop_assert_eq!(contents(&alerting.lock().db), contents(&reference));
                prop_assert_eq!(alerting.counters.dropped_samples.get(), reference_dropped);
                base_ms += 15_000;
            }
        }
    }
}
