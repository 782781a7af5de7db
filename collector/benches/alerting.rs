//! One evaluation cycle of 1,000 rules over 100,000 series (issue 19). The same rules and series are written to
//! `target/bench/alerting/` (`rules.yaml`, and `metrics.prom` as Prometheus scrapes it) so that
//! `scripts/bench-alerting` can have a real Prometheus evaluate them in the same run.
//!
//! Data: 50 gauges and 50 counters (`bench_gauge_K`, `bench_counter_K_total`), each with 10 jobs × 100 instances,
//! four samples 15 s apart (`metrics-0.prom` … `metrics-3.prom`, one per scrape). Rules (one group): for each
//! metric pair, 18 alerting rules (comparisons, `*_over_time`, `rate`/`irate`/`increase`/`delta`, aggregations
//! with `by`, `topk`, `quantile`, one with `for`, one on a recorded series) and 2 recording rules: 1,000 rules.
//!
//! `cargo bench -p vigil-collector --bench alerting`

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vigil_collector::alert::promql;
use vigil_collector::alert::rules::{self, RuleKind};
use vigil_collector::alert::state::RuleState;
use vigil_collector::alert::tsdb::{self, NAME, Tsdb};

const METRICS: usize = 50;
const JOBS: usize = 10;
const INSTANCES: usize = 100;
const STEPS: i64 = 4;
const STEP_MS: i64 = 15_000;
/// The evaluation time: the last sample's.
const NOW: i64 = 1_800_000_000_000;

fn value(metric: usize, job: usize, instance: usize, step: i64) -> f64 {
    // Deterministic, spread over [0, 1), a few series above 0.99.
    let x =
        (metric * 7919 + job * 104_729 + instance * 1_299_709) as u64 + step as u64 * 15_485_863;
    (x % 10_007) as f64 / 10_007.0
}

fn rules_text() -> String {
    let mut text = String::from("groups:\n  - name: bench\n    interval: 15s\n    rules:\n");
    for k in 0..METRICS {
        let g = format!("bench_gauge_{k}");
        let c = format!("bench_counter_{k}_total");
        for (i, expr) in [
            format!("{g} > 0.99"),
            format!("avg_over_time({g}[5m]) < 0.01"),
            format!("max by (job) ({g}) > 0.5"),
            format!("sum by (job) (rate({c}[5m])) > 100"),
            format!("rate({c}[5m]) > 100"),
            format!("{g}{{job=\"job3\"}} < 0.001"),
            format!("count by (job) ({g} > 0.9) > 20"),
            format!("increase({c}[5m]) > 1000000"),
            format!("abs({g} - 0.5) > 0.4999"),
            format!("avg by (job) ({g}) < 0.1"),
            format!("{g}{{instance=~\"i1.\"}} > 0.995"),
            format!("delta({g}[5m]) > 0.9"),
            format!("max_over_time({g}[5m]) < 0.001"),
            format!("irate({c}[5m]) > 1000"),
            format!("topk(3, {g}) > 2"),
            format!("quantile(0.99, {g}) > 1"),
        ]
        .into_iter()
        .enumerate()
        {
            let _ = writeln!(text, "      - alert: bench_{k}_{i}\n        expr: '{expr}'");
        }
        let _ = writeln!(
            text,
            "      - record: job:bench_counter_{k}:rate5m\n        expr: 'sum by (job) (rate({c}[5m]))'"
        );
        let _ = writeln!(
            text,
            "      - record: job:bench_gauge_{k}:max\n        expr: 'max by (job) ({g})'"
        );
        let _ = writeln!(
            text,
            "      - alert: bench_{k}_recorded\n        expr: 'job:bench_counter_{k}:rate5m > 1000000'"
        );
        let _ = writeln!(
            text,
            "      - alert: bench_{k}_for\n        expr: '{g} > 0.98'\n        for: 1m"
        );
    }
    text
}

fn main() {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench/alerting");
    std::fs::create_dir_all(&out).expect("create target/bench/alerting");
    let text = rules_text();
    std::fs::write(out.join("rules.yaml"), &text).expect("write rules");
    let groups = rules::load(&out.join("rules.yaml"), &text, &|_| None).expect("rules load");
    let rule_count: usize = groups.iter().map(|g| g.rules.len()).sum();

    let mut db = Tsdb::new(Duration::from_secs(3600), 1_000_000);
    for step in 0..STEPS {
        let mut exposition = String::new();
        let t = NOW - (STEPS - 1 - step) * STEP_MS;
        for k in 0..METRICS {
            for job in 0..JOBS {
                for instance in 0..INSTANCES {
                    let labels = |name: String| {
                        tsdb::sorted(vec![
                            (NAME.to_string(), name),
                            ("job".to_string(), format!("job{job}")),
                            ("instance".to_string(), format!("i{instance}")),
                        ])
                    };
                    let v = value(k, job, instance, step);
                    let counter = (step as f64 + 1.0) * 1000.0 * (1.0 + v);
                    db.append(labels(format!("bench_gauge_{k}")), t, v);
                    db.append(labels(format!("bench_counter_{k}_total")), t, counter);
                    let _ = writeln!(
                        exposition,
                        "bench_gauge_{k}{{job=\"job{job}\",instance=\"i{instance}\"}} {v}\nbench_counter_{k}_total{{job=\"job{job}\",instance=\"i{instance}\"}} {counter}"
                    );
                }
            }
        }
        std::fs::write(out.join(format!("metrics-{step}.prom")), exposition)
            .expect("write metrics");
    }
    println!("series: {}, rules: {rule_count}", db.len());

    let mut states: Vec<Vec<RuleState>> = groups
        .iter()
        .map(|g| g.rules.iter().map(|_| RuleState::default()).collect())
        .collect();
    let mut cycle = |db: &mut Tsdb| {
        let mut results = 0;
        for (g, group) in groups.iter().enumerate() {
            for (r, rule) in group.rules.iter().enumerate() {
                let samples = promql::instant(&rule.expr, db, NOW).expect("evaluation");
                results += samples.len();
                match &rule.kind {
                    RuleKind::Record { name } => {
                        for sample in samples {
                            let mut labels = sample.labels;
                            labels.push((NAME.into(), name.clone()));
                            db.append(tsdb::sorted(labels), NOW, sample.value);
                        }
                    }
                    RuleKind::Alert { .. } => states[g][r].evaluate(rule, &samples, NOW),
                }
            }
        }
        results
    };
    let results = cycle(&mut db);
    let mut times = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        std::hint::black_box(cycle(&mut db));
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let alerts: usize = states.iter().flatten().map(|s| s.active.len()).sum();
    println!("result samples per cycle: {results}, alert instances: {alerts}");
    println!(
        "vigil evaluation cycle: median {:.1} ms (min {:.1}, max {:.1}) over {} runs",
        median.as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0,
        times.len()
    );
    println!(
        "share of one core at a 15 s interval: {:.2} %",
        median.as_secs_f64() / 15.0 * 100.0
    );
    println!("rules and metrics for Prometheus: {}", out.display());
}
