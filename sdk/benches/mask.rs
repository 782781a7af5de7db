//! Masking throughput on realistic log text, with no PII and with dense PII, against the baseline of applying
//! the same rules as separate `regex::Regex` replacements one after another.
//!
//! `cargo bench -p vigil --bench mask`

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::mask::{MaskConfig, Masker};

#[path = "support/mask_text.rs"]
mod mask_text;

use mask_text::{CLEAN, DENSE, apply_baseline, baseline, text};

fn bench(c: &mut Criterion) {
    let masker = Masker::new(&MaskConfig::default()).expect("default policy");
    let rules = baseline();
    for (name, lines) in [("clean", CLEAN), ("dense_pii", DENSE)] {
        let input = text(lines, 64 * 1024);
        let mut group = c.benchmark_group(format!("mask_{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function("vigil", |b| {
            b.iter(|| black_box(masker.text(black_box(&input))).len())
        });
        group.bench_function("regex_baseline", |b| {
            b.iter(|| black_box(apply_baseline(&rules, black_box(&input))).len())
        });
        group.finish();
    }
}

/// Attributes as a collector sees them: semantic-convention keys with short values, plus the load generator's
/// `attribute.key.N` / `value-…` pairs; time per attribute (the collector's `mask` processor cost per value).
fn attributes(c: &mut Criterion) {
    let masker = Masker::new(&MaskConfig::default()).expect("default policy");
    let pairs: Vec<(String, String)> = [
        ("http.request.method", "GET"),
        ("http.route", "/api/v1/users/{id}/orders"),
        ("http.response.status_code", "200"),
        ("server.address", "api.example.internal"),
        (
            "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        ),
        ("db.system", "postgresql"),
        (
            "db.statement",
            "SELECT id, total FROM orders WHERE customer_id = $1 LIMIT 50",
        ),
        ("model.name", "lightgbm-v3"),
        ("cache.key", "user:profile:12345"),
        ("max_tokens", "512"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain((0..10).map(|a| {
        (
            format!("attribute.key.{a}"),
            format!("value-42-{a}-abcdefgh"),
        )
    }))
    .collect();
    let mut group = c.benchmark_group("mask_attributes");
    group.throughput(Throughput::Elements(pairs.len() as u64));
    group.bench_function("vigil", |b| {
        b.iter(|| {
            pairs
                .iter()
                .filter(|(k, v)| {
                    !matches!(
                        masker.attribute(black_box(k), black_box(v)),
                        vigil::mask::Masked::Keep(Cow::Borrowed(_))
                    )
                })
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, bench, attributes);
criterion_main!(benches);
