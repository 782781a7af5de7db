use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::KeyValue;
use vigil_proto::otlp::metrics::v1::metric;
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::string_attribute as attr;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};

use std::borrow::Cow;
use std::time::Instant;

use proptest::prelude::*;
use prost::Message as _;
use vigil_proto::otlp::common::v1::{AnyValue, any_value};

use super::{Dimension, KeyRef, SpanExemplar, SpanMetrics, SpanMetricsConfig, unix_nano};
use crate::prometheus::store::value_text;
use crate::telemetry::Registry;

/// Counts `request` the way the collector does: encoded, read in place.
fn add(connector: &SpanMetrics, request: &ExportTraceServiceRequest) {
    connector
        .add(&request.encode_to_vec())
        .expect("a valid request reads");
}

fn find(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| value_text(kv.value.as_ref()))
}

/// The reference for [`SpanMetrics::add`]: the request decoded by `prost`, its spans counted through the same
/// series table.
fn add_decoded(connector: &SpanMetrics, request: &ExportTraceServiceRequest) {
    let now = (Instant::now(), unix_nano());
    let per_second = connector.per_second();
    let mut series = connector.series.lock().unwrap();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let service = find(resource, "service.name").unwrap_or_default();
        let namespace = find(resource, "service.namespace").unwrap_or_default();
        for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
            let extra: Vec<Option<Cow<'_, str>>> = connector
                .config
                .dimensions
                .iter()
                .map(|d| {
                    find(&span.attributes, &d.name)
                        .or_else(|| find(resource, &d.name))
                        .or_else(|| d.default.clone())
                        .map(Cow::Owned)
                })
                .collect();
            let key = KeyRef {
                service: &service,
                namespace: &namespace,
                span_name: &span.name,
                kind: span.kind,
                status: span.status.as_ref().map(|s| s.code).unwrap_or(0),
                extra: &extra,
            };
            let duration = span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano) as f64
                / 1e9
                * per_second;
            let exemplar = SpanExemplar::of(
                &span.trace_id,
                &span.span_id,
                span.end_time_unix_nano,
                duration,
            );
            let hash = key.hash(&super::resource_hasher(
                &connector.hasher,
                &service,
                &namespace,
            ));
            connector.record(&mut series, &key, hash, duration, exemplar, now);
        }
    }
}

fn span(name: &str, millis: u64, error: bool, attributes: Vec<KeyValue>) -> Span {
    Span {
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + millis * 1_000_000,
        status: error.then(|| Status {
            code: status::StatusCode::Error as i32,
            ..Default::default()
        }),
        attributes,
        ..Default::default()
    }
}

