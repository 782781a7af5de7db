//! Which MLflow run each span, data point and log record belongs to, decided from OTLP alone:
//! - an explicit `mlflow.run_id` (span, data point, log record or resource attribute) logs into that run;
//! - a *run span* (a span with one of the configured experiment attributes, or the root span of a resource with
//!   `mlflow.experiment_name`) is a run: its start and end times, its status, params from attribute prefixes,
//!   tags from the resource;
//! - metrics and logs without a run id go to their resource's run (same `service.name` and
//!   `service.instance.id`); a resource that names its experiment gets its run at its first data, and the run
//!   span adopts it when it arrives (spans are exported when they end, after the job's metrics);
//! - a run whose resource sends nothing for `heartbeat` is ended KILLED (the job died without ending it).
//!
//! The tracker only decides; it returns [`Action`]s that the exporter hands to the MLflow sender.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use vigil::ml::mlflow::{KeyValue as MlflowTag, LogBatch, Metric, RunSpec, RunStatus};
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use vigil_proto::otlp::metrics::v1::{metric, number_data_point};
use vigil_proto::otlp::trace::v1::status::StatusCode;

use crate::prometheus::store::value_text;

/// The attribute naming a run explicitly.
pub const RUN_ID_ATTRIBUTE: &str = "mlflow.run_id";
/// Points remembered per run to drop repeats (a retried batch); the oldest half is forgotten beyond this.
const SEEN_PER_RUN: usize = 200_000;
/// Points held for a resource that has no run yet.
const HELD_PER_RESOURCE: usize = 10_000;
/// Log bytes held for a resource that has no run yet.
const HELD_LOG_BYTES_PER_RESOURCE: usize = 4 << 20;

/// How runs are recognised and what goes into them (from the exporter's config).
#[derive(Clone, Debug)]
pub struct Rules {
    /// Span attributes whose (string) value names a run span's experiment.
    pub run_attributes: Vec<String>,
    /// The resource attribute naming the experiment of a resource's runs.
    pub resource_experiment_attribute: String,
    /// Span attribute prefixes that become params (prefix removed).
    pub param_prefixes: Vec<String>,
    /// Metric name patterns (`*` matches any run of characters) that become MLflow metrics.
    pub metrics: Vec<String>,
    /// Data-point attributes that give the step, first found wins.
    pub step_attributes: Vec<String>,
    /// Quiet time after which a run the exporter created is ended KILLED.
    pub heartbeat: Duration,
}

/// What to tell the MLflow sender.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Start tracking run `run` (a new run, or an existing one when `spec.attach` is set).
    Start {
        /// The tracker's id of the run.
        run: u64,
        /// What it is.
        spec: RunSpec,
    },
    /// Log into run `run`.
    Log {
        /// The tracker's id.
        run: u64,
        /// What to log.
        batch: LogBatch,
    },
    /// Append log lines to run `run`'s log artifact.
    Lines {
        /// The tracker's id.
        run: u64,
        /// Whole JSON lines.
        lines: Vec<u8>,
    },
    /// Run `run` is done with: release what the exporter keeps for it.
    Forget {
        /// The tracker's id.
        run: u64,
    },
    /// End run `run`.
    End {
        /// The tracker's id.
        run: u64,
        /// How it ended.
        status: RunStatus,
        /// When, ms since the Unix epoch.
        end_ms: i64,
    },
}

type ResourceKey = String;

/// A point waiting for its resource's run: key, step, time (ns) and value.
type HeldPoint = (String, Option<i64>, u64, f64);

#[derive(Debug)]
struct Tracked {
    resource: ResourceKey,
    experiment: String,
    /// Created by this exporter (so the heartbeat may end it), not attached by id.
    owned: bool,
    ended: bool,
    ended_at: Option<Instant>,
    /// Points logged, in two generations: when `seen` is full it becomes `seen_before`, so a repeat is still
    /// recognised for as long as a generation lasts.
    seen: HashSet<(String, i64, u64, u64)>,
    seen_before: HashSet<(String, i64, u64, u64)>,
    next_step: HashMap<String, i64>,
}

