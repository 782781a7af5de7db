//! The cost of one system-metrics collection cycle (host, process, and GPUs when NVML finds any).
//!
//! `cargo bench -p vigil --bench system`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let mut collector = vigil::system::Collector::new(true);
    c.bench_function("system_metrics_one_cycle", |b| {
        b.iter(|| black_box(collector.collect()).len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