/// A connector with the default config.
fn default_connector() -> SpanMetrics {
    SpanMetrics::new(
        &SpanMetricsConfig::default(),
        "spanmetrics",
        &Registry::default(),
    )
}

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// (attributes as `k=v` strings, calls) of every calls data point.
fn calls(connector: &SpanMetrics) -> Vec<(Vec<String>, i64)> {
    let (request, _) = connector.snapshot().expect("series");
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                if let Some(metric::Data::Sum(sum)) = &m.data {
                    assert_eq!(m.name, "traces.span.metrics.calls");
                    for p in &sum.data_points {
                        let attributes = p
                            .attributes
                            .iter()
                            .map(|kv| format!("{}={}", kv.key, value_text(kv.value.as_ref())))
                            .collect();
                        let value = match p.value {
                            Some(
                                vigil_proto::otlp::metrics::v1::number_data_point::Value::AsInt(v),
                            ) => v,
                            _ => panic!("calls are integers"),
                        };
                        out.push((attributes, value));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn counts_calls_and_errors_per_service_span_kind_and_status() {
    let connector = default_connector();
    add(
        &connector,
        &request(
            "checkout",
            vec![
                span("GET /cart", 5, false, vec![]),
                span("GET /cart", 7, false, vec![]),
                span("GET /cart", 900, true, vec![]),
            ],
        ),
    );
    add(
        &connector,
        &request("search", vec![span("query", 1, false, vec![])]),
    );
    let ok = |service: &str, name: &str, status: &str| {
        vec![
            format!("service.name={service}"),
            format!("span.name={name}"),
            "span.kind=SPAN_KIND_SERVER".to_string(),
            format!("status.code={status}"),
        ]
    };
    assert_eq!(
        calls(&connector),
        [
            (ok("checkout", "GET /cart", "STATUS_CODE_ERROR"), 1),
            (ok("checkout", "GET /cart", "STATUS_CODE_UNSET"), 2),
            (ok("search", "query", "STATUS_CODE_UNSET"), 1),
        ]
    );
}

#[test]
fn durations_land_in_second_buckets_and_resources_carry_the_service() {
    let connector = default_connector();
    add(
        &connector,
        &request(
            "api",
            vec![span("op", 3, false, vec![]), span("op", 120, false, vec![])],
        ),
    );
    let (request, points) = connector.snapshot().unwrap();
    assert_eq!(points, 2);
    let rm = &request.resource_metrics[0];
    assert_eq!(
        value_text(rm.resource.as_ref().unwrap().attributes[0].value.as_ref()),
        "api"
    );
    let duration = &rm.scope_metrics[0].metrics[1];
    assert_eq!(
        (duration.name.as_str(), duration.unit.as_str()),
        ("traces.span.metrics.duration", "s")
    );
    let Some(metric::Data::Histogram(h)) = &duration.data else {
        panic!("histogram")
    };
    let p = &h.data_points[0];
    assert_eq!(p.count, 2);
    assert!((p.sum.unwrap() - 0.123).abs() < 1e-9);
    // 3 ms falls in (0.002, 0.004], 120 ms in (0.1, 0.2].
    let bucket =
        |bound: f64| p.bucket_counts[p.explicit_bounds.iter().position(|b| *b == bound).unwrap()];
    assert_eq!((bucket(0.004), bucket(0.2)), (1, 1));
}

#[test]
fn extra_dimensions_use_span_then_resource_attributes_then_the_default() {
    let config = SpanMetricsConfig {
        dimensions: vec![Dimension {
            name: "http.request.method".into(),
            default: Some("UNKNOWN".into()),
        }],
        ..SpanMetricsConfig::default()
    };
    let connector = SpanMetrics::new(&config, "spanmetrics", &Registry::default());
    add(
        &connector,
        &request(
            "api",
            vec![
                span("op", 1, false, vec![attr("http.request.method", "POST")]),
                span("op", 1, false, vec![]),
            ],
        ),
    );
    let methods: Vec<String> = calls(&connector)
        .into_iter()
        .map(|(attributes, _)| attributes.last().unwrap().clone())
        .collect();
    assert_eq!(
        methods,
        ["http.request.method=POST", "http.request.method=UNKNOWN"]
    );
}

#[test]
fn series_beyond_max_series_are_counted_in_one_overflow_series() {
    let config = SpanMetricsConfig {
        max_series: 2,
        ..SpanMetricsConfig::default()
    };
    let registry = Registry::default();
    let connector = SpanMetrics::new(&config, "spanmetrics", &registry);
    let spans = (0..5)
        .map(|i| span(&format!("op{i}"), 1, false, vec![]))
        .collect();
    add(&connector, &request("api", spans));
    let all = calls(&connector);
    let overflow: Vec<_> = all
        .iter()
        .filter(|(a, _)| a == &vec!["otel.metric.overflow=true".to_string()])
        .collect();
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].1, 3);
    assert_eq!(all.len(), 3);
    assert_eq!(
        registry.counter_sum(
            "vigil_connector_overflow_items_total",
            &[("connector", "spanmetrics")]
        ),
        3
    );
}

/// An exemplar as (first trace id byte, first span id byte, value).
type Seen = (u8, u8, f64);

/// The exemplars of the one histogram point and the one calls point.
fn exemplars(connector: &SpanMetrics) -> (Vec<Seen>, Vec<Seen>) {
    use vigil_proto::otlp::metrics::v1::exemplar::Value;
    let read = |e: &vigil_proto::otlp::metrics::v1::Exemplar| {
        let value = match e.value {
            Some(Value::AsDouble(v)) => v,
            _ => f64::NAN,
        };
        (e.trace_id[0], e.span_id[0], value)
    };
    let (request, _) = connector.snapshot().expect("series");
    let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
    let (mut buckets, mut calls) = (Vec::new(), Vec::new());
    for m in metrics {
        match &m.data {
            Some(metric::Data::Histogram(h)) => {
                buckets.extend(h.data_points[0].exemplars.iter().map(read))
            }
            Some(metric::Data::Sum(s)) => calls.extend(s.data_points[0].exemplars.iter().map(read)),
            _ => {}
        }
    }
    (buckets, calls)
}

fn traced(name: &str, millis: u64, end_offset: u64, id: u8) -> Span {
    let mut s = span(name, millis, false, Vec::new());
    s.trace_id = vec![id; 16];
    s.span_id = vec![id; 8];
    s.start_time_unix_nano += end_offset;
    s.end_time_unix_nano += end_offset;
    s
}

#[test]
fn each_bucket_keeps_the_latest_span_as_its_exemplar_and_calls_the_newest() {
    let connector = default_connector();
    // The two 3 ms spans share the (2 ms, 4 ms] bucket; 300 ms has its own (default bounds 2 ms … 15 s).
    add(
        &connector,
        &request(
            "api",
            vec![
                traced("GET /", 3, 0, 1),
                traced("GET /", 300, 5, 2),
                traced("GET /", 3, 1_000_000_000, 3),
            ],
        ),
    );
    let (buckets, calls) = exemplars(&connector);
    assert_eq!(buckets.len(), 2, "{buckets:?}");
    assert!(
        buckets.contains(&(3, 3, 0.003)),
        "the later span replaces the earlier: {buckets:?}"
    );
    assert!(buckets.contains(&(2, 2, 0.3)), "{buckets:?}");
    assert_eq!(calls, [(3, 3, 1.0)], "the newest span, counted once");
}

#[test]
fn spans_without_proper_ids_and_disabled_exemplars_give_none() {
    let connector = default_connector();
    let mut short = traced("GET /", 3, 0, 1);
    short.trace_id = vec![1; 8];
    add(
        &connector,
        &request("api", vec![short, span("GET /", 3, false, Vec::new())]),
    );
    assert_eq!(exemplars(&connector), (Vec::new(), Vec::new()));

    let mut config = SpanMetricsConfig::default();
    config.exemplars.enabled = false;
    let connector = SpanMetrics::new(&config, "spanmetrics", &Registry::default());
    add(&connector, &request("api", vec![traced("GET /", 3, 0, 1)]));
    assert_eq!(exemplars(&connector), (Vec::new(), Vec::new()));
}

#[test]
fn the_overflow_bucket_has_its_exemplar_with_the_span_end_time() {
    let connector = default_connector();
    // 20 s is past the largest default bound (15 s): the +Inf bucket.
    let slow = traced("GET /", 20_000, 0, 9);
    let end = slow.end_time_unix_nano;
    add(&connector, &request("api", vec![slow]));
    let (request, points) = connector.snapshot().expect("series");
    assert_eq!(points, 2, "a calls point and a duration point");
    for m in &request.resource_metrics[0].scope_metrics[0].metrics {
        match &m.data {
            Some(metric::Data::Histogram(h)) => {
                let p = &h.data_points[0];
                assert_eq!(p.exemplars.len(), 1);
                assert_eq!(p.exemplars[0].time_unix_nano, end);
                assert!(!p.attributes.is_empty());
                assert!(p.start_time_unix_nano > 0 && p.time_unix_nano >= p.start_time_unix_nano);
            }
            Some(metric::Data::Sum(s)) => {
                let p = &s.data_points[0];
                assert_eq!(p.exemplars[0].time_unix_nano, end);
                assert!(p.start_time_unix_nano > 0 && p.time_unix_nano >= p.start_time_unix_nano);
            }
            _ => panic!("unexpected metric {}", m.name),
        }
    }
}

#[test]
fn milliseconds_and_a_zero_expiration_keep_their_meaning() {
    let mut config = SpanMetricsConfig::default();
    config.histogram.unit = super::DurationUnit::Milliseconds;
    config.metrics_expiration = std::time::Duration::ZERO;
    let connector = SpanMetrics::new(&config, "spanmetrics", &Registry::default());
    add(
        &connector,
        &request("api", vec![span("GET /", 250, false, Vec::new())]),
    );
    for _ in 0..2 {
        let (request, _) = connector
            .snapshot()
            .expect("a zero expiration keeps every series");
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let sum = metrics
            .iter()
            .find_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => h.data_points[0].sum,
                _ => None,
            })
            .expect("histogram");
        assert!((sum - 250.0).abs() < 1e-6, "{sum}");
    }
}

