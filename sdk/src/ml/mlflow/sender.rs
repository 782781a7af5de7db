//! The sender thread: it owns every run's state, creates runs when the server is reachable, batches what the
//! job logs into `log-batch` requests, uploads log segments and ends runs. The job only ever queues
//! ([`Shared::send`] never waits).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::batch::{KeyValue, Limits, LogBatch, sanitize_key, split};
use super::client::{Client, MlflowError, RunInfo};
#[cfg(feature = "system")]
use super::system::{SystemMetricNames, VisibleGpus};
use super::{Experiment, LogFormat, MlflowConfig, RunStatus, now_ms};

/// Partial batches wait at most this long for more points.
const SEND_INTERVAL: Duration = Duration::from_secs(1);
/// A live run's log segment is uploaded at most this often.
const UPLOAD_INTERVAL: Duration = Duration::from_secs(5);
/// A log segment rolls to the next file at this size.
const SEGMENT_BYTES: usize = 1 << 20;
/// Log bytes held for one run while the server is unreachable; more are dropped and counted.
const MAX_HELD_LOG_BYTES: usize = 16 << 20;
/// Metric points held for all runs while the server is unreachable; more are dropped and counted.
const MAX_HELD_METRICS: usize = 1_000_000;
/// Longest wait between two attempts while the server is down.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// 5xx answers to one request before it is dropped (counted) so it cannot block the others for ever.
const MAX_SERVER_ERRORS: u32 = 8;
/// How long a signal leaves for ending runs before the process exits.
const SIGNAL_GRACE: Duration = Duration::from_secs(5);

/// What the job asks of the sender.
pub(super) enum Command {
    Start {
        key: u64,
        spec: super::RunSpec,
        /// Set once MLflow has the run: its experiment and run ids, for the producer to read.
        created: Arc<OnceLock<super::RunIds>>,
    },
    Log {
        key: u64,
        batch: LogBatch,
    },
    End {
        key: u64,
        status: RunStatus,
        end_ms: i64,
    },
    /// Formatted log lines for the active run.
    Lines(Vec<u8>),
    /// Formatted log lines for one run.
    RunLines {
        key: u64,
        lines: Vec<u8>,
    },
    /// Answer when everything queued before is delivered or the deadline passes; `last` ends open runs
    /// (KILLED) first and stops the thread after answering.
    Flush {
        reply: std::sync::mpsc::Sender<bool>,
        deadline: Instant,
        last: bool,
    },
}

/// The producer side, shared by handles.
#[derive(Debug)]
pub(super) struct Shared {
    tx: mpsc::Sender<Command>,
    pub(super) dropped: AtomicU64,
    /// `log-batch` requests sent (each attempt).
    pub(super) log_batches: AtomicU64,
    told_full: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    /// Room for this many more commands in the queue.
    pub(super) fn room(&self) -> usize {
        self.tx.capacity()
    }

    /// Queues `command`; a full queue drops it and counts it (said once on stderr).
    pub(super) fn send(&self, command: Command) {
        if self.tx.try_send(command).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.told_full.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "vigil: the MLflow queue is full; training data is being dropped (counted in Mlflow::dropped)"
                );
            }
        }
    }

    /// Asks for a flush and waits for its answer, at most `timeout`.
    pub(super) fn flush(&self, timeout: Duration, last: bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (reply, answer) = std::sync::mpsc::channel();
        let mut command = Command::Flush {
            reply,
            deadline,
            last,
        };
        // A full queue must not lose the flush; wait for room (this is the shutdown path, never the job's).
        loop {
            match self.tx.try_send(command) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(back)) if Instant::now() < deadline => {
                    command = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        let delivered = answer
            .recv_timeout(
                deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100),
            )
            .unwrap_or(false);
        if last && let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            // The thread stops after answering; wait a little for it, never long past the deadline.
            let stop_by = Instant::now().max(deadline) + Duration::from_millis(500);
            while !thread.is_finished() && Instant::now() < stop_by {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        delivered
    }
}

/// The log handler's sink: lines go to the active run.
pub(crate) struct LineSink(pub(super) Arc<Shared>);

