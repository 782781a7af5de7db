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

/// The reference for [`Alerting::ingest`]: the request decoded, the metrics `wanted` names kept, and every
/// sample of every translated point stored through the store's general path (labels built, sorted and looked
/// up); `target_info` only when a rule reads it.
fn reference_ingest(
    store: &Store,
    wanted: &filter::Wanted,
    db: &mut Tsdb,
    request: &ExportMetricsServiceRequest,
    now: i64,
) -> u64 {
    let mut request = request.clone();
    for resource in &mut request.resource_metrics {
        for scope in &mut resource.scope_metrics {
            scope.metrics.retain(|m| wanted.wants(&m.name, &m.unit));
        }
    }
    let keeps_target_info = wanted.wants("target_info", "");
    let mut over_cap = 0;
    store.ingest(&request, &mut |changed| {
        if changed.ended || (changed.name == "target_info" && !keeps_target_info) {
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

mod fast_path {
    use proptest::prelude::*;
    use vigil_proto::otlp::common::v1::InstrumentationScope;
    use vigil_proto::otlp::metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics, Sum, metric,
    };

    use super::*;

    /// One data point: metric (0–6: gauges in doubles, in integers and in bytes, a counter, a non-monotonic
    /// sum, a delta counter, a histogram), series (0–3), resource (0–2), time step, value, whether its two
    /// attributes are sent in the other order, and whether it says "no recorded value".
    type Point = (u8, u8, u8, u8, u32, bool, bool);

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: text_value(value),
            ..KeyValue::default()
        }
    }

    fn resource(which: u8) -> Option<Resource> {
        let attributes = match which {
            0 => vec![attribute("service.name", "trainer")],
            // With an attribute of its own, it has a `target_info` series.
            1 => vec![
                attribute("service.name", "api"),
                attribute("service.instance.id", "i-1"),
                attribute("host.name", "gpu-7"),
            ],
            _ => return None,
        };
        Some(Resource {
            attributes,
            ..Resource::default()
        })
    }

    /// A request with one entry per point (resources repeat, so entries share what they translate to).
    fn request(points: &[Point], base_ms: i64) -> ExportMetricsServiceRequest {
        let resource_metrics = points
            .iter()
            .map(
                |&(metric, series, resource_of, step, value, swapped, ended)| {
                    let mut attributes = vec![
                        attribute("device", &format!("d{series}")),
                        attribute("host", "h"),
                    ];
                    if swapped {
                        attributes.reverse();
                    }
                    let time_unix_nano = (base_ms + i64::from(step) * 5_000) as u64 * 1_000_000;
                    let flags = u32::from(ended);
                    let number = NumberDataPoint {
                        attributes: attributes.clone(),
                        time_unix_nano,
                        value: Some(if metric == 1 {
                            number_data_point::Value::AsInt(i64::from(value))
                        } else {
                            number_data_point::Value::AsDouble(f64::from(value))
                        }),
                        flags,
                        ..NumberDataPoint::default()
                    };
                    let sum = |temporality: AggregationTemporality, monotonic: bool| {
                        metric::Data::Sum(Sum {
                            data_points: vec![number.clone()],
                            aggregation_temporality: temporality as i32,
                            is_monotonic: monotonic,
                        })
                    };
                    let gauge = metric::Data::Gauge(Gauge {
                        data_points: vec![number.clone()],
                    });
                    let (name, unit, data) = match metric {
                        0 => ("gauge_0", "", gauge),
                        1 => ("gauge_1", "", gauge),
                        2 => ("memory", "By", gauge),
                        3 => (
                            "requests",
                            "",
                            sum(AggregationTemporality::Cumulative, true),
                        ),
                        4 => (
                            "queue.depth",
                            "",
                            sum(AggregationTemporality::Cumulative, false),
                        ),
                        5 => ("jobs", "", sum(AggregationTemporality::Delta, true)),
                        _ => (
                            "latency",
                            "s",
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
                    ResourceMetrics {
                        resource: resource(resource_of),
                        scope_metrics: vec![ScopeMetrics {
                            scope: (series % 2 == 0).then(|| InstrumentationScope {
                                name: "train".into(),
                                version: "1.0".into(),
                                ..InstrumentationScope::default()
                            }),
                            metrics: vec![Metric {
                                name: name.into(),
                                unit: unit.into(),
                                data: Some(data),
                                ..Metric::default()
                            }],
                            ..ScopeMetrics::default()
                        }],
                        ..ResourceMetrics::default()
                    }
                },
            )
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }

    /// `request` with entries of one resource merged, scopes of one scope merged and the points of one metric in
    /// one metric: several points per metric and several metrics per scope, in the order first seen.
    fn grouped(request: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest {
        let mut out: Vec<ResourceMetrics> = Vec::new();
        for entry in request.resource_metrics {
            let at = match out.iter().position(|e| e.resource == entry.resource) {
                Some(at) => at,
                None => {
                    out.push(ResourceMetrics {
                        resource: entry.resource.clone(),
                        ..ResourceMetrics::default()
                    });
                    out.len() - 1
                }
            };
            let scopes = &mut out[at].scope_metrics;
            for scope_metrics in entry.scope_metrics {
                let at = match scopes.iter().position(|s| s.scope == scope_metrics.scope) {
                    Some(at) => at,
                    None => {
                        scopes.push(ScopeMetrics {
                            scope: scope_metrics.scope.clone(),
                            ..ScopeMetrics::default()
                        });
                        scopes.len() - 1
                    }
                };
                let metrics = &mut scopes[at].metrics;
                for metric in scope_metrics.metrics {
                    let same = metrics
                        .iter_mut()
                        .find(|m| m.name == metric.name && m.unit == metric.unit);
                    match (same.and_then(|m| m.data.as_mut()), metric.data.clone()) {
                        (Some(metric::Data::Gauge(a)), Some(metric::Data::Gauge(b))) => {
                            a.data_points.extend(b.data_points)
                        }
                        (Some(metric::Data::Sum(a)), Some(metric::Data::Sum(b))) => {
                            a.data_points.extend(b.data_points)
                        }
                        (Some(metric::Data::Histogram(a)), Some(metric::Data::Histogram(b))) => {
                            a.data_points.extend(b.data_points)
                        }
                        _ => metrics.push(metric),
                    }
                }
            }
        }
        ExportMetricsServiceRequest {
            resource_metrics: out,
        }
    }

    /// A connector whose rules read `queries` (parsed), with its tsdb replaced by `db`.
    fn connector(queries: &[&str], db: Tsdb) -> Alerting {
        let mut alerting =
            Alerting::new(&AlertingConfig::default(), "alerting", &Registry::default()).unwrap();
        let exprs: Vec<_> = queries.iter().map(|q| promql::parse(q).unwrap()).collect();
        alerting.wanted = filter::Wanted::new(exprs.iter(), "", true);
        alerting.lock().db = db;
        alerting
    }

    fn ingest(alerting: &Alerting, request: &ExportMetricsServiceRequest, now: i64) {
        alerting.ingest(&request.encode_to_vec(), now).unwrap();
    }

    #[test]
    fn each_attribute_set_is_translated_once() {
        let alerting = connector(
            &["{__name__=~\".+\"}"],
            Tsdb::new(Duration::from_secs(3600), 100),
        );
        let base_ms = 1_800_000_000_000;
        // Two gauge series and a counter, the first series also with its attributes in the other order.
        let points = [
            (0, 0, 0, 0, 1, false, false),
            (0, 1, 0, 0, 2, false, false),
            (3, 0, 0, 0, 3, false, false),
            (0, 0, 0, 0, 1, true, false),
        ];
        ingest(&alerting, &request(&points, base_ms), base_ms);
        ingest(
            &alerting,
            &request(&points, base_ms + 15_000),
            base_ms + 15_000,
        );
        let engine = alerting.lock();
        assert_eq!(
            engine.numbers.len(),
            4,
            "one entry per attribute set as sent"
        );
        assert_eq!(engine.db.len(), 3, "the two orders are one series");
        assert!(
            engine
                .db
                .select(None)
                .all(|(_, samples)| samples.len() == 2)
        );
    }

    #[test]
    fn metrics_no_rule_reads_are_not_kept() {
        let alerting = connector(&["gauge_0 > 1"], Tsdb::new(Duration::from_secs(3600), 100));
        let base_ms = 1_800_000_000_000;
        let points = [(0, 0, 1, 0, 1, false, false), (3, 0, 1, 0, 3, false, false)];
        ingest(&alerting, &request(&points, base_ms), base_ms);
        let engine = alerting.lock();
        let names: Vec<_> = engine
            .db
            .select(None)
            .filter_map(|(l, _)| label(l, NAME))
            .collect();
        assert_eq!(
            names,
            ["gauge_0"],
            "neither the counter nor target_info is read by a rule"
        );
    }

    fn metric_of(name: &str, data: metric::Data) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(0),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: name.into(),
                        data: Some(data),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    /// Between a gauge and a histogram that map to one Prometheus name, the one that keeps coming keeps it, across
    /// the store's expiry sweeps; once it stops for `metric_expiration`, the other may take the name.
    #[test]
    fn a_type_conflict_is_won_by_the_metric_that_keeps_coming() {
        let mut alerting = connector(
            &["foo > 0", "foo_bucket > 0"],
            Tsdb::new(Duration::from_secs(3600), 100),
        );
        let clock = crate::prometheus::store::ManualClock::shared();
        alerting.store = Store::with_clock(StoreSettings::default(), clock.clone());
        let base_ms = 1_800_000_000_000;
        let at = |step: i64| (base_ms + step * 1_000) as u64 * 1_000_000;
        let gauge = |step| {
            metric_of(
                "foo",
                metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        time_unix_nano: at(step),
                        value: Some(number_data_point::Value::AsDouble(1.0)),
                        ..NumberDataPoint::default()
                    }],
                }),
            )
        };
        let histogram = |step| {
            metric_of(
                "foo",
                metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        time_unix_nano: at(step),
                        count: 1,
                        bucket_counts: vec![1],
                        ..HistogramDataPoint::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            )
        };
        let buckets = |alerting: &Alerting| alerting.lock().db.select(Some("foo_bucket")).count();
        ingest(&alerting, &gauge(0), base_ms);
        ingest(&alerting, &histogram(0), base_ms);
        assert_eq!(buckets(&alerting), 0, "the gauge came first");
        // Past the expiry, with sweeps: the gauge still comes, so it keeps the name.
        clock.advance(Duration::from_secs(301));
        ingest(&alerting, &gauge(301), base_ms + 301_000);
        ingest(&alerting, &histogram(301), base_ms + 301_000);
        assert_eq!(buckets(&alerting), 0, "the gauge keeps coming");
        // The gauge stops: once its claim expires (exactly `metric_expiration` after the last) and a sweep takes
        // the family out, the histogram gets the name.
        clock.advance(Duration::from_secs(300));
        ingest(&alerting, &histogram(602), base_ms + 602_000);
        ingest(&alerting, &histogram(603), base_ms + 603_000);
        assert_eq!(buckets(&alerting), 1);
        ingest(&alerting, &gauge(604), base_ms + 604_000);
        let engine = alerting.lock();
        let gauges: Vec<_> = engine
            .db
            .select(Some("foo"))
            .map(|(_, s)| s.len())
            .collect();
        assert_eq!(
            gauges,
            [2],
            "the gauge's points after it lost the name are dropped"
        );
    }

    const MAX_BYTES_FOR_TESTS: usize = 1 << 20;

    /// `target_info` is the store's own series: a metric of that name is dropped as a type conflict, and the
    /// resource's real `target_info` is kept.
    #[test]
    fn a_metric_named_target_info_does_not_take_the_name() {
        let alerting = connector(&["target_info"], Tsdb::new(Duration::from_secs(3600), 100));
        let base_ms = 1_800_000_000_000;
        let mut request = metric_of(
            "target_info",
            metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    attributes: vec![attribute("fake", "yes")],
                    value: Some(number_data_point::Value::AsDouble(7.0)),
                    ..NumberDataPoint::default()
                }],
            }),
        );
        request.resource_metrics[0].resource = resource(1);
        ingest(&alerting, &request, base_ms);
        let engine = alerting.lock();
        let stored: Vec<_> = engine.db.select(Some("target_info")).collect();
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(label(stored[0].0, "host_name"), Some("gpu-7"));
        assert_eq!(stored[0].1.back().map(|s| s.1), Some(1.0));
    }

    #[test]
    fn the_caches_are_dropped_when_they_pass_their_size() {
        let alerting = connector(&["gauge_0 > 0"], Tsdb::new(Duration::from_secs(3600), 100));
        let base_ms = 1_800_000_000_000;
        ingest(
            &alerting,
            &request(&[(0, 0, 0, 0, 1, false, false)], base_ms),
            base_ms,
        );
        let one = alerting.lock().numbers.size();
        assert!(one > 0);
        ingest(
            &alerting,
            &request(&[(0, 1, 0, 0, 1, false, false)], base_ms),
            base_ms,
        );
        assert_eq!(
            alerting.lock().numbers.len(),
            2,
            "under the bound, entries are kept"
        );
        alerting.lock().numbers.set_max_bytes(one);
        ingest(
            &alerting,
            &request(&[(0, 2, 0, 0, 1, false, false)], base_ms),
            base_ms,
        );
        assert_eq!(
            alerting.lock().numbers.len(),
            1,
            "past the bound, everything was dropped first"
        );
        assert_eq!(alerting.lock().db.len(), 3, "the samples are all stored");
        // A compaction that forgets series makes every handle stale: the caches start again.
        alerting.lock().numbers.set_max_bytes(MAX_BYTES_FOR_TESTS);
        ingest(
            &alerting,
            &request(&[(0, 0, 0, 0, 1, false, false)], base_ms),
            base_ms,
        );
        ingest(
            &alerting,
            &request(&[(0, 1, 0, 0, 1, false, false)], base_ms + 600_000),
            base_ms + 600_000,
        );
        assert_eq!(alerting.lock().numbers.len(), 3);
        alerting.lock().db.compact(base_ms + 3_600_000 + 1);
        ingest(
            &alerting,
            &request(&[(0, 3, 0, 0, 1, false, false)], base_ms + 600_000),
            base_ms + 600_000,
        );
        assert_eq!(
            alerting.lock().numbers.len(),
            1,
            "entries of moved series were dropped"
        );
    }

    #[test]
    fn while_restored_alerts_wait_the_sources_of_stored_samples_are_noted() {
        let alerting = connector(
            &["gauge_0 > 1", "latency_seconds_bucket > 1"],
            Tsdb::new(Duration::from_secs(3600), 100),
        );
        let base_ms = 1_800_000_000_000;
        alerting.lock().hold_until = base_ms + 60_000;
        // A read gauge from the `api` resource, an unread counter from `trainer`, a read histogram (the general
        // path) from a resource without a service.
        let points = [
            (0, 0, 1, 0, 1, false, false),
            (3, 0, 0, 0, 1, false, false),
            (6, 0, 2, 0, 1, false, false),
        ];
        ingest(&alerting, &request(&points, base_ms), base_ms);
        let reported = alerting.lock().reported.clone();
        let expected = [("api", "i-1"), ("", "")].map(|(j, i)| (j.to_string(), i.to_string()));
        assert_eq!(reported, expected.into());
        // Once the hold is over, nothing more is noted.
        let points = [(0, 0, 0, 0, 1, false, false)];
        ingest(
            &alerting,
            &request(&points, base_ms + 60_000),
            base_ms + 60_000,
        );
        assert_eq!(alerting.lock().reported.len(), 2);
    }

    #[test]
    fn a_point_whose_attributes_are_split_is_decoded_whole() {
        use vigil_proto::otlp::wire::{nested, put_bytes};
        let alerting = connector(&["gauge_0 > 1"], Tsdb::new(Duration::from_secs(3600), 100));
        let base_ms = 1_800_000_000_000;
        let mut point = NumberDataPoint {
            attributes: vec![attribute("device", "d0")],
            time_unix_nano: base_ms as u64 * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(4.0)),
            ..NumberDataPoint::default()
        }
        .encode_to_vec();
        put_bytes(&mut point, 7, &attribute("rack", "r2").encode_to_vec());
        let mut metric = Vec::new();
        put_bytes(&mut metric, 1, b"gauge_0");
        metric.extend(nested(&[5, 1], &point));
        alerting
            .ingest(&nested(&[1, 2, 2], &metric), base_ms)
            .unwrap();
        let engine = alerting.lock();
        let stored: Vec<_> = engine.db.select(Some("gauge_0")).collect();
        assert_eq!(stored.len(), 1);
        assert_eq!(label(stored[0].0, "device"), Some("d0"));
        assert_eq!(label(stored[0].0, "rack"), Some("r2"));
        assert_eq!(stored[0].1.back(), Some(&(base_ms, 4.0)));
    }

    #[test]
    fn a_batch_that_does_not_read_is_refused_as_undecodable() {
        let alerting = connector(&["gauge_0 > 1"], Tsdb::new(Duration::from_secs(3600), 100));
        // An entry whose length runs past the end.
        let batch = Batch::new(Signal::Metrics, Bytes::from_static(&[0x0a, 0x05, 0x12]), 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result = runtime.block_on(alerting.consume(&batch));
        assert!(
            matches!(&result, Err(ExportError::Undecodable { message }) if message.contains("OTLP metrics")),
            "{:?}",
            result.err()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Batches of points over several pushes, with compactions between pushes that forget series (so
        /// handles go stale), a series cap that is reached, and rules that read some metrics or all of them:
        /// the tsdb ends up exactly as the general path leaves it, and the same samples are dropped at the cap.
        #[test]
        fn fast_and_general_paths_store_the_same(
            pushes in proptest::collection::vec(
                (proptest::collection::vec(
                    (0u8..7, 0u8..4, 0u8..3, 0u8..4, 0u32..100, any::<bool>(), proptest::bool::weighted(0.05)),
                    1..12,
                ), any::<bool>()),
                1..10,
            ),
            max_series in 3usize..20,
            some in any::<bool>(),
            group in any::<bool>(),
        ) {
            let queries: &[&str] = if some {
                &["gauge_1 > 0", "rate(requests_total[5m]) > 0", "target_info", "latency_seconds_bucket"]
            } else {
                &["{__name__=~\".+\"}"]
            };
            let retention = Duration::from_secs(30);
            let alerting = connector(queries, Tsdb::new(retention, max_series));
            let store = Store::new(StoreSettings {
                max_series: AlertingConfig::default().max_series,
                ..StoreSettings::default()
            });
            let mut reference = Tsdb::new(retention, max_series);
            let mut reference_dropped = 0;
            let mut base_ms = 1_800_000_000_000;
            for (points, compact) in pushes {
                let request = match group {
                    true => grouped(request(&points, base_ms)),
                    false => request(&points, base_ms),
                };
                ingest(&alerting, &request, base_ms);
                reference_dropped +=
                    reference_ingest(&store, &alerting.wanted, &mut reference, &request, base_ms);
                if compact {
                    alerting.lock().db.compact(base_ms + 20_000);
                    reference.compact(base_ms + 20_000);
                }
                prop_assert_eq!(contents(&alerting.lock().db), contents(&reference));
                prop_assert_eq!(alerting.counters.dropped_samples.get(), reference_dropped);
                base_ms += 15_000;
            }
        }
    }
}