#[test]
fn a_duration_on_a_bound_counts_in_that_bucket_and_points_are_two_per_series() {
    let connector = default_connector();
    // Exactly 2 ms: Prometheus' `le="0.002"` bucket, the first.
    add(
        &connector,
        &request(
            "api",
            vec![
                span("GET /a", 2, false, Vec::new()),
                span("GET /b", 2, false, Vec::new()),
            ],
        ),
    );
    let (request, points) = connector.snapshot().expect("series");
    assert_eq!(points, 4);
    for m in &request.resource_metrics[0].scope_metrics[0].metrics {
        if let Some(metric::Data::Histogram(h)) = &m.data {
            for p in &h.data_points {
                assert_eq!(p.bucket_counts[0], 1, "{:?}", p.bucket_counts);
            }
        }
    }
}

#[test]
fn the_service_namespace_stays_on_the_resource_so_job_matches_the_services_metrics() {
    let connector = default_connector();
    let mut shop = request("api", vec![span("GET /", 3, false, Vec::new())]);
    if let Some(resource) = shop.resource_spans[0].resource.as_mut() {
        resource.attributes.push(attr("service.namespace", "shop"));
    }
    add(&connector, &shop);
    add(
        &connector,
        &request("api", vec![span("GET /", 3, false, Vec::new())]),
    );
    let (request, points) = connector.snapshot().expect("series");
    assert_eq!(
        points, 4,
        "the same service name in two namespaces is two series"
    );
    let mut resources: Vec<Vec<String>> = request
        .resource_metrics
        .iter()
        .map(|rm| {
            rm.resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| format!("{}={}", kv.key, value_text(kv.value.as_ref())))
                .collect()
        })
        .collect();
    resources.sort();
    assert_eq!(
        resources,
        [
            vec!["service.name=api".to_string()],
            vec![
                "service.name=api".to_string(),
                "service.namespace=shop".to_string()
            ],
        ]
    );
}