impl crate::log::writer::LineSink for LineSink {
    fn write_lines(&mut self, lines: &[u8]) -> std::io::Result<()> {
        self.0.send(Command::Lines(lines.to_vec()));
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts the thread.
pub(super) fn start(config: MlflowConfig, service: &str) -> Result<Arc<Shared>, MlflowError> {
    let client = Client::new(&config.tracking_uri, config.auth.as_ref())?;
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(16));
    let shared = Arc::new(Shared {
        tx,
        dropped: AtomicU64::new(0),
        log_batches: AtomicU64::new(0),
        told_full: AtomicBool::new(false),
        thread: Mutex::new(None),
    });
    let worker = Worker::new(client, config, service, shared.clone());
    let thread = std::thread::Builder::new()
        .name("vigil-mlflow".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(worker.run(rx)),
                Err(e) => eprintln!("vigil: the MLflow sender could not start: {e}"),
            }
        })
        .map_err(|e| MlflowError::Unreachable {
            url: String::new(),
            reason: format!("cannot start the sender thread: {e}"),
        })?;
    if let Ok(mut slot) = shared.thread.lock() {
        *slot = Some(thread);
    }
    Ok(shared)
}

/// The current log file of a run.
#[derive(Debug)]
struct Segment {
    index: u32,
    bytes: Vec<u8>,
    uploaded: usize,
    last_upload: Option<Instant>,
    /// Uploading is impossible (the run's artifacts are not behind the proxy); lines are dropped.
    disabled: bool,
}

impl Segment {
    fn new() -> Self {
        Segment {
            index: 0,
            bytes: Vec::new(),
            uploaded: 0,
            last_upload: None,
            disabled: false,
        }
    }

    fn dirty(&self) -> bool {
        !self.disabled && self.bytes.len() > self.uploaded
    }
}

#[derive(Debug)]
struct Run {
    key: u64,
    spec: super::RunSpec,
    remote: Option<RunInfo>,
    created: Arc<OnceLock<super::RunIds>>,
    pending: LogBatch,
    outbox: VecDeque<LogBatch>,
    end: Option<(RunStatus, i64)>,
    /// The server has the run's final status.
    closed: bool,
    /// The server refused the run for good; its data is dropped.
    refused: bool,
    /// 5xx answers in a row to this run's first request.
    server_errors: u32,
    log: Segment,
}

impl Run {
    fn delivered(&self) -> bool {
        self.refused
            || (self.pending.is_empty()
                && self.outbox.is_empty()
                && !self.log.dirty()
                && (self.end.is_none() || self.closed))
    }

    fn open(&self) -> bool {
        self.end.is_none() && !self.refused
    }
}

struct Waiter {
    reply: std::sync::mpsc::Sender<bool>,
    deadline: Instant,
    last: bool,
}

/// When and what system metrics to log into open runs.
struct SystemSampler {
    #[cfg(feature = "system")]
    collector: Option<crate::system::Collector>,
    #[cfg(feature = "system")]
    names: SystemMetricNames,
    interval: Duration,
    next: Instant,
    step: i64,
}

impl SystemSampler {
    /// A sampler every `interval`; none without the `system` feature, which reads the system.
    fn new(interval: Duration) -> Option<Self> {
        #[cfg(feature = "system")]
        return Some(SystemSampler {
            collector: None,
            names: SystemMetricNames::new(VisibleGpus::from_env_value(
                std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
            )),
            interval,
            next: Instant::now(),
            step: 0,
        });
        #[cfg(not(feature = "system"))]
        {
            let _ = interval;
            None
        }
    }

    /// Loads NVML and takes the baseline CPU and network readings, so that the first sample is complete.
    fn prime(&mut self) {
        #[cfg(feature = "system")]
        {
            let mut collector = crate::system::Collector::new(true);
            let _ = collector.collect();
            self.collector = Some(collector);
        }
    }

    /// The current values under MLflow's names.
    fn read(&mut self) -> Vec<(String, f64)> {
        #[cfg(feature = "system")]
        return self.names.convert(
            &self
                .collector
                .get_or_insert_with(|| crate::system::Collector::new(true))
                .collect(),
        );
        #[cfg(not(feature = "system"))]
        Vec::new()
    }
}

