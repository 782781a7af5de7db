//! Alert instances and their states, as Prometheus defines them (`rules/alerting.go`): a series for which the
//! condition holds is *pending*; it *fires* once it has held for `for`; when it stops holding it stays firing
//! for `keep_firing_for`, then it is *resolved* (kept 15 minutes so the resolution is notified). A pending
//! instance that stops holding is forgotten.

use std::collections::{BTreeMap, HashMap};

use super::promql::Sample;
use super::rules::{Rule, RuleKind};
use super::template;
use super::tsdb::{Labels, NAME};

/// How long a resolved alert is kept (and re-sent to Alertmanager), as Prometheus' `resolvedRetention`.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// Where an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AlertState {
    /// Condition holds, not yet for long enough.
    Pending,
    /// Firing.
    Firing,
    /// Was firing; the condition no longer holds.
    Resolved,
}

impl AlertState {
    /// `pending`, `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert: a rule and one series of its result.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    /// Labels: the series', the rule's, `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// State.
    pub state: AlertState,
    /// Latest value of the condition's series.
    pub value: f64,
    /// When the condition started holding (ms since the epoch).
    pub active_at: i64,
    /// When it started firing.
    pub fired_at: Option<i64>,
    /// When it was resolved.
    pub resolved_at: Option<i64>,
    /// Since when the condition no longer holds while `keep_firing_for` keeps it firing.
    pub keep_firing_since: Option<i64>,
    /// Channels the rule names.
    pub channels: Vec<String>,
    /// The rule's expression, for `generatorURL`.
    pub expr: String,
    /// Evaluations in a row in which the series the condition compares had no sample at all.
    #[serde(default)]
    pub missing: u32,
    /// In the no-data state: its series are gone and `no_data: alerting` keeps it firing.
    #[serde(default)]
    pub no_data: bool,
    /// It changed state more than `flapping.threshold` times within `flapping.window`: its notifications are
    /// held (after one saying so) until it is stable again.
    #[serde(default)]
    pub flapping: bool,
}

/// What an alert whose series are gone becomes (`no_data`: the connector's default, or a rule's own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// Resolved, as in Prometheus (a missing series is a false condition).
    #[default]
    Ok,
    /// Firing, marked `no_data="true"`, after `no_data_after` evaluations without data.
    Alerting,
    /// Left in the state it had.
    KeepLast,
}

impl NoData {
    /// The name written in config (`ok`, `alerting`, `keep_last`).
    pub fn name(self) -> &'static str {
        match self {
            NoData::Ok => "ok",
            NoData::Alerting => "alerting",
            NoData::KeepLast => "keep_last",
        }
    }
}

/// How instances of a rule treat missing data and flapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// What a missing series means.
    pub no_data: NoData,
    /// Evaluations without data before `no_data` applies.
    pub no_data_after: u32,
    /// State changes within `flap_window_ms` beyond which an instance is flapping (0: never).
    pub flap_threshold: usize,
    /// The flapping window.
    pub flap_window_ms: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            no_data: NoData::Ok,
            no_data_after: 3,
            flap_threshold: 0,
            flap_window_ms: 30 * 60 * 1000,
        }
    }
}

/// The instances of one alerting rule.
#[derive(Debug, Default)]
pub struct RuleState {
    /// Instances by labels.
    pub active: HashMap<Labels, Alert>,
    /// Until then (ms), instances restored after a restart are kept as they are while their source has not
    /// reported since: the collector's memory of samples starts empty, and "no data yet" must not resolve them.
    pub hold_until: i64,
    /// Missing data and flapping.
    pub policy: Policy,
    /// Recent firing/resolved changes per series, for flap detection.
    changes: HashMap<Labels, Vec<i64>>,
    /// What templates read as `$externalLabels` and `$externalURL`.
    pub external: std::sync::Arc<template::External>,
}

