//! Connector `alerting`: evaluates alerting and recording rules on the metrics of the pipelines that list it as
//! an exporter, notifies channels, and produces `ALERTS`, `ALERTS_FOR_STATE` and the recorded series into the
//! metrics pipelines that list it as a receiver (usually the one with the `prometheus` exporter).
//!
//! ```yaml
//! connectors:
//!   alerting:
//!     rule_files: [configs/monitoring/alerts.yaml, configs/monitoring/recording.yaml]
//!     evaluation_interval: 15s
//!     channels:
//!       slack: {type: slack, url: "${env:VIGIL_SLACK_WEBHOOK_URL}"}
//!       alertmanager: {type: alertmanager, url: "${env:VIGIL_ALERTMANAGER_URL}"}
//!     route: {channels: [alertmanager], group_by: [alertname], group_wait: 30s}
//! service:
//!   pipelines:
//!     metrics: {receivers: [otlp], processors: [batch], exporters: [alerting]}
//!     metrics/alerts: {receivers: [alerting], exporters: [prometheus]}
//! ```
//!
//! Data flow: each batch is translated to Prometheus series exactly as the `prometheus` exporter names them
//! ([`crate::prometheus::store`]), and their samples kept in [`tsdb`] for as long as the rules look
//! back. Every group is evaluated at its interval ([`promql`]); alert instances move through the states of
//! [`state`]; [`notify`] routes, groups and delivers.
//!
//! Folders: [`rules`] (loading both rule formats), [`promql`] (evaluation), [`state`], [`template`]
//! (annotations), [`notify`] (channels and routing), [`tsdb`] (samples).

pub mod filter;
pub mod notify;
pub mod numbers;
pub mod persist;
pub mod promql;
pub mod rules;
pub mod state;
pub mod template;
pub mod tsdb;
pub mod unittest;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use tokio::sync::watch;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use vigil_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;

use crate::component::Checker;
use crate::connector::Connector;
use crate::delivery::{ExportError, Exported};
use crate::exporter::QueueSettings;
use crate::pipeline::{Batch, BoxFuture, SharedConsumer};
use crate::prometheus::render::to_classic;
use crate::prometheus::store::{
    self as prometheus_store, Changed, SeriesValue, Store, StoreSettings,
};
use crate::telemetry::{Counter, Registry};
use notify::{ChannelConfig, Dispatcher, RoutingConfig};
use promql::Sample;
use rules::{Group, RuleKind};
use state::{Alert, RuleState};
use tsdb::{Labels, NAME, Tsdb, label};

/// `flapping`: a series that fires and resolves more than `threshold` times within `window` gets one
/// notification saying so, then none until it has been stable for a `window`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FlappingConfig {
    /// State changes allowed within the window (0 turns detection off).
    pub threshold: usize,
    /// The window.
    #[serde(with = "crate::component::duration")]
    pub window: Duration,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        FlappingConfig {
            threshold: 6,
            window: Duration::from_secs(30 * 60),
        }
    }
}

