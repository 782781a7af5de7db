//! Rule files: Prometheus rule files (`groups:` of alerting and recording rules) unchanged, and Vigil's seed
//! format (`alerts: [{name, condition, severity, channels}]`), both read with every problem's line and column.
//!
//! In the seed format:
//! * `severity` becomes the `severity` label and `channels` the channels the alert goes to;
//! * `for`, `keep_firing_for`, `labels` and `annotations` may be added, as in Prometheus;
//! * a condition of the form `name == 'value'` (or `!=`) compares a state set: it means
//!   `name{status="value"} == 1` (or `== 0`), which is how the SDK exports `training.status`;
//! * the file's rules form one group named after the file, evaluated at the connector's interval.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use promql_parser::parser::Expr;
use serde::Deserialize;

use super::promql::{self, QueryError};
use super::state::NoData;
use crate::component::yaml::{self, Location};
use crate::component::{ConfigError, ConfigErrors};

/// An alerting or a recording rule.
#[derive(Clone, Debug)]
pub enum RuleKind {
    /// `alert:`.
    Alert {
        /// The alert name (`alertname`).
        name: String,
        /// How long the condition must hold before the alert fires.
        hold: Duration,
        /// How long it keeps firing after the condition stops holding.
        keep_firing_for: Duration,
        /// Annotation templates.
        annotations: BTreeMap<String, String>,
        /// Channels named by the seed format's `channels:` (empty: routing decides).
        channels: Vec<String>,
        /// What this rule's alerts become when their series disappear, over the connector's `no_data`
        /// (`None`: the connector's).
        no_data: Option<NoData>,
    },
    /// `record:`: the result is stored under this metric name.
    Record {
        /// The new metric name.
        name: String,
    },
}

/// One rule, parsed and checked.
#[derive(Clone, Debug)]
pub struct Rule {
    /// What it is.
    pub kind: RuleKind,
    /// The condition or the recorded expression.
    pub expr: Expr,
    /// The expression as written (after the seed rewrite), for `generatorURL` and exports.
    pub expr_text: String,
    /// Labels added to every result.
    pub labels: BTreeMap<String, String>,
    /// Where the rule is written.
    pub location: Location,
}

impl Rule {
    /// The alert or record name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Alert { name, .. } | RuleKind::Record { name } => name,
        }
    }
}