/// The labels of a rule's result series: the sample's without `__name__`, the rule's on top, none empty.
pub fn result_labels(sample: &Sample, rule_labels: &BTreeMap<String, String>) -> Labels {
    let mut labels: BTreeMap<String, String> = sample
        .labels
        .iter()
        .filter(|(k, _)| k != NAME)
        .cloned()
        .collect();
    labels.extend(rule_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    // As in Prometheus (`labels.Builder::Set`), a label whose value is empty (a template that expanded to
    // nothing) is no label: it also takes away the series' label of that name.
    labels.retain(|_, value| !value.is_empty());
    labels.into_iter().collect()
}

impl RuleState {
    /// No instances yet, under `policy`.
    pub fn new(policy: Policy) -> Self {
        RuleState {
            policy,
            ..RuleState::default()
        }
    }

    /// This state, its templates reading `external` as `$externalLabels` and `$externalURL`.
    pub fn with_external(self, external: std::sync::Arc<template::External>) -> Self {
        RuleState { external, ..self }
    }

    /// Applies one evaluation of `rule` at `now` (ms) whose condition returned `samples`.
    pub fn evaluate(&mut self, rule: &Rule, samples: &[Sample], now: i64) {
        self.evaluate_restored(rule, samples, now, &|_| false, &|_| true);
    }

    /// Records a firing/resolved change of `labels` and says whether the series is flapping.
    fn changed(&mut self, labels: &Labels, now: i64) -> bool {
        if self.policy.flap_threshold == 0 {
            return false;
        }
        let window = self.policy.flap_window_ms;
        let changes = self.changes.entry(labels.clone()).or_default();
        changes.retain(|at| now - at < window);
        changes.push(now);
        changes.len() > self.policy.flap_threshold
    }

    /// [`RuleState::evaluate`] after a restart: `reported` says whether the source of an alert's labels (its
    /// `job` and `instance`) has sent data since; until it has, or until `hold_until`, a restored instance whose
    /// series is missing is kept as it is.
    pub fn evaluate_restored(
        &mut self,
        rule: &Rule,
        samples: &[Sample],
        now: i64,
        reported: &dyn Fn(&Labels) -> bool,
        has_data: &dyn Fn(&Labels) -> bool,
    ) {
        let RuleKind::Alert {
            name,
            hold,
            keep_firing_for,
            annotations,
            channels,
            ..
        } = &rule.kind
        else {
            return;
        };
        let hold = hold.as_millis() as i64;
        let keep = keep_firing_for.as_millis() as i64;
        let mut seen = std::collections::HashSet::new();
        for sample in samples {
            // Templates see the series' own labels and value, as in Prometheus.
            let series_labels: BTreeMap<String, String> = sample
                .labels
                .iter()
                .filter(|(k, _)| k != NAME)
                .cloned()
                .collect();
            let mut rule_labels = BTreeMap::new();
            for (k, v) in &rule.labels {
                rule_labels.insert(
                    k.clone(),
                    template::expand_external(v, &series_labels, sample.value, &self.external),
                );
            }
            let mut labels = result_labels(sample, &rule_labels);
            labels.retain(|(k, _)| k != "alertname");
            labels.push(("alertname".into(), name.clone()));
            labels.sort();
            let expanded: BTreeMap<String, String> = annotations
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        template::expand_external(v, &series_labels, sample.value, &self.external),
                    )
                })
                .collect();
            seen.insert(labels.clone());
            match self.active.get_mut(&labels) {
                Some(alert) if alert.state != AlertState::Resolved => {
                    alert.value = sample.value;
                    alert.annotations = expanded;
                    alert.keep_firing_since = None;
                    alert.missing = 0;
                    alert.no_data = false;
                }
                _ => {
                    self.active.insert(
                        labels.clone(),
                        Alert {
                            labels,
                            annotations: expanded,
                            state: AlertState::Pending,
                            value: sample.value,
                            active_at: now,
                            fired_at: None,
                            resolved_at: None,
                            keep_firing_since: None,
                            channels: channels.clone(),
                            expr: rule.expr_text.clone(),
                            missing: 0,
                            no_data: false,
                            flapping: false,
                        },
                    );
                }
            }
        }
        let holding = now < self.hold_until;
        let policy = self.policy.clone();
        let mut resolved_now = Vec::new();
        self.active.retain(|labels, alert| {
            if seen.contains(labels) || (holding && !reported(labels)) {
                return true;
            }
            if alert.state != AlertState::Resolved && !has_data(labels) {
                alert.missing += 1;
                match policy.no_data {
                    NoData::Ok => {}
                    NoData::KeepLast => return true,
                    NoData::Alerting => {
                        if alert.missing >= policy.no_data_after && !alert.no_data {
                            alert.no_data = true;
                            if !alert.labels.iter().any(|(k, _)| k == "no_data") {
                                alert.labels.push(("no_data".into(), "true".into()));
                                alert.labels.sort();
                            }
                            if alert.state == AlertState::Pending {
                                alert.state = AlertState::Firing;
                                alert.fired_at = Some(now);
                            }
                        }
                        return true;
                    }
                }
            }
            match alert.state {
                AlertState::Pending => false,
                AlertState::Firing => {
                    let since = *alert.keep_firing_since.get_or_insert(now);
                    if keep > 0 && now - since < keep {
                        return true;
                    }
                    alert.state = AlertState::Resolved;
                    alert.resolved_at = Some(now);
                    resolved_now.push(labels.clone());
                    true
                }
                AlertState::Resolved => alert
                    .resolved_at
                    .is_some_and(|at| now - at < RESOLVED_RETENTION_MS),
            }
        });
        let mut fired_now = Vec::new();
        for (labels, alert) in self.active.iter_mut() {
            if alert.state == AlertState::Pending && now - alert.active_at >= hold {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(now);
                fired_now.push(labels.clone());
            }
        }
        for labels in resolved_now.into_iter().chain(fired_now) {
            let flapping = self.changed(&labels, now);
            if let Some(alert) = self.active.get_mut(&labels) {
                alert.flapping = flapping;
            }
        }
        // A series quiet for a whole window is stable again.
        let window = self.policy.flap_window_ms;
        self.changes
            .retain(|_, changes| changes.last().is_some_and(|at| now - at < window));
        for (labels, alert) in self.active.iter_mut() {
            if alert.flapping && !self.changes.contains_key(labels) {
                alert.flapping = false;
            }
        }
    }

    /// The `ALERTS` and `ALERTS_FOR_STATE` samples of the pending and firing instances.
    pub fn series(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for alert in self.active.values() {
            if alert.state == AlertState::Resolved {
                continue;
            }
            let mut labels = alert.labels.clone();
            labels.push((NAME.into(), "ALERTS".into()));
            labels.push(("alertstate".into(), alert.state.as_str().into()));
            labels.sort();
            out.push(Sample { labels, value: 1.0 });
            let mut labels = alert.labels.clone();
            labels.push((NAME.into(), "ALERTS_FOR_STATE".into()));
            labels.sort();
            out.push(Sample {
                labels,
                value: alert.active_at as f64 / 1000.0,
            });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::alert::promql;

    fn rule(hold: u64, keep: u64) -> Rule {
        Rule {
            kind: RuleKind::Alert {
                name: "DiskLow".into(),
                hold: Duration::from_secs(hold),
                keep_firing_for: Duration::from_secs(keep),
                annotations: [(
                    "summary".to_string(),
                    "{{ $labels.instance }} at {{ $value }}%".to_string(),
                )]
                .into(),
                channels: vec!["slack".into()],
                no_data: None,
            },
            expr: promql::parse("disk < 10").unwrap(),
            expr_text: "disk < 10".into(),
            labels: [("severity".to_string(), "warning".to_string())].into(),
            location: Default::default(),
        }
    }

    fn sample(instance: &str, value: f64) -> Sample {
        Sample {
            labels: vec![
                (NAME.into(), "disk".into()),
                ("instance".into(), instance.into()),
            ],
            value,
        }
    }

    fn states(state: &RuleState) -> Vec<(String, AlertState)> {
        let mut out: Vec<_> = state
            .active
            .values()
            .map(|a| {
                (
                    crate::alert::tsdb::label(&a.labels, "instance")
                        .unwrap_or("")
                        .to_string(),
                    a.state,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved() {
        let rule = rule(60, 0);
        let mut state = RuleState::default();
        state.evaluate(&rule, &[sample("a", 5.0)], 0);
        assert_eq!(states(&state), [("a".into(), AlertState::Pending)]);
        let alert = state.active.values().next().unwrap();
        assert_eq!(
            alert.labels,
            vec![
                ("alertname".to_string(), "DiskLow".to_string()),
                ("instance".into(), "a".into()),
                ("severity".into(), "warning".into())
            ]
        );
        assert_eq!(alert.annotations["summary"], "a at 5%");
        state.evaluate(&rule, &[sample("a", 4.0)], 59_999);
        assert_eq!(states(&state), [("a".into(), AlertState::Pending)]);
        state.evaluate(&rule, &[sample("a", 4.0)], 60_000);
        assert_eq!(states(&state), [("a".into(), AlertState::Firing)]);
        let series = state.series();
        assert_eq!(series.len(), 2);
        assert!(
            series
                .iter()
                .any(|s| crate::alert::tsdb::label(&s.labels, "alertstate") == Some("firing"))
        );
        assert!(series.iter().any(|s| s.value == 0.0
            && crate::alert::tsdb::label(&s.labels, NAME) == Some("ALERTS_FOR_STATE")));
        state.evaluate(&rule, &[], 75_000);
        assert_eq!(states(&state), [("a".into(), AlertState::Resolved)]);
        assert!(state.series().is_empty());
        state.evaluate(&rule, &[], 75_000 + RESOLVED_RETENTION_MS);
        assert!(state.active.is_empty());
    }

    #[test]
    fn pending_that_stops_is_forgotten_and_zero_for_fires_at_once() {
        let mut state = RuleState::default();
        state.evaluate(&rule(60, 0), &[sample("a", 5.0)], 0);
        state.evaluate(&rule(60, 0), &[], 15_000);
        assert!(state.active.is_empty());
        state.evaluate(&rule(0, 0), &[sample("b", 5.0)], 0);
        assert_eq!(states(&state), [("b".into(), AlertState::Firing)]);
    }

    #[test]
    fn restored_alerts_wait_for_their_source_or_the_grace_period() {
        let rule = rule(0, 0);
        let mut state = RuleState::default();
        state.evaluate(&rule, &[sample("a", 5.0), sample("b", 5.0)], 0);
        state.hold_until = 60_000;
        let reported = |labels: &Labels| crate::alert::tsdb::label(labels, "instance") == Some("a");
        state.evaluate_restored(&rule, &[], 1_000, &reported, &|_| true);
        assert_eq!(
            states(&state),
            [
                ("a".into(), AlertState::Resolved),
                ("b".into(), AlertState::Firing)
            ],
            "a reported and is fine; b has not reported yet"
        );
        state.evaluate_restored(&rule, &[], 60_000, &|_| false, &|_| true);
        assert_eq!(
            states(&state),
            [
                ("a".into(), AlertState::Resolved),
                ("b".into(), AlertState::Resolved)
            ]
        );
    }

    #[test]
    fn missing_series_follow_the_no_data_policy() {
        let rule = rule(0, 0);
        for (mode, want) in [
            (NoData::Ok, AlertState::Resolved),
            (NoData::KeepLast, AlertState::Firing),
            (NoData::Alerting, AlertState::Firing),
        ] {
            let mut state = RuleState::default();
            state.policy.no_data = mode;
            state.policy.no_data_after = 2;
            state.evaluate(&rule, &[sample("a", 5.0)], 0);
            let gone = |_: &Labels| false;
            state.evaluate_restored(&rule, &[], 15_000, &|_| false, &gone);
            state.evaluate_restored(&rule, &[], 30_000, &|_| false, &gone);
            assert_eq!(states(&state), [("a".into(), want)], "{mode:?}");
            let alert = state.active.values().next().unwrap();
            assert_eq!(alert.no_data, mode == NoData::Alerting, "{mode:?}");
            assert_eq!(
                crate::alert::tsdb::label(&alert.labels, "no_data").is_some(),
                mode == NoData::Alerting
            );
        }
        // With data present, a false condition resolves whatever the policy.
        let mut state = RuleState::default();
        state.policy.no_data = NoData::KeepLast;
        state.evaluate(&rule, &[sample("a", 5.0)], 0);
        state.evaluate_restored(&rule, &[], 15_000, &|_| false, &|_| true);
        assert_eq!(states(&state), [("a".into(), AlertState::Resolved)]);
    }

    #[test]
    fn too_many_changes_mark_a_series_flapping_until_it_settles() {
        let rule = rule(0, 0);
        let mut state = RuleState::default();
        state.policy.flap_threshold = 3;
        state.policy.flap_window_ms = 60_000;
        let mut t = 0;
        for _ in 0..2 {
            state.evaluate(&rule, &[sample("a", 5.0)], t);
            t += 1_000;
            state.evaluate(&rule, &[], t);
            t += 1_000;
        }
        let alert = state.active.values().next().unwrap();
        assert!(alert.flapping, "4 changes in a minute");
        state.evaluate(&rule, &[sample("a", 5.0)], t);
        assert!(
            state.active.values().next().unwrap().flapping,
            "a new instance of a flapping series flaps"
        );
        state.evaluate(&rule, &[sample("a", 5.0)], t + 61_000);
        assert!(
            !state.active.values().next().unwrap().flapping,
            "stable for a window"
        );
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert() {
        let rule = rule(0, 30);
        let mut state = RuleState::default();
        state.evaluate(&rule, &[sample("a", 5.0)], 0);
        state.evaluate(&rule, &[], 15_000);
        state.evaluate(&rule, &[], 44_999);
        assert_eq!(states(&state), [("a".into(), AlertState::Firing)]);
        state.evaluate(&rule, &[], 45_000);
        assert_eq!(states(&state), [("a".into(), AlertState::Resolved)]);
        // Firing again after a resolution starts a new instance.
        state.evaluate(&rule, &[sample("a", 1.0)], 60_000);
        let alert = state.active.values().next().unwrap();
        assert_eq!((alert.state, alert.active_at), (AlertState::Firing, 60_000));
    }
}