struct Worker {
    client: Client,
    config: MlflowConfig,
    service: String,
    tags: Vec<KeyValue>,
    shared: Arc<Shared>,
    limits: Option<Limits>,
    experiments: HashMap<String, String>,
    runs: Vec<Run>,
    /// Lines written before any run started.
    orphan_lines: Vec<u8>,
    retry_at: Option<Instant>,
    failures: u32,
    told_unreachable: bool,
    told: HashMap<&'static str, bool>,
    last_send: Instant,
    waiters: Vec<Waiter>,
    system: Option<SystemSampler>,
    stopping: bool,
    /// When this sender started (ms since the Unix epoch), to name log segments of attached runs.
    started_ms: i64,
}

impl Worker {
    fn new(client: Client, config: MlflowConfig, service: &str, shared: Arc<Shared>) -> Self {
        let system = config.system_metrics.and_then(SystemSampler::new);
        Worker {
            tags: source_tags(service),
            client,
            config,
            service: service.to_string(),
            shared,
            limits: None,
            experiments: HashMap::new(),
            runs: Vec::new(),
            orphan_lines: Vec::new(),
            retry_at: None,
            failures: 0,
            told_unreachable: false,
            told: HashMap::new(),
            last_send: Instant::now(),
            waiters: Vec::new(),
            system,
            stopping: false,
            started_ms: now_ms(),
        }
    }

    fn tell_once(&mut self, what: &'static str, message: impl FnOnce() -> String) {
        if !self.told.insert(what, true).unwrap_or(false) {
            // Not through `tracing`: the MLflow log handler would feed this back into the queue.
            eprintln!("vigil: {}", message());
        }
    }