/// `connectors.alerting`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Rule files: Prometheus rule files or the seed format (`alerts:`), relative to the working directory.
    pub rule_files: Vec<String>,
    /// How often groups without their own `interval` are evaluated.
    #[serde(with = "crate::component::duration")]
    pub evaluation_interval: Duration,
    /// Where a rule's expression can be explored (a Prometheus that scrapes the collector): the base of each
    /// notification's `generatorURL`.
    pub external_url: String,
    /// Most series kept for rules; samples of further series are dropped and counted.
    pub max_series: usize,
    /// Channels by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Routing, grouping and timing.
    pub route: RoutingConfig,
    /// The queue in front of it.
    pub sending_queue: QueueSettings,
    /// Where alert state and undelivered notifications are kept across restarts (none: not kept).
    pub state_directory: Option<String>,
    /// After a restart, how long restored alerts wait for their series' first samples before an absent series
    /// may resolve them.
    #[serde(with = "crate::component::duration")]
    pub restore_grace: Duration,
    /// What an alert becomes when the series its condition compares disappear: `ok` (resolved, as in
    /// Prometheus), `alerting` (firing with `no_data="true"`) or `keep_last`.
    pub no_data: state::NoData,
    /// Evaluations without data before `no_data` applies.
    pub no_data_after: u32,
    /// Flap detection.
    pub flapping: FlappingConfig,
    /// The rules, loaded by `validate`.
    #[serde(skip)]
    pub groups: Vec<Group>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            rule_files: Vec::new(),
            evaluation_interval: Duration::from_secs(15),
            external_url: "http://localhost:9090".into(),
            max_series: 100_000,
            channels: BTreeMap::new(),
            route: RoutingConfig::default(),
            sending_queue: QueueSettings {
                queue_size: 1000,
                num_consumers: 1,
                storage: None,
            },
            state_directory: None,
            restore_grace: Duration::from_secs(300),
            no_data: state::NoData::Ok,
            no_data_after: 3,
            flapping: FlappingConfig::default(),
            groups: Vec::new(),
        }
    }
}

