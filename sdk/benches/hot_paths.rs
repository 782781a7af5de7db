//! The SDK's two hot paths against their baselines, in turns: a batch through Vigil, then the same batch through
//! the baseline, many times over, so that both see the same moment of a shared machine (which drifts by tens of
//! percent within a minute; criterion's separate groups in `span` and `log_line` catch the two at different
//! moments). Prints the medians, and the median of the rounds' ratios, which is the figure BENCHMARKS.md quotes.
//!
//! - **span**: a span with 3 attributes, created and entered, through Vigil's subscriber (JSON file handler, no
//!   export) against plain `tracing-opentelemetry` on a bare registry; both tracers have no exporter.
//! - **json_line**: an INFO line with 3 fields inside a span, written by Vigil's JSON file handler (masking on,
//!   lossy writer) against `tracing-subscriber`'s JSON formatter behind `tracing-appender::non_blocking` (lossy
//!   by default), both with the same `tracing-opentelemetry` layer restricted to spans.
//!
//! `cargo bench -p vigil --bench hot_paths [span|json_line]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use tracing::{Dispatch, info, info_span};
use tracing_subscriber::layer::SubscriberExt;

/// Rounds of (one Vigil batch, one baseline batch) per path.
const ROUNDS: usize = 300;
/// Operations per batch: long enough that timer reads do not count, short enough to land between disturbances.
const BATCH: usize = 2_000;

/// The measured span.
fn one_span() {
    let span = info_span!(
        "predict",
        model = "lightgbm",
        batch = black_box(32u64),
        gpu = black_box(true)
    );
    let _entered = span.enter();
}

/// The measured line: INFO with 3 fields (the enclosing span adds a fourth, and the trace ids).
fn one_line() {
    info!(
        model = "lightgbm",
        loss = black_box(0.234),
        epoch = black_box(7u64),
        "step done"
    )
}

/// The time `BATCH` calls of `op` take with `dispatch` as the default subscriber, inside a span with one field
/// when `in_span`.
fn batch(dispatch: &Dispatch, in_span: bool, op: fn()) -> Duration {
    tracing::dispatcher::with_default(dispatch, || {
        let span = in_span.then(|| info_span!("request", request_id = "r-1"));
        let _entered = span.as_ref().map(|span| span.enter());
        let start = Instant::now();
        for _ in 0..BATCH {
            op();
        }
        start.elapsed()
    })
}

fn median<T: Copy>(mut values: Vec<T>, order: impl Fn(&T, &T) -> std::cmp::Ordering) -> T {
    values.sort_unstable_by(order);
    values[values.len() / 2]
}

/// Runs `rounds` rounds of the two in turn and prints one line.
fn compare(
    name: &str,
    rounds: usize,
    vigil: &Dispatch,
    baseline: &Dispatch,
    in_span: bool,
    op: fn(),
) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // One unmeasured round each, so that thread-local buffers and callsite interest are in place.
    batch(vigil, in_span, op);
    batch(baseline, in_span, op);
    for _ in 0..rounds {
        ours.push(batch(vigil, in_span, op));
        theirs.push(batch(baseline, in_span, op));
    }
    let ratios: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(ours, theirs)| ours.as_secs_f64() / theirs.as_secs_f64())
        .collect();
    let per_op = |d: Duration| d.as_secs_f64() * 1e9 / BATCH as f64;
    println!(
        "{name:<10} vigil {:>7.0} ns   baseline {:>7.0} ns   ratio of medians {:.3}   median of round ratios {:.3}",
        per_op(median(ours.clone(), Duration::cmp)),
        per_op(median(theirs.clone(), Duration::cmp)),
        median(ours, Duration::cmp).as_secs_f64() / median(theirs, Duration::cmp).as_secs_f64(),
        median(ratios, f64::total_cmp),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the binary without it: one round proves it
    // works.
    let rounds = if std::env::args().any(|arg| arg == "--bench") {
        ROUNDS
    } else {
        1
    };
    // A path's name as an argument runs only that path (for a profiler).
    let only = std::env::args().skip(1).find(|arg| !arg.starts_with("--"));
    let wanted = |name: &str| only.as_deref().is_none_or(|only| only == name);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str| vigil::log::file::FileOptions {
        // Gzip of rotated files runs on a housekeeping thread that would compete with the measured one.
        compress: false,
        ..vigil::log::file::FileOptions::new(dir.path().join(name))
    };

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    if wanted("span") {
        let (vigil_spans, span_guard) = vigil::Builder::new("bench")
            .console(false)
            .otlp(false)
            .filter("info")
            .json_file(file("spans.jsonl"))
            .build()
            .expect("vigil subscriber");
        let plain = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
        compare(
            "span",
            rounds,
            &Dispatch::new(vigil_spans),
            &Dispatch::new(plain),
            false,
            one_span,
        );
        drop(span_guard);
    }
    if !wanted("json_line") {
        return;
    }

    let (vigil_lines, line_guard) = vigil::Builder::new("bench")
        .console(false)
        .otlp(false)
        .filter("info")
        .on_full(vigil::log::FullPolicy::Drop)
        .json_file(file("lines.jsonl"))
        .build()
        .expect("vigil subscriber");
    let appender = tracing_appender::rolling::never(dir.path(), "baseline.jsonl");
    let (non_blocking, _appender_guard) = tracing_appender::non_blocking(appender);
    let baseline = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(vigil::trace::SpansOnly::new(
            tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")),
        ))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(non_blocking),
        );
    compare(
        "json_line",
        rounds,
        &Dispatch::new(vigil_lines),
        &Dispatch::new(baseline),
        true,
        one_line,
    );
    drop(line_guard);
}
