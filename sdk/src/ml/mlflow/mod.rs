//! Training runs in MLflow: a run per job with its params, tags, metrics by step, status, system metrics and
//! logs, sent by a background thread that never blocks the job.
//!
//! Turn it on with [`crate::Builder::mlflow`] (or an `mlflow` handler in the logging YAML); it is configured by
//! MLflow's own variables (`MLFLOW_TRACKING_URI`, `MLFLOW_EXPERIMENT_NAME` / `MLFLOW_EXPERIMENT_ID`,
//! `MLFLOW_RUN_ID`, `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`).
//! Then each [`crate::ml::TrainingRun`] is an MLflow run:
//!
//! ```no_run
//! use vigil::ml::TrainingRun;
//!
//! let _guard = vigil::Builder::new("trainer")
//!     .mlflow(vigil::ml::mlflow::MlflowConfig::from_env()) // nothing changes when MLFLOW_TRACKING_URI is unset
//!     .try_init()?;
//! let mut run = TrainingRun::start("churn", "lightgbm");
//! run.params(&[("learning_rate", "0.05"), ("num_leaves", "31")]);
//! for epoch in 1..=3u64 {
//!     run.epoch(epoch, 50_000, &[("loss", 0.5 / epoch as f64)]);
//! }
//! run.complete(); // FINISHED; `fail` gives FAILED, a panic FAILED, a drop or SIGTERM/SIGINT KILLED
//! # Ok::<(), vigil::Error>(())
//! ```
//!
//! What lands in the run:
//! - tags `mlflow.runName`, `mlflow.user`, `mlflow.source.name`, `mlflow.source.type`,
//!   `mlflow.source.git.commit` (when the working directory is a git checkout), `service.name`, `host.name`;
//! - the params given to [`crate::ml::TrainingRun::params`] plus `model`;
//! - each named value of an epoch or step as a metric at that step, with its timestamp;
//! - system metrics under MLflow's names (`system/cpu_utilization_percentage`, `system/gpu_0_…`) every
//!   `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` seconds (default 10), GPUs limited to `CUDA_VISIBLE_DEVICES`;
//! - log records at or above the handler's level as `logs/<n>.jsonl` (JSON formatter) or `logs/<n>.log`,
//!   uploaded through the server's artifact proxy while the run is live and at its end.
//!
//! Delivery: a bounded queue ([`MlflowConfig::queue_capacity`] commands) in front of one thread. Requests are
//! cut to the server's `log-batch` limits (see [`batch`]); 429, 5xx and network errors are retried with
//! backoff, so a server that is down at start or for a while loses nothing; a full queue drops and counts
//! ([`Mlflow::dropped`]), said once on stderr.

pub mod batch;
pub mod client;
mod sender;
#[cfg(feature = "system")]
pub mod system;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use batch::{KeyValue, LogBatch, Metric};
pub use client::{Client, MlflowError};

/// How a run ended (MLflow's `RunStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Completed.
    Finished,
    /// Ended by an error or a panic.
    Failed,
    /// Stopped from outside (a signal) or abandoned (dropped unfinished).
    Killed,
}

