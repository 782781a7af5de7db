//! The Prometheus exporters' state: ingesting OTLP data points into the series store, and rendering the
//! scrape body.
//!
//! * `ingest`: one 1,000-point request (100 metrics × 10 series, 3 attributes each, a resource of 4 attributes),
//!   decoded from protobuf and stored, against decoding alone as the baseline; and the same while another
//!   thread renders a 100,000-series store back to back (a scrape must not stall ingestion).
//! * `render`: 100,000 counter/gauge series (100 families × 1,000 series, 7 labels each) and 10,000 histogram
//!   series (12 buckets each) in the text format, against a straightforward `format!`-per-line rendering of
//!   the same series as the baseline.
//!
//! `cargo bench -p vigil-collector --bench prometheus`

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use vigil_collector::prometheus::render::{Format, render};
use vigil_collector::prometheus::store::{Store, StoreSettings};
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use vigil_proto::otlp::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::string_attribute;

fn attr(key: &str, value: String) -> KeyValue {
    string_attribute(key, &value)
}

fn resource(service: usize) -> Resource {
    Resource {
        attributes: vec![
            attr("service.name", format!("service-{service}")),
            attr("service.instance.id", format!("pod-{service}")),
            attr("host.name", "node-1".into()),
            attr("deployment.environment", "prod".into()),
        ],
        ..Default::default()
    }
}

/// `metrics` counters with `series` series each.
fn counters(metrics: usize, series: usize, value: f64) -> Vec<Metric> {
    (0..metrics)
        .map(|m| Metric {
            name: format!("app.requests.{m}"),
            unit: "{request}".into(),
            description: "Requests handled.".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: (0..series)
                    .map(|s| NumberDataPoint {
                        attributes: vec![
                            attr("http.route", format!("/api/v1/items/{s}")),
                            attr("http.method", "GET".into()),
                            attr("status", (200 + s % 5).to_string()),
                        ],
                        time_unix_nano: 1_700_000_000_000_000_000,
                        value: Some(number_data_point::Value::AsDouble(value + s as f64)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        })
        .collect()
}

fn histograms(metrics: usize, series: usize) -> Vec<Metric> {
    (0..metrics)
        .map(|m| Metric {
            name: format!("app.latency.{m}"),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: (0..series)
                    .map(|s| HistogramDataPoint {
                        attributes: vec![attr("http.route", format!("/api/v1/items/{s}"))],
                        count: 66,
                        sum: Some(12.5),
                        bucket_counts: (0..12).collect(),
                        explicit_bounds: vec![
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                        ],
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        })
        .collect()
}

fn request(service: usize, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(service)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "bench".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn settings() -> StoreSettings {
    StoreSettings {
        max_series: 1_000_000,
        ..StoreSettings::default()
    }
}

fn ingest(c: &mut Criterion) {
    let bytes = request(0, counters(100, 10, 1.0)).encode_to_vec();
    let store = Store::new(settings());
    let mut group = c.benchmark_group("prometheus_ingest");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("decode_only_baseline", |b| {
        b.iter(|| {
            black_box(ExportMetricsServiceRequest::decode(black_box(bytes.as_slice())).unwrap())
        })
    });
    group.bench_function("decode_and_store", |b| {
        b.iter(|| {
            let request = ExportMetricsServiceRequest::decode(black_box(bytes.as_slice())).unwrap();
            black_box(store.ingest(&request, &mut |_| {}))
        })
    });
    // The same ingestion into a store of 100,000 series that another thread scrapes (renders) back to back:
    // how much a scrape holds ingestion up.
    let scraped = std::sync::Arc::new(filled_store(false));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (store, stop) = (scraped.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                black_box(render(&store, Format::Text));
                scrapes += 1;
            }
            scrapes
        })
    };
    group.bench_function("decode_and_store_during_back_to_back_scrapes", |b| {
        b.iter(|| {
            let request = ExportMetricsServiceRequest::decode(black_box(bytes.as_slice())).unwrap();
            black_box(scraped.ingest(&request, &mut |_| {}))
        })
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().unwrap_or(0);
    eprintln!("scrapes rendered meanwhile: {scrapes}");
    group.finish();
}

fn filled_store(histogram: bool) -> Store {
    let store = Store::new(settings());
    for service in 0..10 {
        let metrics = if histogram {
            histograms(10, 100)
        } else {
            counters(100, 100, 1.0)
        };
        store.ingest(&request(service, metrics), &mut |_| {});
    }
    store
}

/// What a first implementation would do: one `format!` per label pair and line, no reuse.
fn naive_render(store: &Store) -> Vec<u8> {
    let mut out = String::new();
    store.for_each_family(|name, family| {
        out.push_str(&format!(
            "# HELP {name} {}\n# TYPE {name} {}\n",
            family.help,
            family.kind.type_name()
        ));
        for (labels, series) in &family.series {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            if let vigil_collector::prometheus::store::SeriesValue::Number(v) = series.value {
                let _ = writeln!(out, "{name}{{{}}} {v:?}", labels.join(","));
            }
        }
    });
    out.into_bytes()
}

fn render_bench(c: &mut Criterion) {
    let counters_store = filled_store(false);
    assert!(counters_store.series_count() >= 100_000);
    let histogram_store = filled_store(true);
    let mut group = c.benchmark_group("prometheus_render");
    group.sample_size(20);
    group.throughput(Throughput::Elements(counters_store.series_count() as u64));
    group.bench_function("naive_format_baseline_100k_series", |b| {
        b.iter(|| black_box(naive_render(&counters_store)))
    });
    group.bench_function("text_100k_series", |b| {
        b.iter(|| black_box(render(&counters_store, Format::Text)))
    });
    group.bench_function("openmetrics_100k_series", |b| {
        b.iter(|| black_box(render(&counters_store, Format::OpenMetrics)))
    });
    group.throughput(Throughput::Elements(histogram_store.series_count() as u64));
    group.bench_function("text_10k_histograms_12_buckets", |b| {
        b.iter(|| black_box(render(&histogram_store, Format::Text)))
    });
    group.finish();
}

criterion_group!(benches, ingest, render_bench);
criterion_main!(benches);
