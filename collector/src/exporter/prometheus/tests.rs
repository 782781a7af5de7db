use std::sync::Arc;
use std::time::Duration;

use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use vigil_proto::otlp::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point, metric, number_data_point,
    summary_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::string_attribute as attr;

use crate::prometheus::render::{Format, render};
use crate::prometheus::store::{ManualClock, Store, StoreSettings};

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "shop".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn service() -> Vec<KeyValue> {
    vec![
        attr("service.name", "checkout"),
        attr("service.namespace", "shop"),
        attr("service.instance.id", "pod-1"),
        attr("host.name", "node-7"),
    ]
}

fn number(attributes: Vec<KeyValue>, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn sum(
    name: &str,
    unit: &str,
    monotonic: bool,
    delta: bool,
    points: Vec<NumberDataPoint>,
) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("{name} help"),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: if delta {
                AggregationTemporality::Delta
            } else {
                AggregationTemporality::Cumulative
            } as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn store() -> (Store, Arc<ManualClock>) {
    store_with(StoreSettings::default())
}

fn store_with(settings: StoreSettings) -> (Store, Arc<ManualClock>) {
    let clock = ManualClock::shared();
    (Store::with_clock(settings, clock.clone()), clock)
}

fn text(store: &Store) -> String {
    String::from_utf8(render(store, Format::Text)).unwrap()
}

#[test]
fn counters_gauges_and_resource_follow_the_compatibility_rules() {
    let (store, _) = store();
    let report = store.ingest(
        &request(
            service(),
            vec![
                sum(
                    "http.server.requests",
                    "{request}",
                    true,
                    false,
                    vec![number(vec![attr("http.method", "GET")], 42.0)],
                ),
                gauge("system.cpu.utilization", "1", vec![number(vec![], 0.25)]),
                sum(
                    "queue.depth",
                    "{item}",
                    false,
                    false,
                    vec![number(vec![], 7.0)],
                ),
            ],
        ),
        &mut |_| {},
    );
    assert_eq!(report.points, 3);
    let out = text(&store);
    let series_labels = r#"http_method="GET",instance="pod-1",job="shop/checkout",otel_scope_name="shop",otel_scope_version="1.2""#;
    assert!(
        out.contains("# HELP http_server_requests_total http.server.requests help\n"),
        "{out}"
    );
    assert!(
        out.contains("# TYPE http_server_requests_total counter\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "http_server_requests_total{{{series_labels}}} 42.0\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("# TYPE system_cpu_utilization_ratio gauge\n"),
        "{out}"
    );
    assert!(
        out.contains("# TYPE queue_depth gauge\n"),
        "non-monotonic sums are gauges: {out}"
    );
    // Resource attributes other than the service's identity go to target_info, not onto every series.
    assert!(
        out.contains(r#"target_info{host_name="node-7",instance="pod-1",job="shop/checkout"} 1.0"#),
        "{out}"
    );
    assert!(!out.contains("host_name=\"node-7\",http"), "{out}");
    assert!(out.ends_with('\n'));
}

#[test]
fn promoted_resource_attributes_and_const_labels_are_on_every_series() {
    let (store, _) = store_with(StoreSettings {
        promoted_resource: crate::prometheus::store::PromotedResource::Keys(vec![
            "host.name".into(),
        ]),
        const_labels: vec![("region".into(), "eu".into())],
        target_info: false,
        scope_labels: false,
        ..StoreSettings::default()
    });
    store.ingest(
        &request(
            service(),
            vec![gauge("temp", "Cel", vec![number(vec![], 21.5)])],
        ),
        &mut |_| {},
    );
    let out = text(&store);
    assert!(
        out.contains(r#"temp_celsius{host_name="node-7",instance="pod-1",job="shop/checkout",region="eu"} 21.5"#),
        "{out}"
    );
    assert!(!out.contains("target_info"), "{out}");
}

#[test]
fn colliding_label_names_join_values_in_key_order_and_values_are_escaped() {
    let (store, _) = store();
    store.ingest(
        &request(
            vec![attr("service.name", "s")],
            vec![gauge(
                "g",
                "",
                vec![number(
                    vec![
                        attr("a.b", "2"),
                        attr("a_b", "1"),
                        attr("msg", "say \"hi\"\\\nbye"),
                    ],
                    1.0,
                )],
            )],
        ),
        &mut |_| {},
    );
    let out = text(&store);
    assert!(
        out.contains(r#"a_b="2;1""#),
        "`a.b` sorts before `a_b`: {out}"
    );
    assert!(out.contains(r#"msg="say \"hi\"\\\nbye""#), "{out}");
}

#[test]
fn attributes_named_le_or_quantile_cannot_clash_with_bucket_labels() {
    let (store, _) = store();
    store.ingest(
        &request(
            vec![attr("service.name", "s")],
            vec![Metric {
                name: "h".into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: vec![attr("le", "x"), attr("quantile", "y")],
                        count: 1,
                        bucket_counts: vec![1, 0],
                        explicit_bounds: vec![1.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            }],
        ),
        &mut |_| {},
    );
    let out = text(&store);
    assert!(out.contains(r#"h_bucket{job="s",key_le="x",key_quantile="y",otel_scope_name="shop",otel_scope_version="1.2",le="1"} 1.0"#), "{out}");
    assert_eq!(
        out.matches(",le=\"").count(),
        2,
        "one `le` per bucket line: {out}"
    );
}

#[test]
fn delta_sums_and_histograms_are_accumulated() {
    let (store, _) = store();
    for value in [5.0, 3.0] {
        store.ingest(
            &request(
                service(),
                vec![sum(
                    "jobs.done",
                    "",
                    true,
                    true,
                    vec![number(vec![], value)],
                )],
            ),
            &mut |_| {},
        );
    }
    let histogram = |counts: Vec<u64>, total: f64| Metric {
        name: "latency".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                count: counts.iter().sum(),
                sum: Some(total),
                bucket_counts: counts,
                explicit_bounds: vec![0.1, 1.0],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    };
    store.ingest(
        &request(service(), vec![histogram(vec![1, 2, 0], 1.5)]),
        &mut |_| {},
    );
    store.ingest(
        &request(service(), vec![histogram(vec![0, 1, 1], 3.0)]),
        &mut |_| {},
    );
    let out = text(&store);
    assert!(out.contains("jobs_done_total{"), "{out}");
    assert!(out.contains("} 8.0\n"), "5 + 3: {out}");
    let labels =
        r#"instance="pod-1",job="shop/checkout",otel_scope_name="shop",otel_scope_version="1.2""#;
    for line in [
        format!("latency_seconds_bucket{{{labels},le=\"0.1\"}} 1.0\n"),
        format!("latency_seconds_bucket{{{labels},le=\"1\"}} 4.0\n"),
        format!("latency_seconds_bucket{{{labels},le=\"+Inf\"}} 5.0\n"),
        format!("latency_seconds_sum{{{labels}}} 4.5\n"),
        format!("latency_seconds_count{{{labels}}} 5.0\n"),
    ] {
        assert!(out.contains(&line), "missing {line}in {out}");
    }
}

#[test]
fn exponential_histograms_become_classic_buckets_at_their_boundaries() {
    let (store, _) = store();
    let point = ExponentialHistogramDataPoint {
        scale: 0,
        zero_count: 1,
        count: 7,
        sum: Some(14.0),
        positive: Some(exponential_histogram_data_point::Buckets {
            offset: 0,
            bucket_counts: vec![1, 2],
        }),
        negative: Some(exponential_histogram_data_point::Buckets {
            offset: 1,
            bucket_counts: vec![3],
        }),
        ..Default::default()
    };
    store.ingest(
        &request(
            vec![attr("service.name", "s")],
            vec![Metric {
                name: "size".into(),
                unit: "By".into(),
                data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![point],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            }],
        ),
        &mut |_| {},
    );
    let out = text(&store);
    // Scale 0: base 2. Negative index 1 holds [-4, -2): le=-2 gets 3. Zero bucket: le=0 gets 1 more. Positive
    // index 0 holds (1, 2], index 1 holds (2, 4].
    let labels = r#"job="s",otel_scope_name="shop",otel_scope_version="1.2""#;
    for line in [
        format!("size_bytes_bucket{{{labels},le=\"-2\"}} 3.0\n"),
        format!("size_bytes_bucket{{{labels},le=\"0\"}} 4.0\n"),
        format!("size_bytes_bucket{{{labels},le=\"2\"}} 5.0\n"),
        format!("size_bytes_bucket{{{labels},le=\"4\"}} 7.0\n"),
        format!("size_bytes_bucket{{{labels},le=\"+Inf\"}} 7.0\n"),
        format!("size_bytes_count{{{labels}}} 7.0\n"),
    ] {
        assert!(out.contains(&line), "missing {line}in {out}");
    }
}

#[test]
fn fine_exponential_histograms_are_downscaled_to_a_bounded_bucket_count() {
    let e = crate::prometheus::store::ExpHistogram {
        scale: 8,
        zero_count: 0,
        zero_threshold: 0.0,
        positive: crate::prometheus::store::ExpBuckets {
            offset: 0,
            counts: vec![1; 1000],
        },
        negative: crate::prometheus::store::ExpBuckets::default(),
        sum: 1.0,
        count: 1000,
    };
    let classic = crate::prometheus::render::to_classic(&e);
    assert!(classic.bounds.len() <= super::render::MAX_EXPONENTIAL_BUCKETS + 1);
    assert_eq!(classic.counts.iter().sum::<u64>(), 1000);
    assert!(classic.bounds.windows(2).all(|w| w[0] < w[1]));
    // 1000 buckets at scale 8 end at 2^(1000/256); the last bound must cover it.
    assert!(*classic.bounds.last().unwrap() >= (1000.0f64 / 256.0).exp2() * 0.999);
}

#[test]
fn summaries_have_quantiles_sum_and_count() {
    let (store, _) = store();
    store.ingest(
        &request(
            vec![attr("service.name", "s")],
            vec![Metric {
                name: "rpc.duration".into(),
                unit: "s".into(),
                data: Some(metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        count: 10,
                        sum: 2.5,
                        quantile_values: vec![summary_data_point::ValueAtQuantile {
                            quantile: 0.99,
                            value: 0.9,
                        }],
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            }],
        ),
        &mut |_| {},
    );
    let out = text(&store);
    assert!(
        out.contains("# TYPE rpc_duration_seconds summary\n"),
        "{out}"
    );
    assert!(out.contains(r#"quantile="0.99"} 0.9"#), "{out}");
    assert!(out.contains("rpc_duration_seconds_count{"), "{out}");
}

#[test]
fn series_expire_after_metric_expiration_on_the_injected_clock() {
    let (store, clock) = store();
    store.ingest(
        &request(service(), vec![gauge("old", "", vec![number(vec![], 1.0)])]),
        &mut |_| {},
    );
    clock.advance(Duration::from_secs(240));
    store.ingest(
        &request(
            vec![attr("service.name", "fresh")],
            vec![gauge("new", "", vec![number(vec![], 2.0)])],
        ),
        &mut |_| {},
    );
    clock.advance(Duration::from_secs(61));
    let mut ended = Vec::new();
    store.expire(&mut |c| ended.push(c.name.to_string()));
    ended.sort();
    assert_eq!(
        ended,
        ["old", "target_info"],
        "only what was last updated 5m+ ago"
    );
    let out = text(&store);
    assert!(!out.contains("old{"), "{out}");
    assert!(out.contains("new{"), "{out}");
    assert_eq!(store.series_count(), 1);
}

#[test]
fn the_series_cap_drops_new_series_and_counts_them() {
    let (store, _) = store_with(StoreSettings {
        max_series: 3,
        target_info: false,
        ..StoreSettings::default()
    });
    let points = (0..5)
        .map(|i| number(vec![attr("user", &i.to_string())], 1.0))
        .collect();
    let report = store.ingest(
        &request(
            vec![attr("service.name", "s")],
            vec![gauge("logins", "", points)],
        ),
        &mut |_| {},
    );
    assert_eq!((report.points, report.overflow), (3, 2));
    assert_eq!(store.series_count(), 3);
    assert_eq!(store.overflow_total(), 2);
    // Existing series still update at the cap.
    let report = store.ingest(
        &request(
            vec![attr("service.name", "s")],
            vec![gauge(
                "logins",
                "",
                vec![number(vec![attr("user", "0")], 9.0)],
            )],
        ),
        &mut |_| {},
    );
    assert_eq!((report.points, report.overflow), (1, 0));
    assert!(text(&store).contains(r#"user="0"} 9.0"#));
}

#[test]
fn no_recorded_value_removes_the_series() {
    let (store, _) = store();
    let req = |flags| {
        let mut point = number(vec![], 1.0);
        point.flags = flags;
        request(
            vec![attr("service.name", "s")],
            vec![gauge("up", "", vec![point])],
        )
    };
    store.ingest(&req(0), &mut |_| {});
    assert!(text(&store).contains("up{"));
    let mut ended = Vec::new();
    store.ingest(&req(1), &mut |c| {
        if c.name == "up" {
            ended.push(c.ended)
        }
    });
    assert!(!text(&store).contains("up{"));
    assert_eq!(ended, [true], "remote write gets to send a stale marker");
}

#[test]
fn type_conflicts_keep_the_first_type_and_count_the_rest() {
    let (store, _) = store();
    store.ingest(
        &request(service(), vec![gauge("x", "", vec![number(vec![], 1.0)])]),
        &mut |_| {},
    );
    let report = store.ingest(
        &request(
            service(),
            vec![Metric {
                name: "x".into(),
                data: Some(metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint::default()],
                })),
                ..Default::default()
            }],
        ),
        &mut |_| {},
    );
    assert_eq!(report.invalid, 1);
    assert!(text(&store).contains("# TYPE x gauge"));
}

#[test]
fn open_metrics_output_names_counter_families_without_total_and_ends_with_eof() {
    let (store, _) = store();
    store.ingest(
        &request(
            service(),
            vec![sum("requests", "", true, false, vec![number(vec![], 3.0)])],
        ),
        &mut |_| {},
    );
    let out = String::from_utf8(render(&store, Format::OpenMetrics)).unwrap();
    assert!(out.contains("# TYPE requests counter\n"), "{out}");
    assert!(out.contains("\nrequests_total{"), "{out}");
    assert!(out.contains("# TYPE target info\n"), "{out}");
    assert!(out.ends_with("# EOF\n"), "{out}");
}

#[test]
fn content_negotiation_prefers_open_metrics_only_when_asked() {
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(
        Format::negotiate(Some(prometheus), true),
        Format::OpenMetrics
    );
    assert_eq!(Format::negotiate(Some(prometheus), false), Format::Text);
    assert_eq!(
        Format::negotiate(Some("text/plain;version=0.0.4"), true),
        Format::Text
    );
    assert_eq!(Format::negotiate(None, true), Format::Text);
    assert_eq!(
        Format::negotiate(
            Some("application/openmetrics-text;q=0.1,text/plain;q=0.9"),
            true
        ),
        Format::Text
    );
    assert!(super::accepts_gzip("gzip, deflate"));
    assert!(!super::accepts_gzip("gzip;q=0, identity"));
    assert!(!super::accepts_gzip("identity"));
}

#[test]
fn concurrent_ingest_scrape_and_expiry_lose_no_series_and_keep_the_count_exact() {
    let (store, clock) = store();
    let store = Arc::new(store);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..2_000 {
                let points = vec![number(vec![attr("n", &(i % 50).to_string())], i as f64)];
                store.ingest(
                    &request(service(), vec![gauge("racy", "", points)]),
                    &mut |_| {},
                );
            }
        })
    };
    while !writer.is_finished() {
        clock.advance(Duration::from_secs(301));
        store.expire(&mut |_| {});
        let _ = render(&store, Format::Text);
    }
    writer.join().unwrap();
    // One more point after the last sweep: it must land in a live family, not in one a sweep took out.
    store.ingest(
        &request(
            service(),
            vec![gauge(
                "racy",
                "",
                vec![number(vec![attr("n", "last")], 1.0)],
            )],
        ),
        &mut |_| {},
    );
    let mut visible = 0;
    store.for_each_family(|_, family| visible += family.series.len());
    assert_eq!(visible, store.series_count());
    assert!(text(&store).contains(r#"n="last""#));
}

#[test]
fn exemplars_reach_open_metrics_counters_and_buckets_but_not_text_or_gauges() {
    use vigil_proto::otlp::metrics::v1::{Exemplar, exemplar};
    let exemplar = |value: f64| Exemplar {
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        time_unix_nano: 1_700_000_000_500_000_000,
        value: Some(exemplar::Value::AsDouble(value)),
        ..Default::default()
    };
    let (store, _) = store();
    let mut counter = number(vec![], 3.0);
    counter.exemplars = vec![exemplar(1.0)];
    let mut level = number(vec![], 7.0);
    level.exemplars = vec![exemplar(7.0)];
    store.ingest(
        &request(
            vec![attr("service.name", "s")],
            vec![
                sum("hits", "", true, false, vec![counter]),
                gauge("level", "", vec![level]),
                Metric {
                    name: "lat".into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: vec![HistogramDataPoint {
                            count: 2,
                            sum: Some(2.5),
                            bucket_counts: vec![1, 1, 0],
                            explicit_bounds: vec![1.0, 5.0],
                            exemplars: vec![exemplar(2.0)],
                            ..Default::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                },
            ],
        ),
        &mut |_| {},
    );
    let om = String::from_utf8(render(&store, Format::OpenMetrics)).unwrap();
    let tail = format!(
        r#" # {{trace_id="{}",span_id="{}"}}"#,
        "ab".repeat(16),
        "cd".repeat(8)
    );
    assert!(
        om.contains(&format!("}} 3.0{tail} 1.0 1700000000.5\n")),
        "{om}"
    );
    assert!(
        om.contains(&format!("le=\"5.0\"}} 2.0{tail} 2.0 1700000000.5\n")),
        "2.0 falls in (1, 5]: {om}"
    );
    assert_eq!(om.matches(" # {").count(), 2, "not on the gauge: {om}");
    assert!(
        !text(&store).contains(" # {"),
        "text 0.0.4 has no exemplars"
    );
}
