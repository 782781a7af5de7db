//! Exporter `mlflow`: training jobs in any language that send OTLP become MLflow runs (see [`runs`] for how
//! spans, metrics and logs find their run), and their traces can go to MLflow's OTLP trace ingestion.
//!
//! ```yaml
//! exporters:
//!   mlflow:
//!     tracking_uri: ${env:VIGIL_MLFLOW_TRACKING_URI}
//!     run_attributes: [mlflow.experiment, experiment_id]   # a span with one of these is a run
//!     resource_experiment_attribute: mlflow.experiment_name
//!     param_prefixes: [param., params., hparam.]
//!     metrics: ["training.*", "model.*", "eval.*"]
//!     step_attributes: [step, epoch]
//!     heartbeat: 60s                                        # quiet this long: the run ends KILLED
//!     traces: {enabled: false}                              # true: spans of runs go to MLflow's /v1/traces
//! ```
//!
//! Talking to MLflow is the SDK's job ([`vigil::ml::mlflow`]): one client, one sender with MLflow's batch limits,
//! retries and log segments, for both. The exporter turns OTLP into the sender's calls; when the sender's queue
//! is full it refuses the batch with a retryable error, so the pipeline's queue and the receivers push back.

pub mod runs;
pub mod traces;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use serde::Deserialize;
use vigil::ml::mlflow::{Auth, Mlflow, MlflowConfig, RunHandle, now_ms};
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;

use super::{ExportError, Exported, Exporter, QueueSettings, RetrySettings};
use crate::component::Checker;
use crate::pipeline::{Batch, BoxFuture};
use crate::telemetry::Registry;
use runs::{Action, Rules, Tracker};

/// `traces` of the `mlflow` exporter.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TracesSettings {
    /// Send the spans of runs' traces to MLflow's OTLP ingestion (`/v1/traces`, MLflow 3.6+ with a SQL store).
    pub enabled: bool,
}

/// `exporters.mlflow`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MlflowExporterConfig {
    /// The tracking server, `http://host:5000`.
    pub tracking_uri: String,
    /// `Authorization: Bearer` token (as `MLFLOW_TRACKING_TOKEN`).
    pub token: Option<String>,
    /// Basic-auth user (as `MLFLOW_TRACKING_USERNAME`).
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// Span attributes naming a run span's experiment.
    pub run_attributes: Vec<String>,
    /// The resource attribute naming the experiment of a resource's runs.
    pub resource_experiment_attribute: String,
    /// Span attribute prefixes that become params.
    pub param_prefixes: Vec<String>,
    /// Metric names (`*` wildcard) that become MLflow metrics.
    pub metrics: Vec<String>,
    /// Data-point attributes giving the step.
    pub step_attributes: Vec<String>,
    /// A run whose job sends nothing for this long is ended KILLED.
    #[serde(with = "crate::component::duration")]
    pub heartbeat: Duration,
    /// OTLP trace ingestion.
    pub traces: TracesSettings,
    /// Commands the MLflow sender queues before the exporter refuses batches.
    pub max_queued: usize,
    /// The queue in front of it.
    pub sending_queue: QueueSettings,
    /// Retrying a batch refused because the MLflow sender is full (MLflow's own errors are retried by the
    /// sender).
    pub retry_on_failure: RetrySettings,
}

impl Default for MlflowExporterConfig {
    fn default() -> Self {
        MlflowExporterConfig {
            tracking_uri: String::new(),
            token: None,
            username: None,
            password: None,
            run_attributes: vec!["mlflow.experiment".into(), "experiment_id".into()],
            resource_experiment_attribute: "mlflow.experiment_name".into(),
            param_prefixes: vec!["param.".into(), "params.".into(), "hparam.".into()],
            metrics: vec!["training.*".into(), "model.*".into(), "eval.*".into()],
            step_attributes: vec!["step".into(), "epoch".into()],
            heartbeat: Duration::from_secs(60),
            traces: TracesSettings::default(),
            max_queued: 65_536,
            sending_queue: QueueSettings::default(),
            retry_on_failure: RetrySettings::default(),
        }
    }
}

impl MlflowExporterConfig {
    /// Checks what serde cannot.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.tracking_uri.is_empty() {
            check.error(
                &format!("{path}.tracking_uri"),
                "is required: the MLflow tracking server, e.g. `http://127.0.0.1:5000`",
            );
        } else if let Err(e) = vigil::ml::mlflow::Client::new(&self.tracking_uri, None) {
            check.error(&format!("{path}.tracking_uri"), e.to_string());
        }
        if self.heartbeat < Duration::from_secs(1) {
            check.error(&format!("{path}.heartbeat"), "must be at least 1s");
        }
        if self.max_queued < 16 {
            check.error(&format!("{path}.max_queued"), "must be at least 16");
        }
        if self.password.is_some() && self.username.is_none() {
            check.error(&format!("{path}.password"), "needs `username`");
        }
    }

    fn auth(&self) -> Option<Auth> {
        self.token.clone().map(Auth::Token).or_else(|| {
            Some(Auth::Basic {
                username: self.username.clone()?,
                password: self.password.clone().unwrap_or_default(),
            })
        })
    }
}

