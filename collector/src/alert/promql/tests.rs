use std::time::Duration;

use super::*;
use crate::alert::tsdb::{Tsdb, sorted};

const T: i64 = 10_000_000;

fn labels(name: &str, extra: &[(&str, &str)]) -> Labels {
    let mut l = vec![(NAME.to_string(), name.to_string())];
    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    sorted(l)
}

fn db() -> Tsdb {
    let mut db = Tsdb::new(Duration::from_secs(3600), 1000);
    // A counter growing by 15 every 15 s (1/s), and one growing 3/s with a reset.
    for i in 0..=20 {
        let t = T - 300_000 + i * 15_000;
        db.append(
            labels("requests_total", &[("job", "api"), ("code", "200")]),
            t,
            (i * 15) as f64,
        );
        let v = if i < 10 { i * 45 } else { (i - 10) * 45 };
        db.append(
            labels("requests_total", &[("job", "api"), ("code", "500")]),
            t,
            v as f64,
        );
    }
    db.append(
        labels("disk_free_pct", &[("instance", "a"), ("mountpoint", "/")]),
        T - 1000,
        5.0,
    );
    db.append(
        labels("disk_free_pct", &[("instance", "b"), ("mountpoint", "/")]),
        T - 1000,
        50.0,
    );
    // A stale series: last sample older than the lookback.
    db.append(
        labels("disk_free_pct", &[("instance", "old"), ("mountpoint", "/")]),
        T - 400_000,
        1.0,
    );
    for (le, count) in [("0.1", 50.0), ("0.5", 90.0), ("1", 100.0), ("+Inf", 100.0)] {
        db.append(
            labels("latency_seconds_bucket", &[("job", "api"), ("le", le)]),
            T,
            count,
        );
    }
    db.append(labels("info", &[("instance", "a"), ("team", "ml")]), T, 1.0);
    db
}

fn run(query: &str) -> Vec<Sample> {
    let expr = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut out = instant(&expr, &db(), T).unwrap();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

fn values(query: &str) -> Vec<f64> {
    run(query).into_iter().map(|s| s.value).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn rate_matches_prometheus_on_a_steady_counter_and_handles_resets() {
    let r = run("rate(requests_total[1m])");
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0].labels,
        vec![
            ("code".to_string(), "200".to_string()),
            ("job".into(), "api".into())
        ],
        "rate drops the metric name"
    );
    assert!(close(r[0].value, 1.0), "{}", r[0].value);
    assert!(close(r[1].value, 3.0), "{}", r[1].value);
    // Across the reset the increase still counts: 45 → 405, reset, 0 → 450 is 810 over 285 s of samples,
    // extrapolated to the 300 s range as Prometheus does.
    let across = values("increase(requests_total{code=\"500\"}[5m])");
    assert!(close(across[0], 810.0 * 300.0 / 285.0), "{across:?}");
    assert!(close(
        values("irate(requests_total{code=\"200\"}[1m])")[0],
        1.0
    ));
    assert!(close(
        values("delta(requests_total{code=\"200\"}[1m])")[0],
        60.0
    ));
}

#[test]
fn instant_selectors_look_back_five_minutes_and_honour_offset() {
    let instances: Vec<String> = run("disk_free_pct")
        .iter()
        .map(|s| label(&s.labels, "instance").unwrap().to_string())
        .collect();
    assert_eq!(instances, ["a", "b"]);
    assert_eq!(values("requests_total{code=\"200\"} offset 1m"), [240.0]);
    assert_eq!(values("requests_total{code=~\"2..\"}"), [300.0]);
    assert_eq!(
        values("requests_total{code!=\"200\", job=\"api\"}"),
        [450.0]
    );
}

#[test]
fn comparisons_filter_or_return_bool() {
    let low = run("disk_free_pct < 10");
    assert_eq!(low.len(), 1);
    assert_eq!(low[0].value, 5.0);
    assert_eq!(
        label(&low[0].labels, NAME),
        Some("disk_free_pct"),
        "a filter keeps the name"
    );
    let flags = run("disk_free_pct < bool 10");
    assert_eq!(
        flags.iter().map(|s| s.value).collect::<Vec<_>>(),
        [1.0, 0.0]
    );
    assert_eq!(label(&flags[0].labels, NAME), None);
    assert_eq!(values("10 > disk_free_pct"), [5.0]);
    assert_eq!(values("2 * 3 + 1"), [7.0]);
    assert_eq!(values("-disk_free_pct{instance=\"a\"}"), [-5.0]);
}

#[test]
fn aggregations_group_by_and_without() {
    assert_eq!(values("sum(rate(requests_total[1m]))").len(), 1);
    assert!(close(
        values("sum by (job) (rate(requests_total[1m]))")[0],
        4.0
    ));
    let without = run("max without (instance) (disk_free_pct)");
    assert_eq!(
        without[0].labels,
        vec![("mountpoint".to_string(), "/".to_string())]
    );
    assert_eq!(without[0].value, 50.0);
    assert_eq!(values("count(disk_free_pct)"), [2.0]);
    assert_eq!(values("avg(disk_free_pct)"), [27.5]);
    assert_eq!(values("min(disk_free_pct)"), [5.0]);
    assert_eq!(values("topk(1, disk_free_pct)"), [50.0]);
    assert_eq!(values("bottomk(1, disk_free_pct)"), [5.0]);
    assert_eq!(values("quantile(0.5, disk_free_pct)"), [27.5]);
}