impl RunStatus {
    /// MLflow's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// Credentials for the tracking server.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>` (`MLFLOW_TRACKING_TOKEN`).
    Token(String),
    /// HTTP basic authentication (`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach a log line.
        match self {
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

impl Auth {
    /// The `Authorization` header's value.
    pub fn header_value(&self) -> String {
        match self {
            Auth::Token(token) => format!("Bearer {token}"),
            Auth::Basic { username, password } => {
                format!(
                    "Basic {}",
                    base64(format!("{username}:{password}").as_bytes())
                )
            }
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Which experiment runs go into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Experiment {
    /// By name; created when missing (`MLFLOW_EXPERIMENT_NAME`).
    Name(String),
    /// By id (`MLFLOW_EXPERIMENT_ID`).
    Id(String),
}

/// How log records are written into the run's log artifact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines, `logs/<n>.jsonl`.
    #[default]
    Json,
    /// Text in a Python `logging` format, `logs/<n>.log`.
    Text(crate::log::text::Pattern),
}

/// Where and how runs are recorded.
#[derive(Clone, Debug)]
pub struct MlflowConfig {
    /// The tracking server, `http://host:5000`.
    pub tracking_uri: String,
    /// The experiment; without one, a [`crate::ml::TrainingRun`]'s experiment name is used.
    pub experiment: Option<Experiment>,
    /// Attach to this existing run instead of creating one (`MLFLOW_RUN_ID`).
    pub run_id: Option<String>,
    /// The run's name (`MLFLOW_RUN_NAME`); the model's name otherwise.
    pub run_name: Option<String>,
    /// Credentials.
    pub auth: Option<Auth>,
    /// Log records at or above this level go into the run's log artifact; `None` sends none.
    pub log_level: Option<tracing::Level>,
    /// Their format.
    pub log_format: LogFormat,
    /// Log system metrics into active runs at this interval; `None` turns them off.
    pub system_metrics: Option<Duration>,
    /// Commands the queue in front of the sender holds before dropping.
    pub queue_capacity: usize,
    /// On SIGTERM or SIGINT, end active runs as KILLED and exit (status 128 + signal).
    pub handle_signals: bool,
}

impl MlflowConfig {
    /// Runs on the server at `tracking_uri`, with every other setting at its default.
    pub fn new(tracking_uri: impl Into<String>) -> Self {
        MlflowConfig {
            tracking_uri: tracking_uri.into(),
            experiment: None,
            run_id: None,
            run_name: None,
            auth: None,
            log_level: Some(tracing::Level::INFO),
            log_format: LogFormat::Json,
            system_metrics: Some(Duration::from_secs(10)),
            queue_capacity: 65_536,
            handle_signals: true,
        }
    }

    /// From MLflow's environment variables; `None` when `MLFLOW_TRACKING_URI` is unset or empty.
    pub fn from_env() -> Option<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`MlflowConfig::from_env`] with variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = MlflowConfig::new(get("MLFLOW_TRACKING_URI")?);
        config.apply_env(&get);
        Some(config)
    }

    /// Fills what the environment sets and this config leaves open.
    pub(crate) fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) {
        if self.experiment.is_none() {
            self.experiment = get("MLFLOW_EXPERIMENT_ID")
                .map(Experiment::Id)
                .or_else(|| get("MLFLOW_EXPERIMENT_NAME").map(Experiment::Name));
        }
        if self.run_id.is_none() {
            self.run_id = get("MLFLOW_RUN_ID");
        }
        if self.run_name.is_none() {
            self.run_name = get("MLFLOW_RUN_NAME");
        }
        if self.auth.is_none() {
            self.auth = get("MLFLOW_TRACKING_TOKEN").map(Auth::Token).or_else(|| {
                Some(Auth::Basic {
                    username: get("MLFLOW_TRACKING_USERNAME")?,
                    password: get("MLFLOW_TRACKING_PASSWORD").unwrap_or_default(),
                })
            });
        }
        if let Some(enabled) = get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING")
            && enabled.trim().eq_ignore_ascii_case("false")
        {
            self.system_metrics = None;
        }
        if let Some(seconds) = get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
            .and_then(|s| s.trim().parse::<f64>().ok())
            && self.system_metrics.is_some()
            // NaN, infinite or absurd values are ignored rather than trusted (from_secs_f64 would panic).
            && let Ok(interval) = Duration::try_from_secs_f64(seconds.clamp(0.0, 86_400.0))
            && !interval.is_zero()
        {
            self.system_metrics = Some(interval);
        }
    }
}

/// What a new run is: where it goes, what it is called, and what it starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    /// The experiment's name (created when missing), unless [`MlflowConfig::experiment`] names one.
    pub experiment: String,
    /// The run's name, unless [`MlflowConfig::run_name`] gives one.
    pub name: String,
    /// Params logged first.
    pub params: Vec<KeyValue>,
    /// The run's tags at creation; `None`: this process's (user, program, commit, service, host).
    pub tags: Option<Vec<KeyValue>>,
    /// Start time, ms since the Unix epoch.
    pub start_ms: i64,
    /// Log into this existing run instead of creating one.
    pub attach: Option<String>,
}

