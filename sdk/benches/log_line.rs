//! Producer-side cost of one INFO line with 3 fields inside a span (trace ids on), written to the rotating
//! JSON file, against `tracing-subscriber`'s JSON formatter through `tracing-appender::non_blocking` — the
//! baseline named in BENCHMARKS.md — plus the cost of a disabled level. Both subscribers carry the same
//! `tracing-opentelemetry` layer, restricted to spans as Vigil configures it.
//!
//! Like for like: `tracing-appender`'s `non_blocking` is lossy by default (a full buffer drops the line), so
//! `vigil_json_file` runs with [`FullPolicy::Drop`](vigil::log::FullPolicy) too. Vigil's own default blocks
//! instead; at two million lines a second that measures the writer thread's file throughput (fresh page-cache
//! pages, a few hundred MB/s on a small VM), not the cost of a line, so `vigil_json_file_lossless` is shown
//! beside it, and each Vigil run prints how many lines its writer dropped.
//!
//! `cargo bench -p vigil --bench log_line`

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use tracing::{debug, info, info_span};
use tracing_subscriber::layer::SubscriberExt;

/// Vigil writing JSON lines to `file` in `dir`, masking or not.
fn vigil_subscriber(
    dir: &std::path::Path,
    file: &str,
    masking: bool,
    on_full: vigil::log::FullPolicy,
) -> (impl tracing::Subscriber + Send + Sync, vigil::Guard) {
    let builder = vigil::Builder::new("bench")
        .console(false)
        .otlp(false)
        .filter("info")
        .on_full(on_full)
        // Gzip of rotated files runs on a housekeeping thread; on a 2-core machine it would compete with the
        // measured thread, so it is off here (rotation by size and day stays on).
        .json_file(vigil::log::file::FileOptions {
            compress: false,
            ..vigil::log::file::FileOptions::new(dir.join(file))
        });
    let builder = if masking {
        builder
    } else {
        builder.without_masking()
    };
    builder.build().expect("vigil subscriber")
}

/// Lines the writer of `file` (and its rotated files) dropped, from the marker lines it wrote: printed, so a lossy
/// figure says how lossy it was.
fn report_dropped(dir: &std::path::Path, file: &str) {
    let stem = file.trim_end_matches(".jsonl");
    let (mut written, mut dropped) = (0u64, 0u64);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !entry.file_name().to_string_lossy().starts_with(stem) {
            continue;
        }
        let Ok(file) = std::fs::File::open(entry.path()) else {
            continue;
        };
        for line in std::io::BufRead::lines(std::io::BufReader::new(file)).map_while(Result::ok) {
            written += 1;
            if let Some(rest) = line.split("\"dropped_records\":").nth(1) {
                dropped += rest.trim_end_matches('}').parse::<u64>().unwrap_or(0);
            }
        }
    }
    eprintln!("{file}: {written} lines written, {dropped} dropped by the writer");
}

/// The measured line: INFO with 3 fields (the span adds a fourth and the trace ids).
fn one_line() {
    info!(
        model = "lightgbm",
        loss = black_box(0.234),
        epoch = black_box(7u64),
        "step done"
    )
}

/// Measures `line` as `name` with `subscriber` as the default, inside a span with one field.
fn bench_inside_span<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    subscriber: S,
    line: fn(),
) where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    tracing::subscriber::with_default(subscriber, || {
        let span = info_span!("request", request_id = "r-1");
        let _entered = span.enter();
        group.bench_function(name, |b| b.iter(line));
    });
}

fn bench(c: &mut Criterion) {
    use vigil::log::FullPolicy;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("info_line_3_fields");

    // Vigil, lossy like the baseline, then its own default (lossless), then with masking turned off to show
    // what masking (on by default) costs.
    for (name, file, masking, on_full) in [
        ("vigil_json_file", "vigil.jsonl", true, FullPolicy::Drop),
        (
            "vigil_json_file_lossless",
            "lossless.jsonl",
            true,
            FullPolicy::Block,
        ),
        (
            "vigil_json_file_unmasked",
            "unmasked.jsonl",
            false,
            FullPolicy::Drop,
        ),
    ] {
        let (subscriber, guard) = vigil_subscriber(dir.path(), file, masking, on_full);
        bench_inside_span(&mut group, name, subscriber, one_line);
        drop(guard);
        report_dropped(dir.path(), file);
    }
    let (subscriber, _guard) = vigil_subscriber(dir.path(), "debug.jsonl", true, FullPolicy::Drop);
    bench_inside_span(&mut group, "vigil_disabled_debug", subscriber, || {
        debug!(loss = black_box(0.234), "not written")
    });

    let appender = tracing_appender::rolling::never(dir.path(), "baseline.jsonl");
    // `non_blocking` drops lines when its buffer is full (`lossy` defaults to true).
    let (non_blocking, _appender_guard) = tracing_appender::non_blocking(appender);
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&tracer_provider, "bench");
    let baseline = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(vigil::trace::SpansOnly::new(
            tracing_opentelemetry::layer().with_tracer(tracer),
        ))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(non_blocking),
        );
    bench_inside_span(
        &mut group,
        "baseline_fmt_json_non_blocking",
        baseline,
        one_line,
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
