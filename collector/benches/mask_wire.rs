//! The `mask` processor's cost per request: the load generator's request shape (100 spans, each with a name and
//! 10 string attributes, nothing to mask), walked and checked on the wire by the processor, and checked inside
//! the receiver's validation scan (what the collector does); against the receiver's plain validation scan of
//! the same bytes as the baseline.
//!
//! `cargo bench -p vigil-collector --bench mask_wire`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use vigil::mask::{MaskConfig, Masker};
use vigil_collector::processor::mask::precheck::MaskPrecheck;
use vigil_collector::processor::mask::wire::mask_request;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vigil_proto::otlp::scan::scan_inspecting;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn request() -> Vec<u8> {
    let spans = (0..100u32)
        .map(|i| Span {
            trace_id: vec![7; 16],
            span_id: i.to_be_bytes().repeat(2),
            name: format!("GET /api/v1/items/{i}"),
            attributes: (0..10)
                .map(|a| KeyValue {
                    key: format!("attribute.key.{a}"),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!(
                            "value-{i}-{a}-abcdefgh"
                        ))),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let bytes = request();
    let masker = Masker::new(&MaskConfig::default()).expect("default policy");
    let mut group = c.benchmark_group("mask_wire_100_spans");
    group.throughput(Throughput::Elements(100));
    group.bench_function("mask_request", |b| {
        b.iter(|| mask_request(Signal::Traces, black_box(&bytes), &masker).is_ok())
    });
    group.bench_function("receiver_scan_with_mask_check", |b| {
        b.iter(|| {
            scan_inspecting(
                Signal::Traces,
                black_box(&bytes),
                &mut MaskPrecheck::new(&masker),
            )
            .is_ok_and(|summary| !summary.resources[0].flagged)
        })
    });
    group.bench_function("baseline_receiver_scan", |b| {
        b.iter(|| vigil_proto::otlp::scan::scan(Signal::Traces, black_box(&bytes)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