/// A batch of requests counts request by request: one that cannot be read is reported as undecodable (the
/// worker drops it, counted) and nothing of it is counted, while the requests around it are.
#[tokio::test]
async fn an_unreadable_request_costs_only_its_own_spans() {
    use crate::connector::Connector as _;
    use crate::pipeline::Batch;
    use vigil_proto::otlp::Signal;
    let connector = default_connector();
    let good = |name: &str| request("api", vec![span(name, 5, false, vec![])]).encode_to_vec();
    // A valid span followed by a span whose name is not UTF-8: the request reads up to the broken span.
    let mut broken = request(
        "api",
        vec![
            span("counted-if-read-in-part", 5, false, vec![]),
            span("BROKEN", 5, false, vec![]),
        ],
    )
    .encode_to_vec();
    let at = broken.windows(6).position(|w| w == b"BROKEN").unwrap();
    broken[at] = 0xff;
    let mut batch = Batch::new(Signal::Traces, good("before").into(), 1);
    batch.append(Batch::new(Signal::Traces, broken.into(), 2));
    batch.append(Batch::new(Signal::Traces, good("after").into(), 1));
    let exported = connector.consume(&batch).await.unwrap();
    assert_eq!(exported.undecodable, 2);
    assert!(exported.message.contains("UTF-8"), "{}", exported.message);
    let names: Vec<String> = calls(&connector)
        .into_iter()
        .flat_map(|(attributes, _)| attributes)
        .filter_map(|a| a.strip_prefix("span.name=").map(str::to_string))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"before".to_string()) && names.contains(&"after".to_string()));
}

