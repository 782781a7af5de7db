//! The application-metric helpers, through a real meter provider: what a dashboard or an alert rule reads.
//! One test, because the helpers use the global meter provider.

use std::time::Duration;

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use vigil::metrics::app::timer;
use vigil::ml::{TrainingRun, record_backtest};

/// `(value, attributes as "k=v" sorted)` of every data point of metric `name`.
fn points(exporter: &InMemoryMetricExporter, name: &str) -> Vec<(f64, Vec<String>)> {
    let mut out = Vec::new();
    for resource in exporter.get_finished_metrics().unwrap() {
        for scope in resource.scope_metrics() {
            for metric in scope.metrics().filter(|m| m.name() == name) {
                let text = |attributes: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    let mut all: Vec<String> = attributes
                        .map(|kv| format!("{}={}", kv.key, kv.value))
                        .collect();
                    all.sort();
                    all
                };
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                        for p in g.data_points() {
                            out.push((p.value(), text(&mut p.attributes())));
                        }
                    }
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        assert_eq!(metric.unit(), "s", "{name} is in seconds");
                        for p in h.data_points() {
                            out.push((p.count() as f64, text(&mut p.attributes())));
                        }
                    }
                    AggregatedMetrics::U64(MetricData::Sum(s)) => {
                        for p in s.data_points() {
                            out.push((p.value() as f64, text(&mut p.attributes())));
                        }
                    }
                    other => panic!("{name}: unexpected {other:?}"),
                }
            }
        }
    }
    out
}

#[test]
fn timing_training_backtests_and_errors_become_metrics() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let value = vigil::time("feature_build", || 41 + 1);
    assert_eq!(value, 42);
    let elapsed = timer("db.query").with("table", "orders").stop();
    assert!(elapsed < Duration::from_secs(1));

    let mut run = TrainingRun::start("exp_001", "lightgbm");
    run.epoch(1, 1000, &[("loss", 0.5)]);
    run.epoch(2, 1000, &[("loss", 0.25)]);
    run.complete();
    let failed = TrainingRun::start("exp_002", "lightgbm");
    drop(failed);

    record_backtest(
        "momentum",
        Duration::from_secs(3),
        1532,
        12_345.67,
        &[("sharpe", 1.87)],
    );
    let parse_error = "x".parse::<u32>().unwrap_err();
    vigil::report_error(&parse_error);

    vigil::install_panic_hook();
    let _ = std::panic::catch_unwind(|| panic!("checkpoint corrupt"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(
        vigil::health::HealthChecker::new()
            .custom("model_loaded", true, || async { Ok("v3".into()) })
            .custom("cache", false, || async { Err("down".into()) })
            .overall_health(),
    );

    runtime.block_on(async {
        use tower::{Layer as _, ServiceExt as _};
        let service = vigil::http::HttpMetricsLayer::new().layer(tower::service_fn(
            |request: http::Request<()>| async move {
                let status = if request.uri().path().starts_with("/users/2") {
                    500
                } else {
                    200
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder().status(status).body(()).unwrap(),
                )
            },
        ));
        for path in ["/users/1/orders", "/users/2/orders", "/users/3/orders"] {
            let request = http::Request::get(path).body(()).unwrap();
            service.clone().oneshot(request).await.unwrap();
        }
    });

    provider.force_flush().unwrap();

    let durations = points(&exporter, "http.server.request.duration");
    let route = "http.route=/users/{id}/orders".to_string();
    let ok: f64 = durations
        .iter()
        .filter(|(_, a)| {
            a.contains(&route) && a.contains(&"http.response.status_code=200".to_string())
        })
        .map(|(v, _)| *v)
        .sum();
    assert_eq!(ok, 2.0, "{durations:?}");
    let errors = points(&exporter, "http.server.errors");
    assert_eq!(
        errors.iter().map(|(v, _)| *v).sum::<f64>(),
        1.0,
        "{errors:?}"
    );
    assert!(
        errors[0]
            .1
            .contains(&"http.response.status_class=5xx".to_string())
    );

    let health = points(&exporter, "health.status");
    assert!(
        health
            .iter()
            .any(|(v, a)| *v == 1.0 && a.contains(&"check=model_loaded".to_string()))
    );
    assert!(
        health
            .iter()
            .any(|(v, a)| *v == 0.0 && a.contains(&"check=cache".to_string()))
    );
    assert_eq!(
        points(&exporter, "health.overall").last().unwrap().0,
        0.5,
        "degraded"
    );

    assert_eq!(points(&exporter, "feature_build").last().unwrap().0, 1.0);
    assert!(
        points(&exporter, "db.query")
            .iter()
            .any(|(_, a)| a.contains(&"table=orders".to_string()))
    );
    // A state set: the current status is 1, the others 0.
    let status = |experiment: &str, state: &str| {
        points(&exporter, "training.status")
            .into_iter()
            .filter(|(_, a)| {
                a.contains(&format!("experiment_id={experiment}"))
                    && a.contains(&format!("status={state}"))
            })
            .map(|(v, _)| v)
            .next_back()
    };
    assert_eq!(status("exp_001", "completed"), Some(1.0));
    assert_eq!(status("exp_001", "running"), Some(0.0));
    assert_eq!(status("exp_001", "failed"), Some(0.0));
    assert_eq!(
        status("exp_002", "failed"),
        Some(1.0),
        "dropped unfinished = failed"
    );
    let loss = points(&exporter, "training.loss");
    assert_eq!(loss.last().unwrap().0, 0.25);
    assert!(
        points(&exporter, "training.samples_per_second")
            .iter()
            .all(|(v, _)| *v > 0.0)
    );
    assert_eq!(points(&exporter, "training.epochs").last().unwrap().0, 2.0);
    assert_eq!(
        points(&exporter, "backtest.trades").last().unwrap().0,
        1532.0
    );
    assert_eq!(points(&exporter, "backtest.sharpe").last().unwrap().0, 1.87);
    assert_eq!(
        points(&exporter, "backtest.duration").last().unwrap().0,
        1.0
    );
    let errors = points(&exporter, "errors");
    assert!(
        errors
            .iter()
            .any(|(v, a)| *v == 1.0 && a.contains(&"error.type=ParseIntError".to_string())),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|(v, a)| *v == 1.0 && a.contains(&"error.type=panic".to_string())),
        "{errors:?}"
    );
}