/// A group of rules evaluated together, in order.
#[derive(Clone, Debug)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// Its own interval, if set.
    pub interval: Option<Duration>,
    /// Rules in file order.
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromFile {
    groups: Vec<PromGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromGroup {
    name: String,
    #[serde(default, with = "crate::component::duration::option")]
    interval: Option<Duration>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    rules: Vec<PromRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromRule {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: String,
    #[serde(default, rename = "for", with = "crate::component::duration::option")]
    hold: Option<Duration>,
    #[serde(default, with = "crate::component::duration::option")]
    keep_firing_for: Option<Duration>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Vigil's own key (Prometheus has no equivalent; `rules export` keeps it as a comment).
    #[serde(default)]
    no_data: Option<NoData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    alerts: Vec<SeedRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRule {
    name: String,
    condition: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default, rename = "for", with = "crate::component::duration::option")]
    hold: Option<Duration>,
    #[serde(default, with = "crate::component::duration::option")]
    keep_firing_for: Option<Duration>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Vigil's own key (Prometheus has no equivalent; `rules export` keeps it as a comment).
    #[serde(default)]
    no_data: Option<NoData>,
}

/// `name == 'value'` / `name != 'value'` (a whole condition) as a state-set comparison.
pub fn rewrite_state_set(condition: &str) -> String {
    let text = condition.trim();
    for (op, wanted) in [("==", 1), ("!=", 0)] {
        let Some((name, value)) = text.split_once(op) else {
            continue;
        };
        let name = name.trim();
        let value = value.trim();
        let quoted = value.len() >= 2
            && ((value.starts_with('\'') && value.ends_with('\''))
                || (value.starts_with('"') && value.ends_with('"')));
        let is_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if quoted && is_name {
            let inner = &value[1..value.len() - 1];
            return format!("{name}{{status={inner:?}}} == {wanted}");
        }
    }
    text.to_string()
}

/// Reads one rule file (either format), with `env` for `${env:…}`.
pub fn load(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Group>, ConfigErrors> {
    let source = path.display().to_string();
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        source: source.clone(),
        errors,
    };
    let error = |location: Location, path: &str, message: String| ConfigError {
        location,
        path: path.to_string(),
        message,
    };
    let (tree, locations) = yaml::parse(text, env).map_err(|errors| {
        fail(
            errors
                .into_iter()
                .map(|e| error(e.location, "", e.message))
                .collect(),
        )
    })?;
    let decode_errors = |errors: Vec<yaml::DecodeError>| {
        fail(
            errors
                .into_iter()
                .map(|e| error(e.location, &e.path, e.message))
                .collect(),
        )
    };
    let mut errors = Vec::new();
    let check_expr =
        |errors: &mut Vec<ConfigError>, at: &str, rule: &str, text: &str| match promql::parse(text)
        {
            Ok(expr) => Some(expr),
            Err(e) => {
                let what = match e {
                    QueryError::Parse(message) => {
                        format!("rule `{rule}`: not valid PromQL: {message}")
                    }
                    unsupported => format!("rule `{rule}`: {unsupported}"),
                };
                errors.push(error(locations.find(at), at, what));
                None
            }
        };
    let mut groups = Vec::new();
    if tree.get("alerts").is_some() {
        let seed: SeedFile = yaml::decode_all(&tree, "", &locations).map_err(decode_errors)?;
        let name = path.file_stem().map_or_else(
            || "alerts".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        let mut rules = Vec::new();
        for (i, rule) in seed.alerts.into_iter().enumerate() {
            let at = format!("alerts[{i}].condition");
            let expr_text = rewrite_state_set(&rule.condition);
            let Some(expr) = check_expr(&mut errors, &at, &rule.name, &expr_text) else {
                continue;
            };
            let mut labels = rule.labels;
            if let Some(severity) = rule.severity {
                labels.insert("severity".into(), severity);
            }
            rules.push(Rule {
                kind: RuleKind::Alert {
                    name: rule.name,
                    hold: rule.hold.unwrap_or_default(),
                    keep_firing_for: rule.keep_firing_for.unwrap_or_default(),
                    annotations: rule.annotations,
                    channels: rule.channels,
                    no_data: rule.no_data,
                },
                expr,
                expr_text,
                labels,
                location: locations.find(&format!("alerts[{i}]")),
            });
        }
        groups.push(Group {
            name,
            file: source.clone(),
            interval: None,
            rules,
        });
    } else {
        let file: PromFile = yaml::decode_all(&tree, "", &locations).map_err(decode_errors)?;
        for (g, group) in file.groups.into_iter().enumerate() {
            if group.limit.is_some_and(|l| l > 0) {
                errors.push(error(
                    locations.find(&format!("groups[{g}].limit")),
                    &format!("groups[{g}].limit"),
                    "`limit` is not supported by Vigil's rule evaluator".into(),
                ));
            }
            let mut rules = Vec::new();
            for (r, rule) in group.rules.into_iter().enumerate() {
                let at = format!("groups[{g}].rules[{r}]");
                let kind = match (rule.alert, rule.record) {
                    (Some(name), None) => RuleKind::Alert {
                        name,
                        hold: rule.hold.unwrap_or_default(),
                        keep_firing_for: rule.keep_firing_for.unwrap_or_default(),
                        annotations: rule.annotations,
                        channels: Vec::new(),
                        no_data: rule.no_data,
                    },
                    (None, Some(name)) => {
                        if rule.hold.is_some()
                            || !rule.annotations.is_empty()
                            || rule.no_data.is_some()
                        {
                            errors.push(error(
                                locations.find(&at),
                                &at,
                                format!("recording rule `{name}`: `for`, `annotations` and `no_data` belong to alerting rules"),
                            ));
                        }
                        RuleKind::Record { name }
                    }
                    _ => {
                        errors.push(error(
                            locations.find(&at),
                            &at,
                            "a rule needs exactly one of `alert` and `record`".into(),
                        ));
                        continue;
                    }
                };
                let name = match &kind {
                    RuleKind::Alert { name, .. } | RuleKind::Record { name } => name.clone(),
                };
                let Some(expr) = check_expr(&mut errors, &format!("{at}.expr"), &name, &rule.expr)
                else {
                    continue;
                };
                let mut labels = group.labels.clone();
                labels.extend(rule.labels);
                rules.push(Rule {
                    kind,
                    expr,
                    expr_text: rule.expr,
                    labels,
                    location: locations.find(&at),
                });
            }
            groups.push(Group {
                name: group.name,
                file: source.clone(),
                interval: group.interval,
                rules,
            });
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        errors.sort_by_key(|e| (e.location.line, e.location.column));
        Err(fail(errors))
    }
}

/// A duration as Prometheus writes one (`1h30m`, `15s`, `500ms`).
pub fn prometheus_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

fn quoted(text: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::Value::String(text.to_string()).to_string()
}

/// `groups` as a Prometheus rule file (what `promtool check rules` accepts). The seed format's channels
/// have no Prometheus equivalent: they are kept as comments.
pub fn to_prometheus_yaml(groups: &[Group]) -> String {
    let mut out = String::from("groups:\n");
    for group in groups {
        out.push_str(&format!("  - name: {}\n", quoted(&group.name)));
        if let Some(interval) = group.interval {
            out.push_str(&format!(
                "    interval: {}\n",
                prometheus_duration(interval)
            ));
        }
        out.push_str("    rules:\n");
        for rule in &group.rules {
            match &rule.kind {
                RuleKind::Alert {
                    name,
                    hold,
                    keep_firing_for,
                    annotations,
                    channels,
                    no_data,
                } => {
                    if !channels.is_empty() {
                        out.push_str(&format!(
                            "      # Vigil channels: {}\n",
                            channels.join(", ")
                        ));
                    }
                    if let Some(no_data) = no_data {
                        out.push_str(&format!("      # Vigil no_data: {}\n", no_data.name()));
                    }
                    out.push_str(&format!("      - alert: {}\n", quoted(name)));
                    out.push_str(&format!("        expr: {}\n", quoted(&rule.expr_text)));
                    if !hold.is_zero() {
                        out.push_str(&format!("        for: {}\n", prometheus_duration(*hold)));
                    }
                    if !keep_firing_for.is_zero() {
                        out.push_str(&format!(
                            "        keep_firing_for: {}\n",
                            prometheus_duration(*keep_firing_for)
                        ));
                    }
                    write_map(&mut out, "labels", &rule.labels);
                    write_map(&mut out, "annotations", annotations);
                }
                RuleKind::Record { name } => {
                    out.push_str(&format!("      - record: {}\n", quoted(name)));
                    out.push_str(&format!("        expr: {}\n", quoted(&rule.expr_text)));
                    write_map(&mut out, "labels", &rule.labels);
                }
            }
        }
    }
    out
}

fn write_map(out: &mut String, key: &str, map: &BTreeMap<String, String>) {
    if map.is_empty() {
        return;
    }
    out.push_str(&format!("        {key}:\n"));
    for (k, v) in map {
        out.push_str(&format!("          {}: {}\n", quoted(k), quoted(v)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn seed_state_set_conditions_compare_the_status_label() {
        assert_eq!(
            rewrite_state_set("training_status == 'failed'"),
            "training_status{status=\"failed\"} == 1"
        );
        assert_eq!(
            rewrite_state_set("training_status != \"ok\""),
            "training_status{status=\"ok\"} == 0"
        );
        assert_eq!(rewrite_state_set("error_rate > 0.1"), "error_rate > 0.1");
        assert_eq!(rewrite_state_set("a == b"), "a == b");
        assert_eq!(rewrite_state_set("9a == 'x'"), "9a == 'x'");
    }

    #[test]
    fn the_seed_format_loads_with_severity_and_channels() {
        let text = "alerts:\n  - name: training_failed\n    condition: training_status == 'failed'\n    severity: error\n    channels: [email]\n    for: 1m\n";
        let groups = load(Path::new("alerts.yaml"), text, &no_env).unwrap();
        assert_eq!(groups[0].name, "alerts");
        let rule = &groups[0].rules[0];
        assert_eq!(rule.name(), "training_failed");
        assert_eq!(rule.labels["severity"], "error");
        assert_eq!(rule.location.line, 2);
        let RuleKind::Alert { channels, hold, .. } = &rule.kind else {
            panic!("an alert");
        };
        assert_eq!(channels, &["email"]);
        assert_eq!(*hold, Duration::from_secs(60));
    }

    #[test]
    fn prometheus_files_load_with_group_labels_and_recording_rules() {
        let text = "groups:\n  - name: g\n    interval: 30s\n    labels: {team: ml}\n    rules:\n      - record: job:errors:rate5m\n        expr: sum by (job) (rate(errors_total[5m]))\n      - alert: Errors\n        expr: job:errors:rate5m > 1\n        for: 5m\n        labels: {severity: page}\n        annotations: {summary: 'errors on {{ $labels.job }}'}\n";
        let groups = load(Path::new("r.yaml"), text, &no_env).unwrap();
        assert_eq!(groups[0].interval, Some(Duration::from_secs(30)));
        assert!(matches!(groups[0].rules[0].kind, RuleKind::Record { .. }));
        assert_eq!(groups[0].rules[1].labels["team"], "ml");
        assert_eq!(groups[0].rules[1].labels["severity"], "page");
    }

    /// A rule may say what its alerts become when their series disappear, in both formats; a recording rule
    /// may not; the export keeps it as a comment, since Prometheus has no such key.
    #[test]
    fn a_rule_s_own_no_data_is_read_from_both_formats_and_exported_as_a_comment() {
        let seed = "alerts:\n  - name: training_failed\n    condition: training_status == 'failed'\n    no_data: alerting\n  - name: gpu_idle\n    condition: gpu_usage < 0.3\n";
        let groups = load(Path::new("alerts.yaml"), seed, &no_env).unwrap();
        let no_data = |rule: &Rule| match &rule.kind {
            RuleKind::Alert { no_data, .. } => *no_data,
            RuleKind::Record { .. } => panic!("an alert"),
        };
        assert_eq!(no_data(&groups[0].rules[0]), Some(NoData::Alerting));
        assert_eq!(no_data(&groups[0].rules[1]), None);
        let exported = to_prometheus_yaml(&groups);
        assert!(
            exported
                .contains("      # Vigil no_data: alerting\n      - alert: \"training_failed\"\n"),
            "{exported}"
        );
        assert!(!exported.contains("        no_data"), "{exported}");
        assert!(
            !exported.contains("keep_firing_for"),
            "no keep_firing_for when the rules have none: {exported}"
        );
        let held = "alerts:\n  - name: a\n    condition: up == 0\n    keep_firing_for: 2m\n";
        let exported = to_prometheus_yaml(&load(Path::new("a.yaml"), held, &no_env).unwrap());
        assert!(
            exported.contains("        keep_firing_for: 2m\n"),
            "{exported}"
        );

        let prometheus = "groups:\n  - name: g\n    rules:\n      - alert: Gone\n        expr: up == 0\n        no_data: keep_last\n";
        let groups = load(Path::new("r.yaml"), prometheus, &no_env).unwrap();
        assert_eq!(no_data(&groups[0].rules[0]), Some(NoData::KeepLast));

        let recording = "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: up\n        no_data: ok\n";
        let errors = load(Path::new("r.yaml"), recording, &no_env)
            .unwrap_err()
            .to_string();
        assert!(errors.contains("r.yaml:4:"), "{errors}");
        assert!(errors.contains("`no_data` belong"), "{errors}");

        let wrong = "alerts:\n  - name: a\n    condition: up == 0\n    no_data: silence\n";
        let errors = load(Path::new("a.yaml"), wrong, &no_env)
            .unwrap_err()
            .to_string();
        assert!(errors.contains("a.yaml:4:"), "{errors}");
        assert!(errors.contains("silence"), "{errors}");
    }

    #[test]
    fn exports_read_back_the_same() {
        let text = "alerts:\n  - name: training_failed\n    condition: training_status == 'failed'\n    severity: error\n    channels: [email]\n    for: 90s\n    annotations: {summary: 'run {{ $labels.run_id }} \"failed\"'}\n";
        let groups = load(Path::new("alerts.yaml"), text, &no_env).unwrap();
        let exported = to_prometheus_yaml(&groups);
        assert!(
            exported.contains("      # Vigil channels: email\n"),
            "{exported}"
        );
        assert!(exported.contains("        for: 1m30s\n"), "{exported}");
        let again = load(Path::new("exported.yaml"), &exported, &no_env).unwrap();
        assert_eq!(again[0].name, "alerts");
        let (a, b) = (&groups[0].rules[0], &again[0].rules[0]);
        assert_eq!(a.expr_text, b.expr_text);
        assert_eq!(a.labels, b.labels);
        let (
            RuleKind::Alert {
                annotations: x,
                hold: h1,
                ..
            },
            RuleKind::Alert {
                annotations: y,
                hold: h2,
                ..
            },
        ) = (&a.kind, &b.kind)
        else {
            panic!("alerts");
        };
        assert_eq!((x, h1), (y, h2));
        assert_eq!(
            prometheus_duration(Duration::from_millis(90_061_500)),
            "1d1h1m1s500ms"
        );
    }

    #[test]
    fn errors_name_the_rule_file_line_and_construct() {
        let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: rate(x)\n      - alert: B\n        expr: label_replace(x, 'a', 'b', 'c', 'd')\n      - expr: x\n";
        let error = load(Path::new("bad.yaml"), text, &no_env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("bad.yaml:5:"), "{error}");
        assert!(error.contains("rule `A`: not valid PromQL"), "{error}");
        assert!(error.contains("bad.yaml:7:"), "{error}");
        assert!(
            error.contains("rule `B`: the function `label_replace` is not supported"),
            "{error}"
        );
        assert!(error.contains("bad.yaml:8:"), "{error}");
        assert!(
            error.contains("exactly one of `alert` and `record`"),
            "{error}"
        );
        let unknown = load(
            Path::new("u.yaml"),
            "alerts:\n  - name: x\n    condition: up\n    severtiy: high\n",
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(unknown.contains("u.yaml:4:"), "{unknown}");
    }
}