/// Remembers runs across batches.
#[derive(Debug)]
pub struct Tracker {
    rules: Rules,
    next_id: u64,
    runs: HashMap<u64, Tracked>,
    by_run_id: HashMap<String, u64>,
    by_span: HashMap<(Vec<u8>, Vec<u8>), u64>,
    by_trace: HashMap<Vec<u8>, u64>,
    by_resource: HashMap<ResourceKey, u64>,
    last_seen: HashMap<ResourceKey, Instant>,
    held: HashMap<ResourceKey, Vec<HeldPoint>>,
    held_lines: HashMap<ResourceKey, Vec<u8>>,
    /// Points left out because no run could be found for them.
    pub unmatched: u64,
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    find(attributes, key)
        .map(|v| value_text(Some(v)))
        .filter(|v| !v.is_empty())
}

fn number(value: &AnyValue) -> Option<f64> {
    match &value.value {
        Some(Value::IntValue(i)) => Some(*i as f64),
        Some(Value::DoubleValue(d)) => Some(*d),
        Some(Value::StringValue(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One job: its service, instance, host and process (SDKs that set no instance id still differ by pid).
fn resource_key(attributes: &[KeyValue]) -> ResourceKey {
    [
        "service.name",
        "service.instance.id",
        "host.name",
        "process.pid",
    ]
    .iter()
    .map(|key| text(attributes, key).unwrap_or_default())
    .collect::<Vec<_>>()
    .join("\u{1f}")
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn ms(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

impl Tracker {
    /// A tracker following `rules`.
    pub fn new(rules: Rules) -> Self {
        Tracker {
            rules,
            next_id: 1,
            runs: HashMap::new(),
            by_run_id: HashMap::new(),
            by_span: HashMap::new(),
            by_trace: HashMap::new(),
            by_resource: HashMap::new(),
            last_seen: HashMap::new(),
            held: HashMap::new(),
            held_lines: HashMap::new(),
            unmatched: 0,
        }
    }

    fn track(&mut self, resource: &ResourceKey, experiment: &str, owned: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.runs.insert(
            id,
            Tracked {
                resource: resource.clone(),
                experiment: experiment.to_string(),
                owned,
                ended: false,
                ended_at: None,
                seen: HashSet::new(),
                seen_before: HashSet::new(),
                next_step: HashMap::new(),
            },
        );
        id
    }

    fn attach(&mut self, run_id: &str, resource: &ResourceKey, actions: &mut Vec<Action>) -> u64 {
        if let Some(id) = self.by_run_id.get(run_id) {
            return *id;
        }
        let id = self.track(resource, "", false);
        self.by_run_id.insert(run_id.to_string(), id);
        actions.push(Action::Start {
            run: id,
            spec: RunSpec {
                attach: Some(run_id.to_string()),
                ..RunSpec::new("", "", 0)
            },
        });
        id
    }

    /// The open run of `resource`, started at `start_ms` when the resource names its experiment.
    fn resource_run(
        &mut self,
        resource: &ResourceKey,
        resource_attributes: &[KeyValue],
        start_ms: i64,
        actions: &mut Vec<Action>,
    ) -> Option<u64> {
        if let Some(id) = self.resource_target(resource) {
            return Some(id);
        }
        let experiment = text(
            resource_attributes,
            &self.rules.resource_experiment_attribute,
        )?;
        let name = text(resource_attributes, "service.name").unwrap_or_else(|| experiment.clone());
        let id = self.track(resource, &experiment, true);
        self.by_resource.insert(resource.clone(), id);
        actions.push(Action::Start {
            run: id,
            spec: RunSpec {
                tags: Some(resource_tags(resource_attributes)),
                ..RunSpec::new(&experiment, &name, start_ms)
            },
        });
        self.release_held(resource, id, actions);
        Some(id)
    }

    /// The resource's run for data without a run id: open, or ended within a heartbeat (a job's last
    /// metrics and logs often arrive after its run span, through other pipelines).
    ///
    /// Timestamps cannot tell a late point from the next run's: OpenTelemetry stamps gauges when they are
    /// collected, after the run span has ended. Jobs that run several runs one after another in one process
    /// name each with `mlflow.run_id` or a span attribute per run.
    fn resource_target(&self, resource: &ResourceKey) -> Option<u64> {
        let id = *self.by_resource.get(resource)?;
        let run = self.runs.get(&id)?;
        let recent = run
            .ended_at
            .is_none_or(|at| at.elapsed() < self.rules.heartbeat);
        recent.then_some(id)
    }

    fn release_held(&mut self, resource: &ResourceKey, id: u64, actions: &mut Vec<Action>) {
        if let Some(lines) = self.held_lines.remove(resource) {
            actions.push(Action::Lines { run: id, lines });
        }
        let Some(held) = self.held.remove(resource) else {
            return;
        };
        let mut batch = LogBatch::default();
        for (key, step, nanos, value) in held {
            if let Some(metric) = self.point(id, key, step, nanos, value) {
                batch.metrics.push(metric);
            }
        }
        if !batch.is_empty() {
            actions.push(Action::Log { run: id, batch });
        }
    }

    /// A point for run `id`, or `None` when it was logged before.
    fn point(
        &mut self,
        id: u64,
        key: String,
        step: Option<i64>,
        nanos: u64,
        value: f64,
    ) -> Option<Metric> {
        let run = self.runs.get_mut(&id)?;
        let identity = (
            key.clone(),
            step.unwrap_or(i64::MIN),
            if step.is_some() { 0 } else { nanos },
            value.to_bits(),
        );
        if run.seen_before.contains(&identity) || !run.seen.insert(identity) {
            return None;
        }
        if run.seen.len() > SEEN_PER_RUN {
            run.seen_before = std::mem::take(&mut run.seen);
        }
        let step = match step {
            Some(step) => step,
            None => {
                let next = run.next_step.entry(key.clone()).or_insert(0);
                *next += 1;
                *next - 1
            }
        };
        Some(Metric {
            key,
            value,
            timestamp: ms(nanos),
            step,
        })
    }

    fn seen(&mut self, resource: &ResourceKey, now: Instant) {
        self.last_seen.insert(resource.clone(), now);
    }

    /// Spans: runs from run spans and explicit run ids.
    pub fn spans(&mut self, request: &ExportTraceServiceRequest, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for resource_spans in &request.resource_spans {
            let attributes = resource_spans
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes[..]);
            let resource = resource_key(attributes);
            self.seen(&resource, now);
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                if let Some(run_id) = text(&span.attributes, RUN_ID_ATTRIBUTE)
                    .or_else(|| text(attributes, RUN_ID_ATTRIBUTE))
                {
                    let id = self.attach(&run_id, &resource, &mut actions);
                    self.by_trace.insert(span.trace_id.clone(), id);
                    continue;
                }
                let named = self
                    .rules
                    .run_attributes
                    .iter()
                    .find_map(|key| text(&span.attributes, key));
                let root_of_named_resource = span.parent_span_id.is_empty()
                    && text(attributes, &self.rules.resource_experiment_attribute).is_some();
                let Some(experiment) = named.or_else(|| {
                    root_of_named_resource
                        .then(|| text(attributes, &self.rules.resource_experiment_attribute))
                        .flatten()
                }) else {
                    continue;
                };
                let span_key = (span.trace_id.clone(), span.span_id.clone());
                if self.by_span.contains_key(&span_key) {
                    // A retried batch: the run exists and has ended.
                    continue;
                }
                let params: Vec<MlflowTag> = span
                    .attributes
                    .iter()
                    .filter_map(|kv| {
                        let key = self
                            .rules
                            .param_prefixes
                            .iter()
                            .find_map(|p| kv.key.strip_prefix(p.as_str()))?;
                        Some(MlflowTag::new(key, value_text(kv.value.as_ref())))
                    })
                    .collect();
                // A run the resource already has (from its metrics) becomes this span's run: one job, one run,
                // in the experiment the resource named first.
                let adopted = self
                    .by_resource
                    .get(&resource)
                    .copied()
                    .filter(|id| self.runs.get(id).is_some_and(|r| !r.ended && r.owned));
                let id = match adopted {
                    Some(id) => {
                        let mut batch = LogBatch {
                            params,
                            ..LogBatch::default()
                        };
                        batch
                            .tags
                            .push(MlflowTag::new("mlflow.runName", &span.name));
                        actions.push(Action::Log { run: id, batch });
                        id
                    }
                    None => {
                        let id = self.track(&resource, &experiment, true);
                        actions.push(Action::Start {
                            run: id,
                            spec: RunSpec {
                                params,
                                tags: Some(resource_tags(attributes)),
                                ..RunSpec::new(
                                    &experiment,
                                    &span.name,
                                    ms(span.start_time_unix_nano),
                                )
                            },
                        });
                        self.by_resource.insert(resource.clone(), id);
                        self.release_held(&resource, id, &mut actions);
                        id
                    }
                };
                self.by_span.insert(span_key, id);
                self.by_trace.insert(span.trace_id.clone(), id);
                let failed = span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == StatusCode::Error as i32);
                let status = if failed {
                    RunStatus::Failed
                } else {
                    RunStatus::Finished
                };
                if let Some(run) = self.runs.get_mut(&id) {
                    run.ended = true;
                    run.ended_at = Some(now);
                }
                actions.push(Action::End {
                    run: id,
                    status,
                    end_ms: ms(span.end_time_unix_nano),
                });
            }
        }
        actions
    }

    /// The spans of `request` whose trace belongs to a run this exporter created, split by the run's
    /// experiment, each part keeping its resource and scope.
    pub fn trace_experiments(
        &self,
        request: &ExportTraceServiceRequest,
    ) -> Vec<(String, ExportTraceServiceRequest)> {
        let mut parts: Vec<(String, ExportTraceServiceRequest)> = Vec::new();
        for resource_spans in &request.resource_spans {
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    let Some(experiment) = self
                        .by_trace
                        .get(&span.trace_id)
                        .and_then(|id| self.runs.get(id))
                        .map(|run| run.experiment.clone())
                        .filter(|e| !e.is_empty())
                    else {
                        continue;
                    };
                    let index = match parts.iter().position(|(e, _)| *e == experiment) {
                        Some(index) => index,
                        None => {
                            parts.push((experiment, ExportTraceServiceRequest::default()));
                            parts.len() - 1
                        }
                    };
                    let request = &mut parts[index].1;
                    // The same resource and scope as the last span added, or a new one of each.
                    let same_resource = request.resource_spans.last().is_some_and(|r| {
                        r.resource == resource_spans.resource
                            && r.schema_url == resource_spans.schema_url
                    });
                    if !same_resource {
                        request
                            .resource_spans
                            .push(vigil_proto::otlp::trace::v1::ResourceSpans {
                                resource: resource_spans.resource.clone(),
                                schema_url: resource_spans.schema_url.clone(),
                                scope_spans: Vec::new(),
                            });
                    }
                    let Some(resource) = request.resource_spans.last_mut() else {
                        continue;
                    };
                    let same_scope = resource.scope_spans.last().is_some_and(|s| {
                        s.scope == scope_spans.scope && s.schema_url == scope_spans.schema_url
                    });
                    if !same_scope {
                        resource
                            .scope_spans
                            .push(vigil_proto::otlp::trace::v1::ScopeSpans {
                                scope: scope_spans.scope.clone(),
                                schema_url: scope_spans.schema_url.clone(),
                                spans: Vec::new(),
                            });
                    }
                    if let Some(scope) = resource.scope_spans.last_mut() {
                        scope.spans.push(span.clone());
                    }
                }
            }
        }
        parts
    }

    /// Metrics: the configured ones become points of their run.
    pub fn metrics(&mut self, request: &ExportMetricsServiceRequest, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut batches: HashMap<u64, LogBatch> = HashMap::new();
        for resource_metrics in &request.resource_metrics {
            let attributes = resource_metrics
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes[..]);
            let resource = resource_key(attributes);
            self.seen(&resource, now);
            for metric in resource_metrics
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
            {
                if !self.rules.metrics.iter().any(|p| glob(p, &metric.name)) {
                    continue;
                }
                let points = match &metric.data {
                    Some(metric::Data::Gauge(g)) => &g.data_points,
                    Some(metric::Data::Sum(s)) => &s.data_points,
                    // Histograms and summaries have no single value per step.
                    _ => continue,
                };
                for point in points {
                    let value = match point.value {
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        None => continue,
                    };
                    let step = self
                        .rules
                        .step_attributes
                        .iter()
                        .find_map(|key| find(&point.attributes, key).and_then(number))
                        .map(|s| s as i64);
                    let mut key = metric.name.clone();
                    let mut extra: Vec<(&str, String)> = point
                        .attributes
                        .iter()
                        // The run's own identity (run id, experiment) is not part of a metric's name.
                        .filter(|kv| {
                            kv.key != RUN_ID_ATTRIBUTE
                                && !self.rules.step_attributes.contains(&kv.key)
                                && !self.rules.run_attributes.contains(&kv.key)
                        })
                        .map(|kv| (kv.key.as_str(), value_text(kv.value.as_ref())))
                        .collect();
                    extra.sort();
                    for (_, value) in extra {
                        key.push('/');
                        key.push_str(&value);
                    }
                    let run = match text(&point.attributes, RUN_ID_ATTRIBUTE)
                        .or_else(|| text(attributes, RUN_ID_ATTRIBUTE))
                    {
                        Some(run_id) => Some(self.attach(&run_id, &resource, &mut actions)),
                        None => self.resource_run(
                            &resource,
                            attributes,
                            ms(point.start_time_unix_nano.max(point.time_unix_nano)),
                            &mut actions,
                        ),
                    };
                    let Some(run) = run else {
                        let held = self.held.entry(resource.clone()).or_default();
                        if held.len() < HELD_PER_RESOURCE {
                            held.push((key, step, point.time_unix_nano, value));
                        } else {
                            self.unmatched += 1;
                        }
                        continue;
                    };
                    if let Some(metric) = self.point(run, key, step, point.time_unix_nano, value) {
                        batches.entry(run).or_default().metrics.push(metric);
                    }
                }
            }
        }
        let mut runs: Vec<u64> = batches.keys().copied().collect();
        runs.sort_unstable();
        for run in runs {
            if let Some(batch) = batches.remove(&run) {
                actions.push(Action::Log { run, batch });
            }
        }
        actions
    }

    /// Logs: records of a run's trace, of a run id, or of a resource with a run become its log lines.
    pub fn logs(&mut self, request: &ExportLogsServiceRequest, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut lines: HashMap<u64, Vec<u8>> = HashMap::new();
        for resource_logs in &request.resource_logs {
            let attributes = resource_logs
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes[..]);
            let resource = resource_key(attributes);
            self.seen(&resource, now);
            for record in resource_logs.scope_logs.iter().flat_map(|s| &s.log_records) {
                let run = match text(&record.attributes, RUN_ID_ATTRIBUTE)
                    .or_else(|| text(attributes, RUN_ID_ATTRIBUTE))
                {
                    Some(run_id) => Some(self.attach(&run_id, &resource, &mut actions)),
                    None => self
                        .by_trace
                        .get(&record.trace_id)
                        .copied()
                        .or_else(|| self.resource_target(&resource)),
                };
                let line = serde_json::json!({
                    "timestamp_unix_nano": record.time_unix_nano.max(record.observed_time_unix_nano),
                    "severity": record.severity_text,
                    "severity_number": record.severity_number,
                    "body": value_text(record.body.as_ref()),
                    "trace_id": hex(&record.trace_id),
                    "span_id": hex(&record.span_id),
                    "attributes": record
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), serde_json::Value::String(value_text(kv.value.as_ref()))))
                        .collect::<serde_json::Map<_, _>>(),
                });
                let mut text = line.to_string().into_bytes();
                text.push(b'\n');
                match run {
                    Some(run) => lines.entry(run).or_default().extend_from_slice(&text),
                    // No run yet (a run span arrives when the job ends): wait for it, within a bound.
                    None => {
                        let held = self.held_lines.entry(resource.clone()).or_default();
                        if held.len() + text.len() <= HELD_LOG_BYTES_PER_RESOURCE {
                            held.extend_from_slice(&text);
                        } else {
                            self.unmatched += 1;
                        }
                    }
                }
            }
        }
        let mut runs: Vec<u64> = lines.keys().copied().collect();
        runs.sort_unstable();
        for run in runs {
            if let Some(lines) = lines.remove(&run) {
                actions.push(Action::Lines { run, lines });
            }
        }
        actions
    }

    /// Ends the runs this exporter created whose resource has been quiet for the heartbeat; forgets ended
    /// runs after a further heartbeat (late records still find them until then).
    pub fn expire(&mut self, now: Instant, now_ms: i64) -> Vec<Action> {
        let heartbeat = self.rules.heartbeat;
        let mut actions = Vec::new();
        let mut forget = Vec::new();
        for (id, run) in &mut self.runs {
            let quiet = self
                .last_seen
                .get(&run.resource)
                .is_none_or(|seen| now.saturating_duration_since(*seen) >= heartbeat);
            if !run.ended && run.owned && quiet {
                run.ended = true;
                run.ended_at = Some(now);
                actions.push(Action::End {
                    run: *id,
                    status: RunStatus::Killed,
                    end_ms: now_ms,
                });
            } else if quiet
                && (run
                    .ended_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= heartbeat)
                    // A run attached by id is not this exporter's to end; forget it once its job is quiet.
                    || !run.owned)
            {
                forget.push(*id);
            }
        }
        forget.sort_unstable();
        for id in forget {
            self.runs.remove(&id);
            actions.push(Action::Forget { run: id });
        }
        let runs = &self.runs;
        self.by_resource.retain(|_, id| runs.contains_key(id));
        self.by_trace.retain(|_, id| runs.contains_key(id));
        self.by_span.retain(|_, id| runs.contains_key(id));
        self.by_run_id.retain(|_, id| runs.contains_key(id));
        self.last_seen
            .retain(|_, seen| now.saturating_duration_since(*seen) < heartbeat * 4);
        let seen = &self.last_seen;
        let mut aged = 0u64;
        self.held.retain(|resource, points| {
            let keep = seen.contains_key(resource);
            if !keep {
                aged += points.len() as u64;
            }
            keep
        });
        self.unmatched += aged;
        actions
    }
}

/// The run's tags from its resource: every resource attribute, and `mlflow.source.name` from `service.name`.
fn resource_tags(attributes: &[KeyValue]) -> Vec<MlflowTag> {
    let mut tags: Vec<MlflowTag> = attributes
        .iter()
        .map(|kv| MlflowTag::new(&kv.key, value_text(kv.value.as_ref())))
        .collect();
    if let Some(service) = text(attributes, "service.name") {
        tags.push(MlflowTag::new("mlflow.source.name", service));
        tags.push(MlflowTag::new("mlflow.source.type", "JOB"));
    }
    tags
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
