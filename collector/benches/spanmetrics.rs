//! The `spanmetrics` connector's cost per span, on the default pipeline's hot path: one 100-span request
//! shaped like `vigil-loadgen`'s (10 attributes per span, 100 span names, one service) counted by
//! `SpanMetrics::add`, which reads it in place; against the receiver's validation walk of the same request
//! (`scan`) as the baseline every request pays anyway.
//!
//! `cargo bench -p vigil-collector --bench spanmetrics`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use vigil_collector::connector::spanmetrics::{SpanMetrics, SpanMetricsConfig};
use vigil_collector::telemetry::Registry;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::string_attribute;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// Distinct span names, as `vigil-loadgen` sends.
const SERIES: u32 = 100;

fn request() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", "vigil-loadgen"),
                    string_attribute("host.name", "bench"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..100u32)
                    .map(|i| Span {
                        trace_id: vec![i as u8 + 1; 16],
                        span_id: vec![i as u8 + 1; 8],
                        name: format!("GET /api/v1/items/{}", i % SERIES),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i) * 1_000_000,
                        attributes: (0..10)
                            .map(|a| {
                                string_attribute(&format!("attr.{a}"), &format!("value-{i}-{a}"))
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let bytes = request();
    let connector = SpanMetrics::new(
        &SpanMetricsConfig::default(),
        "spanmetrics",
        &Registry::default(),
    );
    let mut group = c.benchmark_group("spanmetrics_100_spans");
    group.throughput(Throughput::Elements(100));
    group.bench_function("add_in_place", |b| {
        b.iter(|| connector.add(black_box(&bytes)).is_ok())
    });
    group.bench_function("walk_only", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            vigil_proto::otlp::fields::for_each_span(black_box(&bytes), |_, span| {
                sum += span.end_time_unix_nano + span.name.len() as u64;
                Ok::<_, vigil_proto::otlp::wire::WireError>(())
            })
            .map(|()| sum)
        })
    });
    group.bench_function("baseline_receiver_scan", |b| {
        b.iter(|| vigil_proto::otlp::scan::scan(Signal::Traces, black_box(&bytes)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
