use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::KeyValue;
use vigil_proto::otlp::metrics::v1::metric;
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::string_attribute as attr;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};

use super::{Dimension, SpanMetrics, SpanMetricsConfig};
use crate::exporter::prometheus::store::value_text;
use crate::telemetry::Registry;

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
    let connector = SpanMetrics::new(
        &SpanMetricsConfig::default(),
        "spanmetrics",
        &Registry::default(),
    );
    connector.add(&request(
        "checkout",
        vec![
            span("GET /cart", 5, false, vec![]),
            span("GET /cart", 7, false, vec![]),
            span("GET /cart", 900, true, vec![]),
        ],
    ));
    connector.add(&request("search", vec![span("query", 1, false, vec![])]));
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
    let connector = SpanMetrics::new(
        &SpanMetricsConfig::default(),
        "spanmetrics",
        &Registry::default(),
    );
    connector.add(&request(
        "api",
        vec![span("op", 3, false, vec![]), span("op", 120, false, vec![])],
    ));
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
    connector.add(&request(
        "api",
        vec![
            span("op", 1, false, vec![attr("http.request.method", "POST")]),
            span("op", 1, false, vec![]),
        ],
    ));
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
    connector.add(&request("api", spans));
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