/// The exporter: a tracker deciding runs, the SDK's MLflow sender delivering them.
pub struct MlflowExporter {
    mlflow: Mlflow,
    state: Arc<Mutex<State>>,
    traces: Option<Arc<traces::TraceForwarder>>,
    expiry: Option<tokio::task::JoinHandle<()>>,
}

struct State {
    tracker: Tracker,
    handles: std::collections::HashMap<u64, Started>,
    /// The newest runs already forgotten, for `vigil_mlflow_run_info` (a finished run keeps its link).
    finished: std::collections::VecDeque<RunLabels>,
}

/// Most finished runs `vigil_mlflow_run_info` keeps listing.
const FINISHED_RUNS_LISTED: usize = 100;

/// `vigil_mlflow_run_info`'s labels of one run.
type RunLabels = Vec<(&'static str, String)>;

/// A run the exporter started, and the job it belongs to.
struct Started {
    handle: RunHandle,
    service_name: String,
    service_instance_id: String,
}

impl Started {
    /// Its `vigil_mlflow_run_info` labels, once MLflow has the run.
    fn labels(&self) -> Option<RunLabels> {
        let ids = self.handle.ids()?;
        Some(vec![
            ("service_name", self.service_name.clone()),
            ("service_instance_id", self.service_instance_id.clone()),
            ("mlflow_experiment_id", ids.experiment_id.clone()),
            ("mlflow_run_id", ids.run_id.clone()),
        ])
    }
}

impl State {
    /// Label sets of the runs MLflow has, running and recently finished.
    fn run_info(&self) -> Vec<RunLabels> {
        let mut out: Vec<RunLabels> = self.handles.values().filter_map(Started::labels).collect();
        out.extend(self.finished.iter().cloned());
        out.sort();
        out
    }

    fn apply(&mut self, mlflow: &Mlflow, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Start { run, spec } => {
                    let tag = |key: &str| {
                        spec.tags
                            .iter()
                            .flatten()
                            .find(|t| t.key == key)
                            .map(|t| t.value.clone())
                            .unwrap_or_default()
                    };
                    let service_name = tag("service.name");
                    let service_instance_id = tag("service.instance.id");
                    self.handles.insert(
                        run,
                        Started {
                            handle: mlflow.start_spec(spec),
                            service_name,
                            service_instance_id,
                        },
                    );
                }
                Action::Log { run, batch } => {
                    if let Some(started) = self.handles.get(&run) {
                        started.handle.log(batch);
                    }
                }
                Action::Lines { run, lines } => {
                    if let Some(started) = self.handles.get(&run) {
                        started.handle.log_lines(lines);
                    }
                }
                Action::End {
                    run,
                    status,
                    end_ms,
                } => {
                    if let Some(started) = self.handles.get(&run) {
                        started.handle.end_at(status, end_ms);
                    }
                }
                Action::Forget { run } => {
                    if let Some(labels) = self.handles.remove(&run).and_then(|s| s.labels()) {
                        if self.finished.len() == FINISHED_RUNS_LISTED {
                            self.finished.pop_front();
                        }
                        self.finished.push_back(labels);
                    }
                }
            }
        }
    }
}