    fn drop_count(&self, n: u64) {
        self.shared.dropped.fetch_add(n, Ordering::Relaxed);
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut signals = if self.config.handle_signals {
            Signals::install()
        } else {
            None
        };
        // Load NVML and take the baseline CPU and network readings now, so a run's first sample is complete.
        if let Some(system) = &mut self.system {
            system.prime();
        }
        loop {
            let wait = self.next_wake();
            tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => self.apply(command),
                    // Every handle is gone: deliver what is left and stop.
                    None => self.stopping = true,
                },
                _ = tokio::time::sleep(wait) => {}
                signal = next_signal(&mut signals) => {
                    self.on_signal(signal, &mut rx).await;
                }
            }
            while let Ok(command) = rx.try_recv() {
                self.apply(command);
            }
            self.sample_system_metrics();
            self.pump().await;
            self.answer_waiters();
            self.forget_closed_runs();
            if self.stopping && self.waiters.is_empty() {
                break;
            }
        }
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let mut wake = now + SEND_INTERVAL;
        if let Some(at) = self.retry_at {
            wake = wake.min(at.max(now));
        }
        if let Some(system) = &self.system {
            wake = wake.min(system.next.max(now));
        }
        if !self.waiters.is_empty() && self.retry_at.is_none() {
            wake = now + Duration::from_millis(10);
        }
        wake.saturating_duration_since(now)
    }

    fn run_mut(&mut self, key: u64) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.key == key)
    }

    fn held_metrics(&self) -> usize {
        self.runs
            .iter()
            .map(|r| {
                r.pending.metrics.len() + r.outbox.iter().map(|b| b.metrics.len()).sum::<usize>()
            })
            .sum()
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Start {
                key,
                mut spec,
                created,
            } => {
                let mut log = Segment::new();
                // Lines written before the first run belong to it.
                log.bytes = std::mem::take(&mut self.orphan_lines);
                let params = std::mem::take(&mut spec.params);
                let mut run = Run {
                    key,
                    spec,
                    remote: None,
                    created,
                    pending: LogBatch::default(),
                    outbox: VecDeque::new(),
                    end: None,
                    closed: false,
                    refused: false,
                    server_errors: 0,
                    log,
                };
                add(
                    &mut run.pending,
                    LogBatch {
                        params,
                        ..LogBatch::default()
                    },
                );
                self.runs.push(run);
                // A run's system metrics start with it (step 0), not an interval later.
                if let Some(system) = &mut self.system {
                    system.next = Instant::now();
                }
            }
            Command::Log { key, batch } => {
                if self.held_metrics() + batch.metrics.len() > MAX_HELD_METRICS {
                    self.drop_count(batch.metrics.len() as u64);
                    self.tell_once("held", || {
                        format!("MLflow has not answered for a while; more than {MAX_HELD_METRICS} metric points are waiting and new ones are dropped")
                    });
                    return;
                }
                match self.run_mut(key) {
                    Some(run) if !run.refused => add(&mut run.pending, batch),
                    // MLflow refused the run for good (a wrong run id, no permission): count, do not hold.
                    Some(_) => self.drop_count(
                        (batch.metrics.len() + batch.params.len() + batch.tags.len()) as u64,
                    ),
                    None => {}
                }
            }
            Command::End {
                key,
                status,
                end_ms,
            } => {
                if let Some(run) = self.run_mut(key)
                    && run.end.is_none()
                {
                    run.end = Some((status, end_ms));
                }
            }
            Command::Lines(lines) => self.add_lines(None, &lines),
            Command::RunLines { key, lines } => self.add_lines(Some(key), &lines),
            Command::Flush {
                reply,
                deadline,
                last,
            } => {
                if last {
                    self.finish_all(RunStatus::Killed);
                }
                self.waiters.push(Waiter {
                    reply,
                    deadline,
                    last,
                });
            }
        }
    }

    fn add_lines(&mut self, key: Option<u64>, lines: &[u8]) {
        // The run named, else the active run: the newest still open, else the newest the server accepted.
        let target = match key {
            Some(key) => match self.runs.iter().position(|r| r.key == key) {
                Some(index) if !self.runs[index].refused => Some(index),
                _ => return self.drop_count(count_lines(lines)),
            },
            None => self
                .runs
                .iter()
                .rposition(Run::open)
                .or_else(|| self.runs.iter().rposition(|r| !r.refused)),
        };
        let (held, disabled) = match target {
            Some(index) => (
                self.runs[index].log.bytes.len(),
                self.runs[index].log.disabled,
            ),
            None => (self.orphan_lines.len(), false),
        };
        if disabled || held + lines.len() > MAX_HELD_LOG_BYTES {
            return self.drop_count(count_lines(lines));
        }
        match target {
            Some(index) => self.runs[index].log.bytes.extend_from_slice(lines),
            None => self.orphan_lines.extend_from_slice(lines),
        }
    }

    /// Ends every open run with `status`; a job that logged only lines gets a run to hold them.
    fn finish_all(&mut self, status: RunStatus) {
        let now = now_ms();
        if self.runs.is_empty() && !self.orphan_lines.is_empty() {
            let key = super::NEXT_RUN.fetch_add(1, Ordering::Relaxed);
            self.apply(Command::Start {
                key,
                spec: super::RunSpec::new(&self.service, &self.service, now),
                created: Arc::default(),
            });
            if let Some(run) = self.run_mut(key) {
                run.end = Some((RunStatus::Finished, now));
            }
        }
        for run in &mut self.runs {
            if run.end.is_none() {
                run.end = Some((status, now));
            }
        }
    }

    async fn on_signal(&mut self, signal: i32, rx: &mut mpsc::Receiver<Command>) {
        while let Ok(command) = rx.try_recv() {
            self.apply(command);
        }
        self.finish_all(RunStatus::Killed);
        let deadline = Instant::now() + SIGNAL_GRACE;
        while Instant::now() < deadline && !self.runs.iter().all(Run::delivered) {
            while let Ok(command) = rx.try_recv() {
                self.apply(command);
            }
            // A request may take longer than the grace period: it is abandoned at the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left, self.pump()).await;
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at.min(deadline).into()).await;
            }
        }
        std::process::exit(128 + signal);
    }

    fn sample_system_metrics(&mut self) {
        let Some(system) = &mut self.system else {
            return;
        };
        let now = Instant::now();
        if now < system.next {
            return;
        }
        system.next = now + system.interval;
        if !self.runs.iter().any(Run::open) {
            return;
        }
        let values = system.read();
        let step = system.step;
        system.step += 1;
        let timestamp = now_ms();
        for run in self.runs.iter_mut().filter(|r| r.open()) {
            add(
                &mut run.pending,
                LogBatch {
                    metrics: values
                        .iter()
                        .map(|(key, value)| super::Metric {
                            key: key.clone(),
                            value: *value,
                            timestamp,
                            step,
                        })
                        .collect(),
                    ..LogBatch::default()
                },
            );
        }
    }

    fn retry_later(&mut self, error: &MlflowError) {
        self.failures = self.failures.saturating_add(1);
        let backoff = Duration::from_millis(250)
            .saturating_mul(1 << self.failures.min(8))
            .min(MAX_BACKOFF);
        let wait = error.retry_after().unwrap_or(backoff).min(MAX_BACKOFF);
        self.retry_at = Some(Instant::now() + wait);
        if !self.told_unreachable {
            self.told_unreachable = true;
            eprintln!(
                "vigil: MLflow is not accepting data ({error}); the runs' data is kept and sent when it answers"
            );
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        if self.told_unreachable {
            self.told_unreachable = false;
            eprintln!(
                "vigil: MLflow at {} answers again",
                self.client.tracking_uri()
            );
        }
    }

    /// Sends what is due; stops at the first retryable failure (the server is down or busy).
    async fn pump(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        if self.runs.iter().all(Run::delivered) {
            return;
        }
        let limits = match self.limits {
            Some(limits) => limits,
            None => match self.client.version().await {
                Ok(version) => {
                    self.succeeded();
                    *self.limits.insert(Limits::for_version(version.as_deref()))
                }
                Err(e) => return self.retry_later(&e),
            },
        };
        let urgent = !self.waiters.is_empty();
        let send_partial = urgent || self.last_send.elapsed() >= SEND_INTERVAL;
        if send_partial {
            self.last_send = Instant::now();
        }
        for index in 0..self.runs.len() {
            if self.runs[index].delivered() {
                continue;
            }
            if let Err(e) = self.pump_run(index, &limits, send_partial, urgent).await
                && e.is_retryable()
            {
                return self.retry_later(&e);
            }
        }
    }

    async fn pump_run(
        &mut self,
        index: usize,
        limits: &Limits,
        send_partial: bool,
        urgent: bool,
    ) -> Result<(), MlflowError> {
        if self.runs[index].remote.is_none() {
            match self.create(index, limits).await {
                Ok(info) => {
                    self.succeeded();
                    let _ = self.runs[index].created.set(super::RunIds {
                        experiment_id: info.experiment_id.clone(),
                        run_id: info.run_id.clone(),
                    });
                    self.runs[index].remote = Some(info);
                }
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    let run = &mut self.runs[index];
                    run.refused = true;
                    let lost = run.pending.metrics.len() + run.pending.params.len();
                    run.pending = LogBatch::default();
                    let name = run.spec.name.clone();
                    self.drop_count(lost as u64);
                    eprintln!(
                        "vigil: MLflow refused to create the run `{name}`: {e}; its data is dropped"
                    );
                    return Err(e);
                }
            }
        }
        let run_id = self.runs[index]
            .remote
            .as_ref()
            .map(|r| r.run_id.clone())
            .unwrap_or_default();
        let run = &mut self.runs[index];
        let full = run.pending.metrics.len() >= limits.metrics_per_batch;
        let ending = run.end.is_some();
        if !run.pending.is_empty() && (full || send_partial || ending) {
            let (requests, adjusted) = split(std::mem::take(&mut run.pending), limits);
            run.outbox.extend(requests);
            if !adjusted.is_empty() {
                self.tell_once("adjusted", || {
                    format!(
                        "some values were changed to fit MLflow's limits: params cut {:?}, tags cut {:?}, {} non-finite metric values left out",
                        adjusted.truncated_params, adjusted.truncated_tags, adjusted.non_finite_metrics
                    )
                });
            }
        }
        while let Some(request) = self.runs[index].outbox.front() {
            if self.deadline_passed() {
                // A flush or shutdown is waiting and out of time: answer it; the rest goes on afterwards.
                return Ok(());
            }
            self.shared.log_batches.fetch_add(1, Ordering::Relaxed);
            match self.client.log_batch(&run_id, request).await {
                Ok(()) => {
                    self.succeeded();
                    self.runs[index].server_errors = 0;
                    self.runs[index].outbox.pop_front();
                }
                Err(e) if e.is_retryable() && !self.poisoned(index, &e) => return Err(e),
                Err(e) => {
                    self.runs[index].server_errors = 0;
                    let Some(request) = self.runs[index].outbox.pop_front() else {
                        break;
                    };
                    let parts = if e.is_retryable() {
                        vec![request]
                    } else {
                        refused_parts(request)
                    };
                    if parts.len() > 1 {
                        // Find the refused value: a changed param must cost neither the metrics beside it nor
                        // the other params.
                        for part in parts.into_iter().rev() {
                            self.runs[index].outbox.push_front(part);
                        }
                        continue;
                    }
                    let lost = parts
                        .first()
                        .map_or(0, |p| p.metrics.len() + p.params.len() + p.tags.len());
                    self.drop_count(lost as u64);
                    let name = self.runs[index].spec.name.clone();
                    self.tell_once("refused", || {
                        format!("MLflow refused data of run `{name}` ({e}); {lost} values dropped")
                    });
                }
            }
        }
        let run = &self.runs[index];
        let segment_full = run.log.bytes.len() >= SEGMENT_BYTES;
        let upload_due = run
            .log
            .last_upload
            .is_none_or(|at| at.elapsed() >= UPLOAD_INTERVAL);
        if run.log.dirty() && (urgent || ending || segment_full || upload_due) {
            self.upload_log(index).await?;
        }
        let run = &mut self.runs[index];
        if let Some((status, end_ms)) = run.end
            && !run.closed
            && run.pending.is_empty()
            && run.outbox.is_empty()
            && !run.log.dirty()
        {
            match self.client.update_run(&run_id, status, Some(end_ms)).await {
                Ok(()) => {
                    self.succeeded();
                    self.runs[index].closed = true;
                }
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => {
                    self.runs[index].closed = true;
                    eprintln!("vigil: MLflow refused to end run `{run_id}`: {e}");
                }
            }
        }
        Ok(())
    }

    async fn upload_log(&mut self, index: usize) -> Result<(), MlflowError> {
        let extension = match self.config.log_format {
            LogFormat::Json => "jsonl",
            LogFormat::Text(_) => "log",
        };
        let run = &self.runs[index];
        let Some(remote) = &run.remote else {
            return Ok(());
        };
        // Runs this process created have the log to themselves; a run it attached to (MLFLOW_RUN_ID) may hold
        // other processes' logs, so its segments carry this sender's start and the run's key.
        let path = if run.spec.attach.is_some() || self.config.run_id.is_some() {
            format!(
                "logs/{}-{}-{}.{extension}",
                self.started_ms, run.key, run.log.index
            )
        } else {
            format!("logs/{}.{extension}", run.log.index)
        };
        let content = Bytes::copy_from_slice(&run.log.bytes);
        match self
            .client
            .upload_artifact(&remote.artifact_uri, &path, content)
            .await
        {
            Ok(()) => {
                self.succeeded();
                let log = &mut self.runs[index].log;
                log.uploaded = log.bytes.len();
                log.last_upload = Some(Instant::now());
                if log.bytes.len() >= SEGMENT_BYTES {
                    log.index += 1;
                    log.bytes.clear();
                    log.uploaded = 0;
                }
                Ok(())
            }
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => {
                let log = &mut self.runs[index].log;
                let lost = log.bytes[log.uploaded..]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count();
                log.disabled = true;
                log.bytes = Vec::new();
                log.uploaded = 0;
                self.drop_count(lost as u64);
                self.tell_once("logs", || format!("the run's logs cannot be uploaded: {e}"));
                Ok(())
            }
        }
    }

    async fn create(&mut self, index: usize, limits: &Limits) -> Result<RunInfo, MlflowError> {
        let attach = self.runs[index].spec.attach.clone();
        if let Some(run_id) = attach.or_else(|| self.config.run_id.clone()) {
            return self.client.get_run(&run_id).await;
        }
        let experiment_id = match self.config.experiment.clone() {
            Some(Experiment::Id(id)) => id,
            Some(Experiment::Name(name)) => self.experiment_id(&name).await?,
            None => {
                let name = self.runs[index].spec.experiment.clone();
                self.experiment_id(&name).await?
            }
        };
        let spec = &self.runs[index].spec;
        let name = self
            .config
            .run_name
            .clone()
            .unwrap_or_else(|| spec.name.clone());
        let mut tags = spec.tags.clone().unwrap_or_else(|| self.tags.clone());
        tags.truncate(limits.tags_per_batch);
        for tag in &mut tags {
            tag.key = sanitize_key(&tag.key, limits.key_chars);
            super::batch::truncate(&mut tag.value, limits.tag_value_chars);
        }
        self.client
            .create_run(&experiment_id, Some(&name), spec.start_ms, &tags)
            .await
    }

    async fn experiment_id(&mut self, name: &str) -> Result<String, MlflowError> {
        if let Some(id) = self.experiments.get(name) {
            return Ok(id.clone());
        }
        let id = self.client.experiment_id(name).await?;
        self.experiments.insert(name.to_string(), id.clone());
        Ok(id)
    }

    /// Drops runs that are closed with everything delivered, except the newest run, which still takes the
    /// log lines written after it ended.
    fn forget_closed_runs(&mut self) {
        let newest = self.runs.last().map(|r| r.key);
        self.runs.retain(|run| {
            Some(run.key) == newest || !(run.delivered() && (run.closed || run.refused))
        });
    }

    /// Whether a flush or shutdown waiting for delivery is out of time.
    fn deadline_passed(&self) -> bool {
        let now = Instant::now();
        self.waiters.iter().any(|w| now >= w.deadline)
    }

    /// Whether `error` on run `index`'s first request means that request will never pass: the server answers
    /// it with a 5xx (not a network error or 429), [`MAX_SERVER_ERRORS`] times in a row. It is then dropped
    /// and counted instead of blocking every run behind it.
    fn poisoned(&mut self, index: usize, error: &MlflowError) -> bool {
        let answered = matches!(error, MlflowError::Refused { status, .. } if *status >= 500);
        if !answered {
            return false;
        }
        let run = &mut self.runs[index];
        run.server_errors += 1;
        run.server_errors >= MAX_SERVER_ERRORS
    }

    fn answer_waiters(&mut self) {
        let delivered = self.runs.iter().all(Run::delivered);
        let now = Instant::now();
        let mut stop = false;
        self.waiters.retain(|waiter| {
            if delivered || now >= waiter.deadline {
                let _ = waiter.reply.send(delivered);
                stop |= waiter.last;
                false
            } else {
                true
            }
        });
        if stop {
            self.stopping = true;
        }
    }
}

