use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use prost::Message;
use tokio::sync::watch;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vigil_proto::otlp::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::prometheus::WriteRequest;

use super::{RemoteWriteConfig, RemoteWriteExporter, decode_body};
use crate::exporter::{ExportError, Exporter, RetrySettings};
use crate::pipeline::Batch;
use crate::prometheus::store::ManualClock;
use crate::telemetry::Registry;

#[derive(Default)]
struct Receiver {
    statuses: Mutex<Vec<u16>>,
    received: Mutex<Vec<(http::HeaderMap, WriteRequest)>>,
}

/// A remote-write receiver answering the queued statuses (then 204) and decoding every body.
async fn receiver(statuses: Vec<u16>) -> (String, Arc<Receiver>, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = Arc::new(Receiver {
        statuses: Mutex::new(statuses),
        ..Default::default()
    });
    let (stop, stopped) = watch::channel(false);
    let shared = state.clone();
    tokio::spawn(crate::net::serve(
        listener,
        None,
        move |request: http::Request<hyper::body::Incoming>| {
            let state = shared.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let decoded = decode_body(&body).expect("a snappy WriteRequest");
                state
                    .received
                    .lock()
                    .unwrap()
                    .push((parts.headers, decoded));
                let status = {
                    let mut statuses = state.statuses.lock().unwrap();
                    if statuses.is_empty() {
                        204
                    } else {
                        statuses.remove(0)
                    }
                };
                let mut response = Response::new(Full::new(Bytes::from_static(b"nope")));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
            }
        },
        stopped,
        Duration::from_millis(100),
    ));
    (format!("http://{address}/api/v1/write"), state, stop)
}

fn counter_batch(value: f64, time_ms: u64) -> Batch {
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("api".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.requests".into(),
                    description: "Requests served.".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: time_ms * 1_000_000,
                            value: Some(number_data_point::Value::AsDouble(value)),
                            ..Default::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Batch::new(Signal::Metrics, Bytes::from(request.encode_to_vec()), 1)
}

fn config(endpoint: &str) -> RemoteWriteConfig {
    RemoteWriteConfig {
        endpoint: endpoint.into(),
        external_labels: [("cluster".to_string(), "eu-1".to_string())].into(),
        retry_on_failure: RetrySettings {
            initial_interval: Duration::from_millis(10),
            randomization_factor: 0.0,
            max_elapsed_time: Duration::from_secs(5),
            ..RetrySettings::default()
        },
        ..RemoteWriteConfig::default()
    }
}

fn labels(series: &vigil_proto::prometheus::TimeSeries) -> Vec<(String, String)> {
    series
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

#[tokio::test]
async fn sends_snappy_protobuf_with_the_required_headers_sorted_labels_and_accumulated_deltas() {
    let (url, state, _stop) = receiver(vec![]).await;
    let exporter = RemoteWriteExporter::new(&config(&url), "prw", &Registry::default()).unwrap();
    exporter.export(&counter_batch(5.0, 1_000)).await.unwrap();
    exporter.export(&counter_batch(2.0, 2_000)).await.unwrap();
    let received = state.received.lock().unwrap();
    assert_eq!(received.len(), 2);
    let (headers, request) = &received[1];
    assert_eq!(headers["content-encoding"], "snappy");
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert_eq!(headers["x-prometheus-remote-write-version"], "0.1.0");
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("vigil-collector/")
    );
    let counter = request
        .timeseries
        .iter()
        .find(|ts| ts.labels[0].value == "http_requests_total")
        .expect("the counter series");
    assert_eq!(
        labels(counter),
        [
            ("__name__".to_string(), "http_requests_total".to_string()),
            ("cluster".into(), "eu-1".into()),
            ("job".into(), "api".into()),
        ]
    );
    assert_eq!(
        counter.samples[0].value, 7.0,
        "deltas 5 + 2 are sent as a cumulative 7"
    );
    assert_eq!(counter.samples[0].timestamp, 2_000);
    assert!(
        request
            .metadata
            .iter()
            .any(|m| m.metric_family_name == "http_requests_total"
                && m.help == "Requests served."
                && m.r#type == vigil_proto::prometheus::MetricType::Counter as i32)
    );
}

#[tokio::test]
async fn retries_5xx_and_429_but_not_other_4xx_and_never_adds_a_delta_twice() {
    let (url, state, _stop) = receiver(vec![503, 429]).await;
    let exporter = RemoteWriteExporter::new(&config(&url), "prw", &Registry::default()).unwrap();
    exporter.export(&counter_batch(5.0, 1_000)).await.unwrap();
    {
        let received = state.received.lock().unwrap();
        assert_eq!(received.len(), 3, "two retries, then success");
        for (_, request) in received.iter() {
            let counter = request
                .timeseries
                .iter()
                .find(|ts| ts.labels[0].value == "http_requests_total")
                .unwrap();
            assert_eq!(
                counter.samples[0].value, 5.0,
                "the same translation is resent"
            );
        }
    }
    state.statuses.lock().unwrap().push(400);
    let error = exporter
        .export(&counter_batch(1.0, 2_000))
        .await
        .unwrap_err();
    assert!(matches!(error, ExportError::Permanent { .. }), "{error:?}");
    assert_eq!(
        state.received.lock().unwrap().len(),
        4,
        "a 400 is not retried"
    );
}

#[tokio::test]
async fn expired_series_end_with_a_stale_marker() {
    let (url, state, _stop) = receiver(vec![]).await;
    let clock = ManualClock::shared();
    let exporter =
        RemoteWriteExporter::with_clock(&config(&url), "prw", &Registry::default(), clock.clone())
            .unwrap();
    exporter.export(&counter_batch(5.0, 1_000)).await.unwrap();
    *clock.0.lock().unwrap() += Duration::from_secs(301);
    exporter
        .export(&Batch::new(
            Signal::Metrics,
            Bytes::from(ExportMetricsServiceRequest::default().encode_to_vec()),
            0,
        ))
        .await
        .unwrap();
    let received = state.received.lock().unwrap();
    let last = &received.last().unwrap().1;
    let counter = last
        .timeseries
        .iter()
        .find(|ts| ts.labels[0].value == "http_requests_total")
        .unwrap();
    assert_eq!(
        counter.samples[0].value.to_bits(),
        vigil_proto::prometheus::STALE_NAN.to_bits()
    );
}