/// A request from a few services, span names, kinds, statuses and attribute values (strings, integers, absent),
/// so that requests share series and dimensions fall back to the resource and to defaults.
fn random_request(seed: u64) -> ExportTraceServiceRequest {
    let mut next = crate::processor::test_support::numbers(seed);
    let value = |n: u64| match n % 3 {
        0 => None,
        1 => Some(AnyValue {
            value: Some(any_value::Value::StringValue(format!("v{n}"))),
        }),
        _ => Some(AnyValue {
            value: Some(any_value::Value::IntValue(n as i64)),
        }),
    };
    let attributes = |next: &mut dyn FnMut(u64) -> u64, keys: &[&str]| {
        let mut out = Vec::new();
        for key in keys {
            if next(2) == 0 {
                out.push(KeyValue {
                    key: key.to_string(),
                    value: value(next(6)),
                    ..Default::default()
                });
            }
        }
        out
    };
    let resources = next(3) + 1;
    ExportTraceServiceRequest {
        resource_spans: (0..resources)
            .map(|_| ResourceSpans {
                resource: (next(4) != 0).then(|| Resource {
                    attributes: attributes(
                        &mut next,
                        &["service.name", "service.namespace", "region", "tier"],
                    ),
                    ..Default::default()
                }),
                scope_spans: (0..next(3))
                    .map(|_| ScopeSpans {
                        spans: (0..next(6))
                            .map(|_| Span {
                                trace_id: if next(5) == 0 {
                                    vec![]
                                } else {
                                    vec![next(9) as u8 + 1; 16]
                                },
                                span_id: vec![next(9) as u8 + 1; 8],
                                name: format!("op{}", next(4)),
                                kind: next(6) as i32,
                                start_time_unix_nano: 1_000,
                                end_time_unix_nano: 1_000 + next(3_000_000_000),
                                status: (next(3) != 0).then(|| Status {
                                    code: next(3) as i32,
                                    ..Default::default()
                                }),
                                attributes: attributes(&mut next, &["region", "http.route"]),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

/// A snapshot with its clock readings cleared and data points in a fixed order (series tables iterate in
/// the order of their random hash keys).
fn comparable(connector: &SpanMetrics) -> Option<String> {
    let (mut request, points) = connector.snapshot()?;
    for rm in &mut request.resource_metrics {
        for sm in &mut rm.scope_metrics {
            for m in &mut sm.metrics {
                match &mut m.data {
                    Some(metric::Data::Sum(sum)) => {
                        for p in &mut sum.data_points {
                            (p.start_time_unix_nano, p.time_unix_nano) = (0, 0);
                        }
                        sum.data_points
                            .sort_by_key(|p| format!("{:?}", p.attributes));
                    }
                    Some(metric::Data::Histogram(h)) => {
                        for p in &mut h.data_points {
                            (p.start_time_unix_nano, p.time_unix_nano) = (0, 0);
                        }
                        h.data_points.sort_by_key(|p| format!("{:?}", p.attributes));
                    }
                    _ => {}
                }
            }
        }
    }
    Some(format!("{points} {request:?}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    /// Reading spans in place counts exactly what decoding them counts: same series, calls, buckets, sums,
    /// exemplars and overflow, over several requests in a row.
    #[test]
    fn reading_in_place_counts_what_decoding_counts(
        seeds in proptest::collection::vec(any::<u64>(), 1..4),
        max_series in 1usize..40,
        milliseconds in any::<bool>(),
    ) {
        let mut config = SpanMetricsConfig {
            max_series,
            dimensions: vec![
                Dimension { name: "region".into(), default: Some("unknown".into()) },
                Dimension { name: "http.route".into(), default: None },
            ],
            ..SpanMetricsConfig::default()
        };
        if milliseconds {
            config.histogram.unit = super::DurationUnit::Milliseconds;
        }
        let reference = SpanMetrics::new(&config, "spanmetrics", &Registry::default());
        let in_place = SpanMetrics::new(&config, "spanmetrics", &Registry::default());
        for seed in seeds {
            let request = random_request(seed);
            add_decoded(&reference, &request);
            add(&in_place, &request);
        }
        prop_assert_eq!(comparable(&in_place), comparable(&reference));
    }
}