fn count_lines(lines: &[u8]) -> u64 {
    lines.iter().filter(|b| **b == b'\n').count() as u64
}

/// Adds `more` to `pending`, making keys acceptable to the server.
fn add(pending: &mut LogBatch, more: LogBatch) {
    pending
        .metrics
        .extend(more.metrics.into_iter().map(|mut m| {
            m.key = sanitize_key(&m.key, 250);
            m
        }));
    pending.params.extend(more.params.into_iter().map(|mut p| {
        p.key = sanitize_key(&p.key, 250);
        p
    }));
    pending.tags.extend(more.tags.into_iter().map(|mut t| {
        t.key = sanitize_key(&t.key, 250);
        t
    }));
}

/// A refused request in smaller parts to find what MLflow refuses: by kind when it holds several, params one
/// by one when it holds only params; itself when it cannot be split.
fn refused_parts(request: LogBatch) -> Vec<LogBatch> {
    let parts = by_kind(request);
    match &parts[..] {
        [only] if only.params.len() > 1 => only
            .params
            .iter()
            .map(|param| LogBatch {
                params: vec![param.clone()],
                ..LogBatch::default()
            })
            .collect(),
        _ => parts,
    }
}

/// A request split by kind (params, tags, metrics); one part when it holds one kind.
fn by_kind(request: LogBatch) -> Vec<LogBatch> {
    let parts = [
        LogBatch {
            params: request.params,
            ..LogBatch::default()
        },
        LogBatch {
            tags: request.tags,
            ..LogBatch::default()
        },
        LogBatch {
            metrics: request.metrics,
            ..LogBatch::default()
        },
    ];
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The tags MLflow's own clients set on a run: who, what program, which commit, where.
fn source_tags(service: &str) -> Vec<KeyValue> {
    let mut tags = vec![
        KeyValue::new("mlflow.source.type", "LOCAL"),
        KeyValue::new("service.name", service),
    ];
    if let Some(user) = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    {
        tags.push(KeyValue::new("mlflow.user", user));
    }
    if let Some(program) = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .or_else(|| std::env::args().next())
    {
        tags.push(KeyValue::new("mlflow.source.name", program));
    }
    if let Some(commit) = git_commit() {
        tags.push(KeyValue::new("mlflow.source.git.commit", commit));
    }
    if let Some(host) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
    {
        tags.push(KeyValue::new("host.name", host));
    }
    tags
}

/// The commit checked out in the working directory or a parent, read from `.git` without running git.
fn git_commit() -> Option<String> {
    let mut dir = std::env::current_dir().ok()?;
    loop {
        let git = dir.join(".git");
        if git.is_dir() {
            return commit_in(&git);
        }
        if !dir.pop() {
            return None;
        }
    }
}

fn commit_in(git: &std::path::Path) -> Option<String> {
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let is_commit = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Some(reference) = head.strip_prefix("ref: ") else {
        return is_commit(head).then(|| head.to_string());
    };
    if let Ok(commit) = std::fs::read_to_string(git.join(reference)) {
        let commit = commit.trim();
        return is_commit(commit).then(|| commit.to_string());
    }
    let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (commit, name) = line.split_once(' ')?;
        (name == reference && is_commit(commit)).then(|| commit.to_string())
    })
}