impl AlertingConfig {
    /// Loads the rule files and checks every reference; each problem names its file and line.
    pub fn validate(&mut self, check: &mut Checker<'_>, path: &str) {
        if self.evaluation_interval.is_zero() {
            check.error(
                &format!("{path}.evaluation_interval"),
                "must be longer than 0s",
            );
        }
        if self.max_series == 0 {
            check.error(&format!("{path}.max_series"), "must be at least 1");
        }
        if self.rule_files.is_empty() {
            check.error(
                &format!("{path}.rule_files"),
                "lists no rule file: name at least one (Prometheus rule files or the `alerts:` format)",
            );
        }
        let env = |name: &str| std::env::var(name).ok();
        for (i, file) in self.rule_files.iter().enumerate() {
            let at = format!("{path}.rule_files[{i}]");
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(e) => {
                    check.error(&at, format!("cannot read `{file}`: {e}"));
                    continue;
                }
            };
            match rules::load(Path::new(file), &text, &env) {
                Ok(groups) => self.groups.extend(groups),
                Err(errors) => check.error(&at, format!("\n{errors}")),
            }
        }
        for (name, channel) in &self.channels {
            channel.validate(check, &format!("{path}.channels.{name}"));
        }
        let defined: BTreeSet<&String> = self.channels.keys().collect();
        let known = || {
            if defined.is_empty() {
                "none is defined".to_string()
            } else {
                format!(
                    "defined: {}",
                    defined
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        for group in &self.groups {
            for rule in &group.rules {
                if let RuleKind::Alert { channels, .. } = &rule.kind {
                    for channel in channels {
                        if !defined.contains(channel) {
                            check.error(
                                &format!("{path}.channels"),
                                format!(
                                    "rule `{}` ({}:{}) sends to channel `{channel}`, which is not defined under `{path}.channels` ({})",
                                    rule.name(),
                                    group.file,
                                    rule.location.line,
                                    known()
                                ),
                            );
                        }
                    }
                }
            }
        }
        let routes = self
            .route
            .channels
            .iter()
            .map(|c| (format!("{path}.route.channels"), c))
            .chain(self.route.routes.iter().enumerate().flat_map(|(i, r)| {
                r.channels
                    .iter()
                    .map(move |c| (format!("{path}.route.routes[{i}].channels"), c))
            }));
        for (at, channel) in routes {
            if !defined.contains(channel) {
                check.error(
                    &at,
                    format!(
                        "channel `{channel}` is not defined under `{path}.channels` ({})",
                        known()
                    ),
                );
            }
        }
    }

    /// How often the connector looks at its groups: every second, or every interval if one is shorter.
    fn tick(&self) -> Duration {
        self.groups
            .iter()
            .filter_map(|g| g.interval)
            .chain([self.evaluation_interval, Duration::from_secs(1)])
            .min()
            .unwrap_or(Duration::from_secs(1))
    }

    /// How long samples must be kept: the longest look-back of any rule, at least 10 minutes.
    fn retention(&self) -> Duration {
        let longest = self
            .groups
            .iter()
            .flat_map(|g| &g.rules)
            .map(|r| promql::reach_ms(&r.expr))
            .max()
            .unwrap_or(0);
        Duration::from_millis(longest.max(600_000) as u64 + 60_000)
    }
}

struct Counters {
    dropped_samples: Counter,
    failed_evaluations: Registry,
}

struct Engine {
    db: Tsdb,
    /// How the metrics of encoded requests reach `db` (see [`numbers`]).
    numbers: numbers::NumberSeries,
    states: Vec<Vec<RuleState>>,
    next_due: Vec<i64>,
    dispatcher: Option<Dispatcher>,
    /// When the series cap was last warned about.
    warned_over_cap: Option<i64>,
    /// The series handed on at the last evaluation: one that is not handed on again has ended.
    emitted: std::collections::HashSet<Labels>,
    /// Where the state is saved, if anywhere.
    state_file: Option<Arc<persist::StateFile>>,
    /// After a restart, until when restored alerts wait for their sources (ms), and the `(job, instance)` pairs
    /// that have reported since.
    hold_until: i64,
    reported: std::collections::HashSet<(String, String)>,
    /// When the connector started (ms), and the rules found to read no series at all (reported once).
    started: i64,
    unmatched_reported: std::collections::HashSet<(usize, usize)>,
}

/// The running connector.
pub struct Alerting {
    config: AlertingConfig,
    id: String,
    /// The metrics rules read; the others are left out before decoding.
    wanted: filter::Wanted,
    store: Store,
    engine: Mutex<Engine>,
    outputs: OnceLock<Vec<SharedConsumer>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    counters: Counters,
    registry: Registry,
}

/// One sample as Prometheus would scrape it: name, value, and the `le` or `quantile` label it adds.
type ScrapedSample = (String, f64, Option<(&'static str, String)>);

/// The samples of one translated data point.
fn samples_of(changed: &Changed<'_>) -> Vec<ScrapedSample> {
    let name = changed.name;
    let histogram = |h: &prometheus_store::Histogram| {
        let mut out = Vec::new();
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| template::format_float(*b));
            out.push((
                format!("{name}_bucket"),
                cumulative as f64,
                Some(("le", le)),
            ));
        }
        out.push((format!("{name}_sum"), h.sum, None));
        out.push((format!("{name}_count"), h.count as f64, None));
        out
    };
    match &changed.series.value {
        SeriesValue::Number(v) => vec![(name.to_string(), *v, None)],
        SeriesValue::Histogram(h) => histogram(h),
        SeriesValue::Exponential(e) => histogram(&to_classic(e)),
        SeriesValue::Summary(s) => {
            let mut out: Vec<_> = s
                .quantiles
                .iter()
                .map(|(q, v)| {
                    (
                        name.to_string(),
                        *v,
                        Some(("quantile", template::format_float(*q))),
                    )
                })
                .collect();
            out.push((format!("{name}_sum"), s.sum, None));
            out.push((format!("{name}_count"), s.count as f64, None));
            out
        }
    }
}

/// A rule's missing-data and flapping policy: the connector's, with the rule's own `no_data` over it.
fn rule_policy(rule: &rules::Rule, connector: &state::Policy) -> state::Policy {
    match &rule.kind {
        RuleKind::Alert {
            no_data: Some(no_data),
            ..
        } => state::Policy {
            no_data: *no_data,
            ..connector.clone()
        },
        _ => connector.clone(),
    }
}

impl Alerting {
    /// A connector from its validated config.
    pub fn new(config: &AlertingConfig, id: &str, registry: &Registry) -> Result<Self, String> {
        let (stop, _) = watch::channel(false);
        let policy = state::Policy {
            no_data: config.no_data,
            no_data_after: config.no_data_after.max(1),
            flap_threshold: config.flapping.threshold,
            flap_window_ms: config.flapping.window.as_millis() as i64,
        };
        // A collector has no external labels of its own; its `external_url` is what templates call
        // `$externalURL`, as it is the base of each notification's `generatorURL`.
        let external = Arc::new(template::External {
            labels: BTreeMap::new(),
            url: config.external_url.clone(),
        });
        let mut states: Vec<Vec<RuleState>> = config
            .groups
            .iter()
            .map(|g| {
                g.rules
                    .iter()
                    .map(|rule| {
                        RuleState::new(rule_policy(rule, &policy)).with_external(external.clone())
                    })
                    .collect()
            })
            .collect();
        let (state_file, snapshot) = match &config.state_directory {
            Some(dir) => {
                let (file, snapshot) = persist::StateFile::open(Path::new(dir))?;
                (Some(file), snapshot)
            }
            None => (None, None),
        };
        let outbox = state_file
            .as_ref()
            .map_or_else(Default::default, |f| f.outbox());
        let on_change: notify::OnChange = match &state_file {
            Some(file) => {
                let file = file.clone();
                Arc::new(move || file.save())
            }
            None => Arc::new(|| {}),
        };
        let mut dispatcher = Dispatcher::start(
            &config.channels,
            &config.route,
            &config.external_url,
            config.evaluation_interval,
            registry,
            outbox,
            on_change,
        )?;
        let mut hold_until = 0;
        if let Some(snapshot) = snapshot {
            let now = notify::payload::now_ms();
            hold_until = now + config.restore_grace.as_millis() as i64;
            let mut restored = 0;
            for (g, group) in config.groups.iter().enumerate() {
                for (r, rule) in group.rules.iter().enumerate() {
                    if let Some(saved) = snapshot
                        .rules
                        .iter()
                        .find(|s| s.group == group.name && s.rule == rule.name())
                    {
                        restored += saved.alerts.len();
                        states[g][r].active = saved
                            .alerts
                            .iter()
                            .map(|a| (a.labels.clone(), a.clone()))
                            .collect();
                        states[g][r].hold_until = hold_until;
                    }
                }
            }
            dispatcher.restore(snapshot.dispatch);
            tracing::info!(connector = id, alerts = restored, "alert state restored");
        }
        // Series named exactly as the `prometheus` exporter's defaults name them.
        let settings = StoreSettings {
            max_series: config.max_series,
            ..StoreSettings::default()
        };
        Ok(Alerting {
            wanted: filter::Wanted::new(
                config.groups.iter().flat_map(|g| &g.rules).map(|r| &r.expr),
                &settings.namespace,
                settings.suffixes,
            ),
            store: Store::new(settings),
            engine: Mutex::new(Engine {
                db: Tsdb::new(config.retention(), config.max_series),
                numbers: numbers::NumberSeries::default(),
                states,
                next_due: vec![0; config.groups.len()],
                dispatcher: Some(dispatcher),
                warned_over_cap: None,
                emitted: Default::default(),
                state_file,
                hold_until,
                reported: Default::default(),
                started: notify::payload::now_ms(),
                unmatched_reported: Default::default(),
            }),
            config: config.clone(),
            id: id.to_string(),
            outputs: OnceLock::new(),
            stop,
            task: Mutex::new(None),
            counters: Counters {
                dropped_samples: registry.counter(
                    "vigil_alert_dropped_samples_total",
                    "Samples the alerting connector did not keep because max_series was reached.",
                    &[("connector", id)],
                ),
                failed_evaluations: registry.clone(),
            },
            registry: registry.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the samples of one encoded OTLP metrics request.
    fn ingest(&self, request: &[u8], now: i64) -> Result<(), numbers::Unreadable> {
        let mut engine = self.lock();
        let engine = &mut *engine;
        let holding = now < engine.hold_until;
        let mut target = numbers::Target {
            db: &mut engine.db,
            now,
            reported: holding.then_some(&mut engine.reported),
            over_cap: 0,
        };
        let ingested = engine
            .numbers
            .ingest(request, &self.store, &self.wanted, &mut target);
        let over_cap = target.over_cap;
        // Series of histograms and deltas stay in the store (it accumulates them) until they stop coming.
        if self.store.sweep_due() {
            self.store.expire(&mut |_| {});
        }
        if over_cap > 0 {
            self.counters.dropped_samples.add(over_cap);
            if engine.warned_over_cap.is_none_or(|at| now - at >= 60_000) {
                engine.warned_over_cap = Some(now);
                tracing::warn!(connector = %self.id, max_series = self.config.max_series,
                    "alerting: series limit reached; samples of new series are dropped (vigil_alert_dropped_samples_total)");
            }
        }
        ingested
    }

    /// Evaluates every group that is due at `now`, notifies, and returns the series to hand on and the series
    /// that ended (an alert no longer pending or firing, a recorded series no longer produced).
    fn evaluate(&self, now: i64) -> (Vec<Sample>, Vec<Labels>) {
        let mut engine = self.lock();
        let engine = &mut *engine;
        let mut out = Vec::new();
        let mut any = false;
        for (g, group) in self.config.groups.iter().enumerate() {
            // Due within half a tick counts as due: ticks jitter by milliseconds, and waiting a whole tick more
            // for them would add a second to every alert's latency.
            if now + self.config.tick().as_millis() as i64 / 2 < engine.next_due[g] {
                continue;
            }
            any = true;
            let interval = group.interval.unwrap_or(self.config.evaluation_interval);
            engine.next_due[g] = now + interval.as_millis() as i64;
            let started = std::time::Instant::now();
            // A minute after the start (and two evaluations), rules that read no series at all are named once:
            // usually a metric name that is not the Prometheus name of what is sent.
            let check_unmatched = now - engine.started >= 60_000 + 2 * interval.as_millis() as i64;
            for (r, rule) in group.rules.iter().enumerate() {
                if check_unmatched && !engine.unmatched_reported.contains(&(g, r)) {
                    let series = promql::selected_series(&rule.expr, &engine.db) as f64;
                    self.registry.gauge_fn(
                        "vigil_alert_rule_selected_series",
                        "Series the selectors of a rule read at its last check (0: the rule reads nothing).",
                        &[("rule_group", &group.name), ("rule", rule.name())],
                        move || series,
                    );
                    if series == 0.0 {
                        engine.unmatched_reported.insert((g, r));
                        tracing::warn!(rule = rule.name(), group = %group.name, file = %group.file,
                            line = rule.location.line, expr = %rule.expr_text,
                            "rule reads no series: check the metric names against what the prometheus exporter serves");
                    }
                }
                let samples = match promql::instant(&rule.expr, &engine.db, now) {
                    Ok(samples) => samples,
                    Err(error) => {
                        self.counters
                            .failed_evaluations
                            .counter(
                                "vigil_alert_rule_evaluation_failures_total",
                                "Rule evaluations that failed (the rule's result is empty for that round).",
                                &[("rule_group", &group.name), ("rule", rule.name())],
                            )
                            .add(1);
                        tracing::warn!(rule = rule.name(), group = %group.name, %error, "rule evaluation failed");
                        Vec::new()
                    }
                };
                match &rule.kind {
                    RuleKind::Record { name } => {
                        for sample in samples {
                            let mut labels = state::result_labels(&sample, &rule.labels);
                            labels.push((NAME.into(), name.clone()));
                            let labels = tsdb::sorted(labels);
                            engine.db.append(labels.clone(), now, sample.value);
                            out.push(Sample {
                                labels,
                                value: sample.value,
                            });
                        }
                    }
                    RuleKind::Alert { .. } => {
                        let reported = &engine.reported;
                        let source_reported = |labels: &Labels| {
                            let job = label(labels, "job").unwrap_or("");
                            match label(labels, "instance") {
                                Some(instance) => {
                                    reported.contains(&(job.to_string(), instance.to_string()))
                                }
                                None => reported.iter().any(|(j, _)| j == job),
                            }
                        };
                        // The series the condition compares, evaluated only if an alert went missing.
                        let data = std::cell::OnceCell::new();
                        let db = &engine.db;
                        let has_data = |labels: &Labels| {
                            let Some(expr) = data_expr(&rule.expr) else {
                                return true;
                            };
                            let series = data.get_or_init(|| {
                                promql::instant(expr, db, now)
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|s| s.labels)
                                    .collect::<Vec<_>>()
                            });
                            series.iter().any(|data_labels| {
                                data_labels
                                    .iter()
                                    .filter(|(k, _)| k != NAME)
                                    .all(|pair| labels.contains(pair))
                            })
                        };
                        engine.states[g][r].evaluate_restored(
                            rule,
                            &samples,
                            now,
                            &source_reported,
                            &has_data,
                        );
                    }
                }
            }
            self.registry.gauge_fn(
                "vigil_alert_rule_group_last_duration_seconds",
                "How long the last evaluation of a rule group took.",
                &[("rule_group", &group.name)],
                {
                    let seconds = started.elapsed().as_secs_f64();
                    move || seconds
                },
            );
        }
        let alerts: Vec<&Alert> = engine
            .states
            .iter()
            .flatten()
            .flat_map(|s| s.active.values())
            .collect();
        if let Some(dispatcher) = engine.dispatcher.as_mut() {
            dispatcher.tick(&alerts, now);
            // Saved before the notifications leave, so a restart neither loses nor repeats them.
            if let Some(file) = &engine.state_file {
                let mut saved = Vec::new();
                for (g, group) in self.config.groups.iter().enumerate() {
                    for (r, rule) in group.rules.iter().enumerate() {
                        let alerts: Vec<Alert> =
                            engine.states[g][r].active.values().cloned().collect();
                        if !alerts.is_empty() {
                            saved.push(persist::SavedRule {
                                group: group.name.clone(),
                                rule: rule.name().to_string(),
                                alerts,
                            });
                        }
                    }
                }
                file.update(saved, dispatcher.state());
            }
            dispatcher.flush();
        }
        if any {
            for state in engine.states.iter().flatten() {
                out.extend(state.series());
            }
        }
        let mut ended = Vec::new();
        if any {
            engine.db.compact(now);
            let current: std::collections::HashSet<Labels> =
                out.iter().map(|s| s.labels.clone()).collect();
            ended = engine
                .emitted
                .iter()
                .filter(|l| !current.contains(*l))
                .cloned()
                .collect();
            engine.emitted = current;
        }
        (out, ended)
    }

    /// Hands `samples` on as OTLP gauges, one resource per `job`/`instance`, and the `ended` series as points
    /// without a recorded value (the `prometheus` exporter drops them, remote write sends stale markers).
    async fn emit(&self, samples: Vec<Sample>, ended: Vec<Labels>, now: i64) {
        let Some(outputs) = self.outputs.get() else {
            return;
        };
        if samples.is_empty() && ended.is_empty() {
            return;
        }
        let points = (samples.len() + ended.len()) as u64;
        let request = to_otlp(samples, ended, now);
        let batch = Batch::new(
            Signal::Metrics,
            Bytes::from(request.encode_to_vec()),
            points,
        );
        for output in outputs {
            if output.consume(batch.clone()).await.is_err() {
                tracing::warn!(
                    points,
                    "alerting: a metrics pipeline is shut down; alert series not handed on"
                );
            }
        }
    }
}

/// The series a comparison condition compares (`disk_free_pct` in `disk_free_pct < 10`): when they are gone the
/// rule has no data, which is not the same as a false condition. `None` for other conditions.
fn data_expr(expr: &promql_parser::parser::Expr) -> Option<&promql_parser::parser::Expr> {
    use promql_parser::parser::Expr;
    match expr {
        Expr::Paren(p) => data_expr(&p.expr),
        Expr::Binary(b)
            if b.op.is_comparison_operator()
                && !b.modifier.as_ref().is_some_and(|m| m.return_bool) =>
        {
            if matches!(*b.lhs, Expr::NumberLiteral(_)) {
                Some(&b.rhs)
            } else {
                Some(&b.lhs)
            }
        }
        _ => None,
    }
}

fn text_value(text: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(text.to_string())),
    })
}

/// Samples as OTLP: `job` and `instance` back into the resource (`service.namespace`/`service.name`,
/// `service.instance.id`), so the `prometheus` exporter gives them back the same labels.
fn to_otlp(samples: Vec<Sample>, ended: Vec<Labels>, now: i64) -> ExportMetricsServiceRequest {
    /// OTLP's `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
    const NO_RECORDED_VALUE: u32 = 1;
    let mut resources: BTreeMap<(String, String), BTreeMap<String, Vec<NumberDataPoint>>> =
        BTreeMap::new();
    let points = samples.into_iter().map(|s| (s, 0)).chain(
        ended
            .into_iter()
            .map(|labels| (Sample { labels, value: 0.0 }, NO_RECORDED_VALUE)),
    );
    for (sample, flags) in points {
        let job = label(&sample.labels, "job").unwrap_or("").to_string();
        let instance = label(&sample.labels, "instance").unwrap_or("").to_string();
        let name = label(&sample.labels, NAME).unwrap_or("").to_string();
        let attributes = sample
            .labels
            .iter()
            .filter(|(k, _)| k != NAME && k != "job" && k != "instance")
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: text_value(v),
                ..KeyValue::default()
            })
            .collect();
        resources
            .entry((job, instance))
            .or_default()
            .entry(name)
            .or_default()
            .push(NumberDataPoint {
                attributes,
                time_unix_nano: (now as u64) * 1_000_000,
                value: (flags == 0).then_some(number_data_point::Value::AsDouble(sample.value)),
                flags,
                ..NumberDataPoint::default()
            });
    }
    let resource_metrics = resources
        .into_iter()
        .map(|((job, instance), metrics)| {
            let mut attributes = Vec::new();
            let (namespace, name) = match job.split_once('/') {
                Some((ns, name)) => (Some(ns), name),
                None => (None, job.as_str()),
            };
            if !name.is_empty() {
                attributes.push(KeyValue {
                    key: "service.name".into(),
                    value: text_value(name),
                    ..KeyValue::default()
                });
            }
            if let Some(ns) = namespace {
                attributes.push(KeyValue {
                    key: "service.namespace".into(),
                    value: text_value(ns),
                    ..KeyValue::default()
                });
            }
            if !instance.is_empty() {
                attributes.push(KeyValue {
                    key: "service.instance.id".into(),
                    value: text_value(&instance),
                    ..KeyValue::default()
                });
            }
            ResourceMetrics {
                resource: Some(Resource {
                    attributes,
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: metrics
                        .into_iter()
                        .map(|(name, data_points)| Metric {
                            name,
                            data: Some(metric::Data::Gauge(Gauge { data_points })),
                            ..Metric::default()
                        })
                        .collect(),
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

impl Connector for Alerting {
    fn consume<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let now = notify::payload::now_ms();
            for chunk in &batch.chunks {
                self.ingest(&chunk.bytes, now)
                    .map_err(|e| ExportError::Undecodable {
                        message: format!("batch does not decode as OTLP metrics: {e}"),
                    })?;
            }
            Ok(Exported::default())
        })
    }

    fn start(self: Arc<Self>, outputs: Vec<SharedConsumer>) {
        if self.outputs.set(outputs).is_err() {
            return;
        }
        let mut stopped = self.stop.subscribe();
        let connector = self.clone();
        // Groups are looked at every second (or every interval, if shorter); each runs when it is due, and
        // the dispatcher's timers (group_wait…) are honoured to the second.
        let shortest = self.config.tick();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(shortest);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = crate::pipeline::raised(&mut stopped) => return,
                    _ = ticks.tick() => {
                        let now = notify::payload::now_ms();
                        let (samples, ended) = connector.evaluate(now);
                        connector.emit(samples, ended, now).await;
                    }
                }
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(task) = task {
                let _ = task.await;
            }
        })
    }
}

#[cfg(test)]
mod tests;
