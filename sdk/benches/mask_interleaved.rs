//! Masking against the regex baseline, one iteration of each in turn, so that both see the same machine: the
//! medians and minimums of many single runs, and their ratios. Shared machines drift by tens of percent within
//! a minute; criterion's separate groups (`mask`) catch vigil and the baseline at different moments, this
//! bench does not.
//!
//! `cargo bench -p vigil --bench mask_interleaved`

#[path = "support/mask_text.rs"]
mod mask_text;

use std::hint::black_box;
use std::time::{Duration, Instant};

use mask_text::{CLEAN, DENSE, apply_baseline, baseline, text};
use vigil::mask::{MaskConfig, Masker};

/// Rounds of (one vigil run, one baseline run) per input.
const ROUNDS: usize = 400;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the binary without it: one round suffices
    // to prove it works.
    let rounds = if std::env::args().any(|arg| arg == "--bench") {
        ROUNDS
    } else {
        1
    };
    let masker = Masker::new(&MaskConfig::default()).expect("default policy");
    let rules = baseline();
    println!(
        "input      vigil median (min)      baseline median (min)    ratio median (min)   round ratio median   vigil GB/s median (best)"
    );
    for (name, lines) in [("clean", CLEAN), ("dense_pii", DENSE)] {
        let input = text(lines, 64 * 1024);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let start = Instant::now();
            black_box(masker.text(black_box(&input)).len());
            ours.push(start.elapsed());
            let start = Instant::now();
            black_box(apply_baseline(&rules, black_box(&input)).len());
            theirs.push(start.elapsed());
        }
        // Each round's two runs see the same moment of the machine: the median of their ratios is the least
        // disturbed by slow and fast spells.
        let mut round_ratios: Vec<f64> = ours
            .iter()
            .zip(&theirs)
            .map(|(ours, theirs)| theirs.as_secs_f64() / ours.as_secs_f64())
            .collect();
        round_ratios.sort_unstable_by(f64::total_cmp);
        let round_ratio = round_ratios[round_ratios.len() / 2];
        let (our_min, their_min) = (*ours.iter().min().unwrap(), *theirs.iter().min().unwrap());
        let (ours, theirs) = (median(ours), median(theirs));
        println!(
            "{name:<10} {:>8.1} µs ({:>6.1} µs)   {:>8.1} µs ({:>6.1} µs)   {:>5.2}× ({:>5.2}×)      {:>5.2}×               {:.2} ({:.2})",
            ours.as_secs_f64() * 1e6,
            our_min.as_secs_f64() * 1e6,
            theirs.as_secs_f64() * 1e6,
            their_min.as_secs_f64() * 1e6,
            theirs.as_secs_f64() / ours.as_secs_f64(),
            their_min.as_secs_f64() / our_min.as_secs_f64(),
            round_ratio,
            input.len() as f64 / ours.as_secs_f64() / 1e9,
            input.len() as f64 / our_min.as_secs_f64() / 1e9,
        );
    }
}