impl RunSpec {
    /// A new run `name` in `experiment`, started at `start_ms`.
    pub fn new(experiment: &str, name: &str, start_ms: i64) -> Self {
        RunSpec {
            experiment: experiment.to_string(),
            name: name.to_string(),
            params: Vec::new(),
            tags: None,
            start_ms,
            attach: None,
        }
    }
}

/// A running MLflow sender: the queue, its thread and its counters.
#[derive(Clone, Debug)]
pub struct Mlflow {
    shared: Arc<sender::Shared>,
}

static CURRENT: OnceLock<Mutex<Option<Mlflow>>> = OnceLock::new();
static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

/// The sender [`crate::Builder`] started, which [`crate::ml::TrainingRun`] records into.
pub fn current() -> Option<Mlflow> {
    CURRENT
        .get()
        .and_then(|c| c.lock().ok().and_then(|c| c.clone()))
}

impl Mlflow {
    /// Starts the sender thread for `config`; `service` names the job in tags and in the run that holds logs
    /// written outside any training run.
    pub fn start(config: MlflowConfig, service: &str) -> Result<Mlflow, MlflowError> {
        let shared = sender::start(config, service)?;
        Ok(Mlflow { shared })
    }

    /// Makes this sender the one [`current`] returns.
    pub fn install(&self) {
        let slot = CURRENT.get_or_init(|| Mutex::new(None));
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(self.clone());
        }
    }

    /// Starts a run in `experiment` (unless the config names one) called `name` (unless the config does).
    pub fn start_run(&self, experiment: &str, name: &str, params: Vec<KeyValue>) -> RunHandle {
        self.start_spec(RunSpec {
            params,
            ..RunSpec::new(experiment, name, now_ms())
        })
    }

    /// Starts the run `spec` describes.
    pub fn start_spec(&self, spec: RunSpec) -> RunHandle {
        let key = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        let created = Arc::new(OnceLock::new());
        self.shared.send(sender::Command::Start {
            key,
            spec,
            created: created.clone(),
        });
        RunHandle {
            key,
            shared: self.shared.clone(),
            created,
        }
    }

    /// Whether the queue has room for `commands` more calls right now (a collector refuses data instead of
    /// dropping it when not).
    pub fn has_room(&self, commands: usize) -> bool {
        self.shared.room() >= commands
    }

    /// Commands dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// `log-batch` requests sent so far (every attempt, retries included).
    pub fn log_batch_requests(&self) -> u64 {
        self.shared.log_batches.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` until everything queued so far is delivered; whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.shared.flush(timeout, false)
    }

    /// Ends runs still open as KILLED, delivers what it can within `timeout` and stops the thread.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        if let Some(slot) = CURRENT.get()
            && let Ok(mut slot) = slot.lock()
            && slot
                .as_ref()
                .is_some_and(|m| Arc::ptr_eq(&m.shared, &self.shared))
        {
            *slot = None;
        }
        self.shared.flush(timeout, true)
    }

    /// A line sink for the log handler: whole formatted lines go to the active run's log artifact.
    pub(crate) fn line_sink(&self) -> sender::LineSink {
        sender::LineSink(self.shared.clone())
    }
}

/// One run, as the producer sees it; every call only queues.
#[derive(Debug)]
pub struct RunHandle {
    key: u64,
    shared: Arc<sender::Shared>,
    created: Arc<OnceLock<RunIds>>,
}

/// Where a run lives in MLflow: its page is `<tracking URI>/#/experiments/<experiment_id>/runs/<run_id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIds {
    /// The experiment's id.
    pub experiment_id: String,
    /// The run's id.
    pub run_id: String,
}

impl RunHandle {
    /// The run's ids once MLflow has created it (or attached it); `None` before, or if MLflow refused it.
    pub fn ids(&self) -> Option<&RunIds> {
        self.created.get()
    }

    /// Logs params (write-once in MLflow: a second, different value for a key is refused by the server).
    pub fn log_params(&self, params: &[(&str, &str)]) {
        self.shared.send(sender::Command::Log {
            key: self.key,
            batch: LogBatch {
                params: params.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect(),
                ..LogBatch::default()
            },
        });
    }

