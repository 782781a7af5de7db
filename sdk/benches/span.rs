//! Cost of a span with 3 attributes through Vigil's subscriber (the `SpansOnly`-wrapped OpenTelemetry layer plus
//! Vigil's JSON file layer keeping the span's fields) against plain `tracing-opentelemetry` on a bare registry.
//! Both tracers share one provider setup with no exporter, so the export path is not part of either figure.
//!
//! `cargo bench -p vigil --bench span`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use tracing::info_span;
use tracing_subscriber::layer::SubscriberExt;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("span_3_attributes");
    let span = || {
        let span = info_span!(
            "predict",
            model = "lightgbm",
            batch = black_box(32u64),
            gpu = black_box(true)
        );
        let _entered = span.enter();
    };

    let (subscriber, guard) = vigil::Builder::new("bench")
        .console(false)
        .otlp(false)
        .json_file(vigil::log::file::FileOptions {
            compress: false,
            ..vigil::log::file::FileOptions::new(dir.path().join("vigil.jsonl"))
        })
        .build()
        .expect("vigil subscriber");
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("vigil", |b| b.iter(span))
    });
    drop(guard);

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let baseline = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(baseline, || {
        group.bench_function("plain_tracing_opentelemetry", |b| b.iter(span))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