#[test]
fn error_ratio_with_vector_matching() {
    let ratio = run(
        "sum by (job) (rate(requests_total{code=\"500\"}[1m])) / sum by (job) (rate(requests_total[1m]))",
    );
    assert_eq!(ratio.len(), 1);
    assert!(close(ratio[0].value, 0.75), "{ratio:?}");
    let joined = run("disk_free_pct * on (instance) group_left (team) info");
    assert_eq!(joined.len(), 1);
    assert_eq!(label(&joined[0].labels, "team"), Some("ml"));
    assert_eq!(label(&joined[0].labels, "mountpoint"), Some("/"));
    assert_eq!(values("disk_free_pct and on (instance) info"), [5.0]);
    assert_eq!(values("disk_free_pct unless on (instance) info"), [50.0]);
    assert_eq!(
        values("disk_free_pct{instance=\"a\"} or disk_free_pct").len(),
        2
    );
    // Many-to-many without group_left fails as in Prometheus.
    let expr = parse("requests_total + on (job) requests_total").unwrap();
    assert!(matches!(
        instant(&expr, &db(), T),
        Err(EvalError::DuplicateMatch(..))
    ));
}

#[test]
fn histogram_quantile_and_absent() {
    assert!(close(
        values("histogram_quantile(0.5, latency_seconds_bucket)")[0],
        0.1
    ));
    assert!(close(
        values("histogram_quantile(0.7, latency_seconds_bucket)")[0],
        0.3
    ));
    assert!(close(
        values("histogram_quantile(0.99, latency_seconds_bucket)")[0],
        0.95
    ));
    let absent = run("absent(nothing{job=\"api\", code=~\"5..\"})");
    assert_eq!(absent.len(), 1);
    assert_eq!(
        absent[0].labels,
        vec![("job".to_string(), "api".to_string())]
    );
    assert!(run("absent(disk_free_pct)").is_empty());
    assert_eq!(values("absent_over_time(nothing[5m])"), [1.0]);
}

#[test]
fn over_time_and_math_functions() {
    let q = "requests_total{code=\"200\"}[1m]";
    assert_eq!(values(&format!("max_over_time({q})")), [300.0]);
    assert_eq!(values(&format!("min_over_time({q})")), [255.0]);
    assert_eq!(values(&format!("count_over_time({q})")), [4.0]);
    assert_eq!(values(&format!("sum_over_time({q})")), [1110.0]);
    assert_eq!(values(&format!("avg_over_time({q})")), [277.5]);
    assert_eq!(values(&format!("last_over_time({q})")), [300.0]);
    assert_eq!(values("clamp_max(disk_free_pct, 10)"), [5.0, 10.0]);
    assert_eq!(values("clamp_min(disk_free_pct, 10)"), [10.0, 50.0]);
    assert_eq!(values("abs(-disk_free_pct)"), [5.0, 50.0]);
    assert_eq!(values("round(disk_free_pct / 3)"), [2.0, 17.0]);
    assert_eq!(values("time()"), [T as f64 / 1000.0]);
    assert_eq!(values("scalar(disk_free_pct{instance=\"a\"}) + 1"), [6.0]);
    assert_eq!(values("vector(1)"), [1.0]);
}

#[test]
fn unsupported_constructs_are_named_and_bad_queries_explained() {
    for (query, construct) in [
        ("max_over_time(rate(x[1m])[5m:1m])", "a subquery"),
        (
            "label_replace(x, \"a\", \"$1\", \"b\", \"(.*)\")",
            "the function `label_replace`",
        ),
        ("count_values(\"v\", x)", "the aggregation `count_values`"),
        ("x @ 100", "the `@` modifier"),
    ] {
        assert_eq!(
            parse(query),
            Err(QueryError::Unsupported(construct.into())),
            "{query}"
        );
    }
    assert!(matches!(parse("rate(x)"), Err(QueryError::Parse(_))));
    assert!(matches!(parse("sum(x"), Err(QueryError::Parse(_))));
}

#[test]
fn reach_covers_ranges_offsets_and_lookback() {
    assert_eq!(reach_ms(&parse("rate(x[10m])").unwrap()), 600_000);
    assert_eq!(reach_ms(&parse("x offset 1h").unwrap()), 3_900_000);
    assert_eq!(reach_ms(&parse("1 + 2").unwrap()), 0);
}

#[test]
fn selected_series_counts_what_the_selectors_read() {
    let db = db();
    let count = |q: &str| selected_series(&parse(q).unwrap(), &db);
    assert_eq!(count("disk_free_pct < 10"), 3);
    assert_eq!(
        count("rate(requests_total{code=\"500\"}[5m]) / on() group_left vector(1)"),
        1
    );
    assert_eq!(count("nothing_here > 1"), 0);
    assert_eq!(count("vector(1) > 0"), 0);
}