    /// Sets tags.
    pub fn set_tags(&self, tags: &[(&str, &str)]) {
        self.shared.send(sender::Command::Log {
            key: self.key,
            batch: LogBatch {
                tags: tags.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect(),
                ..LogBatch::default()
            },
        });
    }

    /// Logs named values at `step`, timestamped now.
    pub fn log_metrics(&self, step: u64, values: &[(&str, f64)]) {
        let timestamp = now_ms();
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        self.shared.send(sender::Command::Log {
            key: self.key,
            batch: LogBatch {
                metrics: values
                    .iter()
                    .map(|(key, value)| Metric {
                        key: (*key).to_string(),
                        value: *value,
                        timestamp,
                        step,
                    })
                    .collect(),
                ..LogBatch::default()
            },
        });
    }

    /// Logs metrics, params and tags as they are.
    pub fn log(&self, batch: LogBatch) {
        self.shared.send(sender::Command::Log {
            key: self.key,
            batch,
        });
    }

    /// Appends whole formatted lines (each ending in `\n`) to the run's log artifact.
    pub fn log_lines(&self, lines: Vec<u8>) {
        self.shared.send(sender::Command::RunLines {
            key: self.key,
            lines,
        });
    }

    /// Ends the run with `status`.
    pub fn end(&self, status: RunStatus) {
        self.end_at(status, now_ms());
    }

    /// Ends the run with `status` at `end_ms` (ms since the Unix epoch).
    pub fn end_at(&self, status: RunStatus, end_ms: i64) {
        self.shared.send(sender::Command::End {
            key: self.key,
            status,
            end_ms,
        });
    }
}

/// Milliseconds since the Unix epoch, as MLflow stamps runs and metrics.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_comes_from_mlflow_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(MlflowConfig::from_lookup(env(&[])).is_none());
        assert!(MlflowConfig::from_lookup(env(&[("MLFLOW_TRACKING_URI", " ")])).is_none());
        let config = MlflowConfig::from_lookup(env(&[
            ("MLFLOW_TRACKING_URI", "http://mlflow:5000"),
            ("MLFLOW_EXPERIMENT_NAME", "churn"),
            ("MLFLOW_RUN_ID", "abc"),
            ("MLFLOW_TRACKING_USERNAME", "ann"),
            ("MLFLOW_TRACKING_PASSWORD", "pw"),
            ("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "2.5"),
        ]))
        .unwrap();
        assert_eq!(config.tracking_uri, "http://mlflow:5000");
        assert_eq!(config.experiment, Some(Experiment::Name("churn".into())));
        assert_eq!(config.run_id.as_deref(), Some("abc"));
        assert_eq!(config.system_metrics, Some(Duration::from_millis(2500)));
        assert_eq!(
            config.auth.as_ref().map(Auth::header_value).as_deref(),
            Some("Basic YW5uOnB3")
        );
        assert_eq!(format!("{:?}", config.auth), "Some(Basic(ann, ***))");
        let by_id = MlflowConfig::from_lookup(env(&[
            ("MLFLOW_TRACKING_URI", "http://mlflow:5000"),
            ("MLFLOW_EXPERIMENT_ID", "7"),
            ("MLFLOW_EXPERIMENT_NAME", "ignored"),
            ("MLFLOW_TRACKING_TOKEN", "t0k"),
            ("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false"),
        ]))
        .unwrap();
        assert_eq!(by_id.experiment, Some(Experiment::Id("7".into())));
        assert_eq!(by_id.auth, Some(Auth::Token("t0k".into())));
        assert_eq!(by_id.system_metrics, None);
        for odd in ["inf", "NaN", "-1", "0", "1e30"] {
            let config = MlflowConfig::from_lookup(|name| match name {
                "MLFLOW_TRACKING_URI" => Some("http://m:5000".into()),
                "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" => Some(odd.into()),
                _ => None,
            })
            .unwrap();
            let interval = config.system_metrics.unwrap();
            assert!(
                interval > Duration::ZERO && interval <= Duration::from_secs(86_400),
                "{odd}: {interval:?}"
            );
        }
    }

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
