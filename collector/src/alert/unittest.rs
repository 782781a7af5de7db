//! `vigil-collector rules test`: runs `promtool test rules` files unchanged, so one test format serves Vigil
//! and Prometheus.
//!
//! The format (Prometheus `docs/configuration/unit_testing_rules.md`): `rule_files` (relative to the test file),
//! `evaluation_interval` (1m), and `tests`, each with `interval`, `input_series` (`series` and expanding
//! `values` notation: `1+2x3`, `_`, `stale`), `alert_rule_test` (firing alerts of `alertname` at `eval_time`
//! with `exp_labels` and `exp_annotations`) and `promql_expr_test` (`expr` at `eval_time` gives
//! `exp_samples`). Rules are evaluated from time 0 every `evaluation_interval`, as promtool does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use serde::Deserialize;

use super::promql;
use super::rules::{self, Group, RuleKind};
use super::state::{AlertState, RuleState};
use super::template;
use super::tsdb::{self, Labels, NAME, Tsdb};

#[derive(Deserialize)]
struct TestFile {
    rule_files: Vec<String>,
    #[serde(default, with = "crate::component::duration::option")]
    evaluation_interval: Option<Duration>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    tests: Vec<TestGroup>,
}

#[derive(Deserialize)]
struct TestGroup {
    #[serde(default, with = "crate::component::duration::option")]
    interval: Option<Duration>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    name: Option<String>,
    /// What the rules' templates read as `$externalLabels`.
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    /// What they read as `$externalURL`.
    #[serde(default)]
    external_url: Option<String>,
}

#[derive(Deserialize)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Deserialize)]
struct AlertTest {
    #[serde(with = "crate::component::duration")]
    eval_time: Duration,
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Deserialize)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ExprTest {
    expr: String,
    #[serde(with = "crate::component::duration")]
    eval_time: Duration,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Deserialize)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: f64,
}

/// A value in series notation: a number (a stale marker for `stale`), or none (`_`).
type Point = Option<f64>;

/// Expands promtool's series-values notation: `1 2 3`, `1+2x3` (1 3 5 7), `1-1x2`, `5x2` (5 5 5), `_`,
/// `_x3`, `stale`.
pub fn expand_values(text: &str) -> Result<Vec<Point>, String> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        if word == "_" {
            out.push(None);
            continue;
        }
        if word == "stale" {
            out.push(Some(tsdb::STALE));
            continue;
        }
        let Some((head, times)) = word.split_once('x') else {
            out.push(Some(parse_number(word)?));
            continue;
        };
        let times: usize = times
            .parse()
            .map_err(|_| format!("`{word}`: `{times}` is not a repetition count"))?;
        if head == "_" {
            out.extend(std::iter::repeat_n(None, times));
            continue;
        }
        // `a+b`, `a-b` or `a` (the sign of `a` itself does not split).
        let split = head[1..].find(['+', '-']).map(|i| i + 1);
        let (start, step) = match split {
            Some(i) => {
                let step = parse_number(&head[i + 1..])?;
                (
                    parse_number(&head[..i])?,
                    if &head[i..=i] == "-" { -step } else { step },
                )
            }
            None => (parse_number(head)?, 0.0),
        };
        for i in 0..=times {
            out.push(Some(start + step * i as f64));
        }
    }
    Ok(out)
}

fn parse_number(text: &str) -> Result<f64, String> {
    match text {
        "Inf" | "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse()
            .map_err(|_| format!("`{text}` is not a number")),
    }
}

/// The labels of a series written as a selector (`up{job="a"}`).
pub fn series_labels(text: &str) -> Result<Labels, String> {
    let expr = promql_parser::parser::parse(text).map_err(|e| format!("`{text}`: {e}"))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("`{text}` is not a series"));
    };
    let mut labels = Vec::new();
    if let Some(name) = vs.name {
        labels.push((NAME.to_string(), name));
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(format!("`{text}`: a series has only `=` labels"));
        }
        labels.push((m.name, m.value));
    }
    Ok(tsdb::sorted(labels))
}

fn labels_text(labels: &Labels) -> String {
    let name = tsdb::label(labels, NAME).unwrap_or("");
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k != NAME)
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(", "))
}

