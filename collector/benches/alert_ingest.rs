//! The alerting connector's ingestion per data point when a rule reads every point (issue 19's worst case):
//! 100-point gauge requests shaped like `vigil-loadgen`'s (10 string attributes per point, one service),
//! stored by `NumberSeries::ingest`, which reads them in place. `hot` ingests one request again and again (in
//! cache); `cold` cycles through 256 copies (10 MB, more than the caches hold, as a batch of a few MB is when it
//! reaches the connector). The receiver's validation walk of the same request (`baseline_receiver_scan`, paid
//! by every request) is the same-run baseline.
//!
//! `cargo bench -p vigil-collector --bench alert_ingest`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use vigil_collector::alert::filter::Wanted;
use vigil_collector::alert::numbers::{NumberSeries, Target};
use vigil_collector::alert::promql;
use vigil_collector::alert::tsdb::Tsdb;
use vigil_collector::prometheus::store::{Store, StoreSettings};
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::string_attribute;

const POINTS: u32 = 100;
const NOW: i64 = 1_800_000_000_000;

fn request() -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "vigil-loadgen")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "loadgen.gauge".into(),
                    unit: "1".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: (0..POINTS)
                            .map(|i| NumberDataPoint {
                                attributes: (0..10)
                                    .map(|a| {
                                        string_attribute(
                                            &format!("attribute.key.{a}"),
                                            &format!("value-{i}-{a}-abcdefgh"),
                                        )
                                    })
                                    .collect(),
                                time_unix_nano: NOW as u64 * 1_000_000,
                                value: Some(number_data_point::Value::AsDouble(f64::from(i))),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let bytes = request();
    let copies: Vec<Vec<u8>> = (0..256).map(|_| bytes.clone()).collect();
    let rule = promql::parse("max by (job) (loadgen_gauge_ratio) > 1e18").expect("rule");
    let wanted = Wanted::new([&rule], "", true);
    let store = Store::new(StoreSettings::default());
    let mut db = Tsdb::new(Duration::from_secs(660), 100_000);
    let mut numbers = NumberSeries::default();
    let mut ingest = |request: &[u8]| {
        let mut target = Target {
            db: &mut db,
            now: NOW,
            reported: None,
            over_cap: 0,
        };
        numbers
            .ingest(request, &store, &wanted, &mut target)
            .is_ok()
    };
    let mut group = c.benchmark_group("alert_ingest_100_points");
    group.throughput(Throughput::Elements(u64::from(POINTS)));
    group.bench_function("hot", |b| b.iter(|| ingest(black_box(&bytes))));
    let mut next = 0;
    group.bench_function("cold", |b| {
        b.iter(|| {
            next = (next + 1) % copies.len();
            ingest(black_box(&copies[next]))
        })
    });
    group.bench_function("baseline_receiver_scan", |b| {
        b.iter(|| vigil_proto::otlp::scan::scan(Signal::Metrics, black_box(&bytes)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