/// SIGTERM and SIGINT, when they can be caught.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Some(Signals {
            terminate: signal(SignalKind::terminate()).ok()?,
            interrupt: signal(SignalKind::interrupt()).ok()?,
        })
    }
}

async fn next_signal(signals: &mut Option<Signals>) -> i32 {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    match signals {
        Some(signals) => tokio::select! {
            _ = signals.terminate.recv() => SIGTERM,
            _ = signals.interrupt.recv() => SIGINT,
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_request_is_split_by_kind() {
        let request = LogBatch {
            metrics: vec![super::super::Metric {
                key: "loss".into(),
                value: 1.0,
                timestamp: 1,
                step: 1,
            }],
            params: vec![KeyValue::new("lr", "0.1")],
            tags: Vec::new(),
        };
        let parts = by_kind(request);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].params.len(), 1);
        assert_eq!(parts[1].metrics.len(), 1);
        assert_eq!(by_kind(parts[1].clone()).len(), 1);
    }

    #[test]
    fn a_refused_params_request_is_split_param_by_param() {
        let request = LogBatch {
            params: vec![KeyValue::new("a", "1"), KeyValue::new("b", "2")],
            ..LogBatch::default()
        };
        let parts = refused_parts(request);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].params, vec![KeyValue::new("b", "2")]);
        let single = LogBatch {
            params: vec![KeyValue::new("a", "1")],
            ..LogBatch::default()
        };
        assert_eq!(refused_parts(single.clone()), vec![single]);
    }

    #[test]
    fn git_commits_are_read_from_refs_and_packed_refs() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(
            git.join("packed-refs"),
            format!("# pack-refs\n{commit} refs/heads/main\n"),
        )
        .unwrap();
        assert_eq!(commit_in(git).as_deref(), Some(commit));
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        let other = "89abcdef0123456789abcdef0123456789abcdef";
        std::fs::write(git.join("refs/heads/main"), format!("{other}\n")).unwrap();
        assert_eq!(commit_in(git).as_deref(), Some(other));
        std::fs::write(git.join("HEAD"), format!("{commit}\n")).unwrap();
        assert_eq!(commit_in(git).as_deref(), Some(commit));
        std::fs::write(git.join("HEAD"), "garbage\n").unwrap();
        assert_eq!(commit_in(git), None);
    }
}