/// promtool compares sample values exactly (NaN equals NaN).
fn same_value(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// The outcome of one test file: the problems found (empty when it passed).
pub struct Outcome {
    /// Each failure, as promtool words them.
    pub failures: Vec<String>,
}

/// Runs the test file at `path`.
pub fn run(path: &Path) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let env = |_: &str| None;
    let (tree, locations) = crate::component::yaml::parse(&text, &env).map_err(|errors| {
        errors
            .iter()
            .map(|e| {
                format!(
                    "{}:{}:{}: {}",
                    path.display(),
                    e.location.line,
                    e.location.column,
                    e.message
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let file: TestFile =
        crate::component::yaml::decode_all(&tree, "", &locations).map_err(|errors| {
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{}:{}:{}: {}: {}",
                        path.display(),
                        e.location.line,
                        e.location.column,
                        e.path,
                        e.message
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })?;
    let base = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let mut groups: Vec<Group> = Vec::new();
    for rule_file in &file.rule_files {
        let rule_path = base.join(rule_file);
        let text = std::fs::read_to_string(&rule_path)
            .map_err(|e| format!("{}: {e}", rule_path.display()))?;
        groups.extend(rules::load(&rule_path, &text, &env).map_err(|e| e.to_string())?);
    }
    if !file.group_eval_order.is_empty() {
        groups.sort_by_key(|g| {
            file.group_eval_order
                .iter()
                .position(|n| *n == g.name)
                .unwrap_or(usize::MAX)
        });
    }
    let evaluation = file
        .evaluation_interval
        .unwrap_or(Duration::from_secs(60))
        .as_millis() as i64;
    let mut failures = Vec::new();
    for (index, test) in file.tests.iter().enumerate() {
        let name = test.name.clone().unwrap_or_else(|| format!("test {index}"));
        failures.extend(
            run_group(test, &groups, evaluation)?
                .into_iter()
                .map(|f| format!("    {name}: {f}")),
        );
    }
    Ok(Outcome { failures })
}

/// Firing alerts by name: their labels and annotations.
type Firing = BTreeMap<String, Vec<(Labels, BTreeMap<String, String>)>>;

fn run_group(test: &TestGroup, groups: &[Group], evaluation: i64) -> Result<Vec<String>, String> {
    let interval = test.interval.map_or(evaluation, |d| d.as_millis() as i64);
    let mut db = Tsdb::new(Duration::from_secs(u64::MAX / 4_000), usize::MAX);
    for input in &test.input_series {
        let labels = series_labels(&input.series)?;
        for (i, point) in expand_values(&input.values)?.into_iter().enumerate() {
            if let Some(value) = point {
                db.append(labels.clone(), i as i64 * interval, value);
            }
        }
    }
    let mut checks: Vec<i64> = test
        .alert_rule_test
        .iter()
        .map(|t| t.eval_time.as_millis() as i64)
        .chain(
            test.promql_expr_test
                .iter()
                .map(|t| t.eval_time.as_millis() as i64),
        )
        .collect();
    checks.sort_unstable();
    let end = checks.last().copied().unwrap_or(0);
    let external = std::sync::Arc::new(template::External {
        labels: test.external_labels.clone(),
        url: test.external_url.clone().unwrap_or_default(),
    });
    let mut states: Vec<Vec<RuleState>> = groups
        .iter()
        .map(|g| {
            g.rules
                .iter()
                .map(|_| RuleState::default().with_external(external.clone()))
                .collect()
        })
        .collect();
    let mut failures = Vec::new();
    let mut t = 0;
    // Alert checks see the state of the last evaluation at or before their time.
    let mut firing_at: BTreeMap<i64, Firing> = BTreeMap::new();
    while t <= end {
        for (g, group) in groups.iter().enumerate() {
            for (r, rule) in group.rules.iter().enumerate() {
                let samples = promql::instant(&rule.expr, &db, t).map_err(|e| e.to_string())?;
                match &rule.kind {
                    RuleKind::Record { name } => {
                        for sample in samples {
                            let mut labels = super::state::result_labels(&sample, &rule.labels);
                            labels.push((NAME.into(), name.clone()));
                            db.append(tsdb::sorted(labels), t, sample.value);
                        }
                    }
                    RuleKind::Alert { .. } => states[g][r].evaluate(rule, &samples, t),
                }
            }
        }
        let mut firing = Firing::new();
        for alert in states.iter().flatten().flat_map(|s| s.active.values()) {
            if alert.state == AlertState::Firing {
                let name = tsdb::label(&alert.labels, "alertname")
                    .unwrap_or("")
                    .to_string();
                firing
                    .entry(name)
                    .or_default()
                    .push((alert.labels.clone(), alert.annotations.clone()));
            }
        }
        firing_at.insert(t, firing);
        t += evaluation;
    }
    for check in &test.alert_rule_test {
        let at = check.eval_time.as_millis() as i64;
        let got = firing_at
            .range(..=at)
            .next_back()
            .and_then(|(_, f)| f.get(&check.alertname).cloned())
            .unwrap_or_default();
        let mut got: Vec<String> = got
            .iter()
            .map(|(labels, annotations)| {
                format!("labels:{} annotations:{annotations:?}", labels_text(labels))
            })
            .collect();
        let mut want: Vec<String> = check
            .exp_alerts
            .iter()
            .map(|e| {
                let mut labels: Labels = e.exp_labels.clone().into_iter().collect();
                labels.push(("alertname".into(), check.alertname.clone()));
                let labels = tsdb::sorted(labels);
                format!(
                    "labels:{} annotations:{:?}",
                    labels_text(&labels),
                    e.exp_annotations
                )
            })
            .collect();
        got.sort();
        want.sort();
        if got != want {
            failures.push(format!(
                "alertname: {}, time: {}, \n        exp:{want:?}, \n        got:{got:?}",
                check.alertname,
                humantime::format_duration(check.eval_time)
            ));
        }
    }
    for check in &test.promql_expr_test {
        let at = check.eval_time.as_millis() as i64;
        let expr = promql::parse(&check.expr).map_err(|e| format!("expr `{}`: {e}", check.expr))?;
        let got = promql::instant(&expr, &db, at).map_err(|e| e.to_string())?;
        let mut want = Vec::new();
        for sample in &check.exp_samples {
            let labels = if sample.labels.is_empty() {
                Vec::new()
            } else {
                series_labels(&sample.labels)?
            };
            want.push((labels, sample.value));
        }
        let mut got: Vec<(Labels, f64)> = got.into_iter().map(|s| (s.labels, s.value)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 == w.0 && same_value(g.1, w.1));
        if !same {
            let show = |list: &[(Labels, f64)]| {
                list.iter()
                    .map(|(l, v)| format!("{{labels: {}, value: {v}}}", labels_text(l)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            failures.push(format!(
                "expr: {:?}, time: {}, \n        exp: [{}]\n        got: [{}]",
                check.expr,
                humantime::format_duration(check.eval_time),
                show(&want),
                show(&got)
            ));
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_notation_expands_like_promtool() {
        let expanded = expand_values("1+2x3 _ stale -1-1x1 5x2 _x2").unwrap();
        assert!(tsdb::is_stale(expanded[5].unwrap()));
        let bits: Vec<Option<u64>> = expanded.iter().map(|p| p.map(f64::to_bits)).collect();
        let want: Vec<Option<f64>> = vec![
            Some(1.0),
            Some(3.0),
            Some(5.0),
            Some(7.0),
            None,
            Some(tsdb::STALE),
            Some(-1.0),
            Some(-2.0),
            Some(5.0),
            Some(5.0),
            Some(5.0),
            None,
            None,
        ];
        assert_eq!(
            bits,
            want.iter().map(|p| p.map(f64::to_bits)).collect::<Vec<_>>()
        );
        assert!(expand_values("1+x").is_err());
        assert!(expand_values("abc").is_err());
    }

    /// `external_labels` and `external_url` of a test group are what its rules' templates read as
    /// `$externalLabels` and `$externalURL`, and an empty label is dropped: the verdicts `promtool test rules`
    /// gives on the same files (checked against the real one in `tests/tests/alerting.rs`).
    #[test]
    fn external_labels_and_url_reach_the_templates() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/external-labels");
        let outcome = run(&fixture.join("tests.yaml")).unwrap();
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        // One expectation changed: exactly that test fails.
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture.join("rules.yaml"), dir.path().join("rules.yaml")).unwrap();
        let tests = std::fs::read_to_string(fixture.join("tests.yaml")).unwrap();
        let broken = dir.path().join("tests.yaml");
        std::fs::write(
            &broken,
            tests.replace("see https://prom", "see http://prom"),
        )
        .unwrap();
        let outcome = run(&broken).unwrap();
        assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    }

    #[test]
    fn series_are_written_as_selectors() {
        assert_eq!(
            series_labels("up{job=\"a\", instance=\"b\"}").unwrap(),
            vec![
                (NAME.to_string(), "up".to_string()),
                ("instance".into(), "b".into()),
                ("job".into(), "a".into())
            ]
        );
        assert!(series_labels("up{job=~\"a\"}").is_err());
        assert!(series_labels("rate(up[1m])").is_err());
    }
}
