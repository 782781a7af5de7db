use super::*;

#[test]
fn translated_samples_keep_prometheus_names() {
    let labels: prometheus::store::Labels = vec![("job".to_string(), "api".to_string())].into();
    let series = prometheus::store::Series {
        value: SeriesValue::Histogram(prometheus::store::Histogram {
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
        kind: prometheus::naming::Kind::Histogram,
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
    let request = to_otlp(vec![sample], 1_000);
    let resource = &request.resource_metrics[0];
    let attributes: Vec<(String, String)> = resource
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                prometheus::store::value_text(kv.value.as_ref()),
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
    assert_eq!(gauge.data_points[0].time_unix_nano, 1_000_000_000);
}