impl MlflowExporter {
    /// Starts the sender (its own thread) and the heartbeat check.
    pub fn new(
        config: &MlflowExporterConfig,
        id: &str,
        registry: &Registry,
    ) -> Result<Self, String> {
        let mut sender = MlflowConfig::new(&config.tracking_uri);
        sender.auth = config.auth();
        // The collector's own host says nothing about the jobs; their logs arrive as OTLP.
        sender.system_metrics = None;
        sender.log_level = None;
        sender.handle_signals = false;
        sender.queue_capacity = config.max_queued;
        let mlflow = Mlflow::start(sender, id).map_err(|e| e.to_string())?;
        let labels = [("exporter", id)];
        let counted = mlflow.clone();
        registry.counter_fn(
            "vigil_mlflow_dropped_total",
            "Values and log lines the MLflow exporter lost: refused by MLflow (400) or over what it holds while MLflow is down.",
            &labels,
            move || counted.dropped(),
        );
        let counted = mlflow.clone();
        registry.counter_fn(
            "vigil_mlflow_log_batch_requests_total",
            "runs/log-batch requests the MLflow exporter sent (retries included).",
            &labels,
            move || counted.log_batch_requests(),
        );
        let state = Arc::new(Mutex::new(State {
            tracker: Tracker::new(Rules {
                run_attributes: config.run_attributes.clone(),
                resource_experiment_attribute: config.resource_experiment_attribute.clone(),
                param_prefixes: config.param_prefixes.clone(),
                metrics: config.metrics.clone(),
                step_attributes: config.step_attributes.clone(),
                heartbeat: config.heartbeat,
            }),
            handles: std::collections::HashMap::new(),
            finished: std::collections::VecDeque::new(),
        }));
        let listed = state.clone();
        registry.info_fn(
            "vigil_mlflow_run_info",
            "The MLflow runs this exporter writes to (and the last 100 it finished), by the job's service.name and \
             service.instance.id; the run's page is <tracking URI>/#/experiments/<mlflow_experiment_id>/runs/<mlflow_run_id>.",
            &labels,
            move || listed.lock().map_or_else(|_| Vec::new(), |state| state.run_info()),
        );
        let counted = state.clone();
        registry.counter_fn(
            "vigil_mlflow_unmatched_points_total",
            "Metric points the MLflow exporter left out because no run could be found for them.",
            &labels,
            move || counted.lock().map_or(0, |state| state.tracker.unmatched),
        );
        let expiry = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let state = state.clone();
            let mlflow = mlflow.clone();
            let every = (config.heartbeat / 4).max(Duration::from_millis(250));
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                    let actions = state.tracker.expire(Instant::now(), now_ms());
                    state.apply(&mlflow, actions);
                }
            })
        });
        let traces = if config.traces.enabled {
            let forwarder = Arc::new(traces::TraceForwarder::new(config, id, registry)?);
            // Say at start when the server cannot ingest traces at all (once it answers).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let probing = forwarder.clone();
                runtime.spawn(async move {
                    loop {
                        match probing.probe().await {
                            Some(Ok(())) => break,
                            Some(Err(problem)) => {
                                probing.report(&problem);
                                break;
                            }
                            None => tokio::time::sleep(Duration::from_secs(5)).await,
                        }
                    }
                });
            }
            Some(forwarder)
        } else {
            None
        };
        Ok(MlflowExporter {
            mlflow,
            state,
            traces,
            expiry,
        })
    }

    fn decode<M: Message + Default>(batch: &Batch, what: &str) -> Result<Vec<M>, ExportError> {
        batch
            .chunks
            .iter()
            .map(|chunk| {
                M::decode(chunk.bytes.clone()).map_err(|e| ExportError::Undecodable {
                    message: format!("batch does not decode as OTLP {what}: {e}"),
                })
            })
            .collect()
    }
}

impl Exporter for MlflowExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            // Room for a batch's calls (one per run touched, and a few more): else push back, lose nothing.
            if !self.mlflow.has_room(64) {
                return Err(ExportError::Retryable {
                    message: "the MLflow sender's queue is full (MLflow is slow or down)".into(),
                    retry_after: Some(Duration::from_secs(1)),
                });
            }
            let now = Instant::now();
            match batch.signal {
                Signal::Traces => {
                    let requests: Vec<ExportTraceServiceRequest> = Self::decode(batch, "traces")?;
                    let targets = {
                        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                        let mut targets = Vec::new();
                        for request in &requests {
                            let actions = state.tracker.spans(request, now);
                            state.apply(&self.mlflow, actions);
                            if self.traces.is_some() {
                                targets.push(state.tracker.trace_experiments(request));
                            }
                        }
                        targets
                    };
                    if let Some(forwarder) = &self.traces {
                        let mut rejected = Exported::default();
                        for parts in targets {
                            let exported = forwarder.forward(&parts).await?;
                            rejected.rejected += exported.rejected;
                            if !exported.message.is_empty() {
                                rejected.message = exported.message;
                            }
                        }
                        return Ok(rejected);
                    }
                }
                Signal::Metrics => {
                    let requests: Vec<ExportMetricsServiceRequest> =
                        Self::decode(batch, "metrics")?;
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    for request in &requests {
                        let actions = state.tracker.metrics(request, now);
                        state.apply(&self.mlflow, actions);
                    }
                }
                Signal::Logs => {
                    let requests: Vec<ExportLogsServiceRequest> = Self::decode(batch, "logs")?;
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    for request in &requests {
                        let actions = state.tracker.logs(request, now);
                        state.apply(&self.mlflow, actions);
                    }
                }
            }
            Ok(Exported::default())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(expiry) = &self.expiry {
                expiry.abort();
            }
            let mlflow = self.mlflow.clone();
            // Runs still open stay open: the job may still be running, and another collector may take over.
            let _ = tokio::task::spawn_blocking(move || {
                mlflow.flush(Duration::from_secs(10));
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests;
