//! Processor `memory_limiter`: refuses data, retryably, before the collector's memory passes its limit.
//!
//! The OpenTelemetry Collector's processor of the same name checks the Go heap every `check_interval`, so a
//! burst between two checks can pass the limit and get the process OOM-killed. Vigil counts instead: every
//! admitted batch takes a [`MemoryLease`](crate::pipeline::memory::MemoryLease) on its bytes, held until the
//! last copy of the data is gone (exported, written to a persistent queue, or dropped and counted). Admission
//! compares, at once and atomically, the bytes held collector-wide plus the new request with the **soft
//! limit** (`limit − spike_limit`). The spike limit is the headroom for what is not counted: request bodies
//! being read and decoded, export encodings, the allocator's own overhead.
//!
//! As a safety net for memory the count cannot see (tail sampling buffers, Prometheus series), the process's
//! resident memory is read at most every `check_interval` while data arrives; above the **hard limit**
//! (`limit`) everything is refused, after the allocator has been asked to give freed memory back to the
//! system (`malloc_trim`, as otelcol forces a garbage collection).
//!
//! Limits are per processor, like otelcol's, while the count is shared: every `memory_limiter` of the
//! collector compares the same total with its own limits. Data that passes two limiters counts twice (safe:
//! refusals come early, never late). Refusals answer clients with gRPC `UNAVAILABLE` and `RetryInfo`, or HTTP
//! 503 and `Retry-After`, and are counted in `vigil_receiver_refused_items_total{reason="memory_limit"}`. Data
//! that cannot be refused (a connector's output, which was admitted upstream) is counted but always passes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use super::{Built, ProcessorContext};
use crate::component::{Checker, duration};
use crate::pipeline::memory::MemoryAccount;
use crate::pipeline::{Batch, BoxFuture, Consumer, DEFAULT_RETRY_AFTER, Refusal, SharedConsumer};

const MIB: u64 = 1024 * 1024;

/// otelcol settings that tune Go's garbage collector, which Vigil does not have.
const GO_GC_SETTINGS: [&str; 2] = [
    "min_gc_interval_when_soft_limited",
    "min_gc_interval_when_hard_limited",
];

/// `processors.memory_limiter`, with otelcol's field names and meaning.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    /// How often, at most, the process's resident memory is read (default `1s`).
    #[serde(default = "default_check_interval", with = "duration")]
    pub check_interval: Duration,
    /// The hard limit in MiB.
    pub limit_mib: Option<u64>,
    /// Headroom below `limit_mib` for memory the count does not see (default 20 % of `limit_mib`).
    pub spike_limit_mib: Option<u64>,
    /// The hard limit as a percentage of the memory available to the process (its cgroup's limit, or the
    /// machine's total).
    pub limit_percentage: Option<u64>,
    /// The headroom as a percentage of that memory (default 20 % of the limit).
    pub spike_limit_percentage: Option<u64>,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(1)
}

/// The limits in bytes, once the memory available to the process is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Resident memory above which everything is refused.
    pub hard: u64,
    /// Bytes of accepted data held above which a new request is refused.
    pub soft: u64,
}

impl MemoryLimiterConfig {
    /// Decodes and checks `processors.<id>`, with a clear word for otelcol's Go-only settings.
    pub fn decode(check: &mut Checker<'_>, path: &str, value: &Value) -> Option<Self> {
        if let Some(map) = value.as_object() {
            for setting in GO_GC_SETTINGS {
                if map.contains_key(setting) {
                    check.error(
                        &format!("{path}.{setting}"),
                        "tunes Go's garbage collector in the OpenTelemetry Collector; Vigil has none to \
                         tune: remove it (above the hard limit Vigil returns freed memory to the system \
                         itself)",
                    );
                    return None;
                }
            }
        }
        let config: MemoryLimiterConfig = check.decode(path, value)?;
        config.validate(check, path).then_some(config)
    }

    /// Checks the fields and their relations; `false` when an error was recorded.
    fn validate(&self, check: &mut Checker<'_>, path: &str) -> bool {
        let mut error = |field: &str, message: String| {
            check.error(&format!("{path}.{field}"), message);
            false
        };
        if self.check_interval.is_zero() {
            return error("check_interval", "must be longer than 0s".into());
        }
        match (
            self.limit_mib,
            self.limit_percentage,
            self.spike_limit_mib,
            self.spike_limit_percentage,
        ) {
            (None, None, ..) => error(
                "limit_mib",
                "is required (or `limit_percentage`): the most memory the collector may use, in MiB".into(),
            ),
            (Some(_), Some(_), ..) => error(
                "limit_percentage",
                "cannot be combined with `limit_mib`: give the limit one way".into(),
            ),
            (Some(0), ..) => error("limit_mib", "must be at least 1".into()),
            (Some(_), None, _, Some(_)) => error(
                "spike_limit_percentage",
                "goes with `limit_percentage`; with `limit_mib` use `spike_limit_mib`".into(),
            ),
            (None, Some(_), Some(_), _) => error(
                "spike_limit_mib",
                "goes with `limit_mib`; with `limit_percentage` use `spike_limit_percentage`".into(),
            ),
            (Some(limit), None, Some(spike), None) if spike >= limit => error(
                "spike_limit_mib",
                format!("must be smaller than limit_mib ({limit}), not {spike}"),
            ),
            (None, Some(limit), ..) if !(1..=100).contains(&limit) => error(
                "limit_percentage",
                format!("must be 1–100, not {limit}"),
            ),
            (None, Some(limit), None, Some(spike)) if spike >= limit => error(
                "spike_limit_percentage",
                format!("must be smaller than limit_percentage ({limit}), not {spike}"),
            ),
            _ => true,
        }
    }

    /// The limits for a process that may use `available` bytes (needed only for percentages).
    pub fn limits(&self, available: u64) -> Limits {
        let of_available = |percent: u64| available / 100 * percent;
        let hard = match (self.limit_mib, self.limit_percentage) {
            (Some(mib), _) => mib.saturating_mul(MIB),
            (None, Some(percent)) => of_available(percent),
            (None, None) => u64::MAX,
        };
        let spike = match (self.spike_limit_mib, self.spike_limit_percentage) {
            (Some(mib), _) => mib.saturating_mul(MIB),
            (None, Some(percent)) => of_available(percent),
            (None, None) => hard / 5,
        };
        Limits {
            hard,
            soft: hard.saturating_sub(spike),
        }
    }
}

/// What the process may use: its cgroup's memory limit when it has one, else the machine's memory.
fn available_memory() -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    let cgroup = system.cgroup_limits().map(|cgroup| cgroup.total_memory);
    available_of(cgroup, system.total_memory())
}

/// The cgroup's limit when it sets one (a limit of 0 means it could not be read), else the machine's memory.
fn available_of(cgroup: Option<u64>, machine: u64) -> u64 {
    cgroup.filter(|&limit| limit > 0).unwrap_or(machine)
}

/// Reads the process's resident memory; `None` where the platform does not tell.
pub type RssProbe = Box<dyn FnMut() -> Option<u64> + Send>;

/// The resident memory of this process, through `sysinfo`.
fn own_rss() -> RssProbe {
    let pid = sysinfo::get_current_pid().ok();
    let mut system = sysinfo::System::new();
    Box::new(move || {
        let pid = pid?;
        system.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            false,
            sysinfo::ProcessRefreshKind::nothing().with_memory(),
        );
        system.process(pid).map(|process| process.memory())
    })
}

/// Asks the allocator to return freed memory to the system, so resident memory can fall back under the limit
/// once data is gone.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The hard limit, checked on the process's resident memory at most every `interval`.
struct ResidentCheck {
    hard: u64,
    interval: Duration,
    started: Instant,
    /// Nanoseconds after `started` when the next reading is due; whoever moves it takes the reading.
    next_due: AtomicU64,
    over: AtomicBool,
    last: AtomicU64,
    probe: Mutex<RssProbe>,
}

impl ResidentCheck {
    /// The resident memory last read when it is over the hard limit (reading it again when due).
    fn over(&self) -> Option<u64> {
        let now = self.started.elapsed().as_nanos() as u64;
        let due = self.next_due.load(Ordering::Relaxed);
        let next = now.saturating_add(self.interval.as_nanos() as u64);
        if now >= due
            && self
                .next_due
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mut over = self.read().is_some_and(|rss| rss > self.hard);
            if over {
                release_freed_memory();
                over = self.read().is_some_and(|rss| rss > self.hard);
            }
            self.over.store(over, Ordering::Relaxed);
        }
        self.over
            .load(Ordering::Relaxed)
            .then(|| self.last.load(Ordering::Relaxed))
    }

    fn read(&self) -> Option<u64> {
        let rss = (self.probe.lock().unwrap_or_else(|p| p.into_inner()))()?;
        self.last.store(rss, Ordering::Relaxed);
        Some(rss)
    }
}

/// The processor: admission against the shared count and the limits.
struct MemoryLimiter {
    id: String,
    limits: Limits,
    account: MemoryAccount,
    resident: ResidentCheck,
    /// Whether the last request was refused, so that only changes are logged.
    refusing: AtomicBool,
    next: SharedConsumer,
}

impl MemoryLimiter {
    /// Why `bytes` more cannot be admitted now, or the lease that admits them.
    fn admit(&self, bytes: u64) -> Result<crate::pipeline::memory::MemoryLease, Refusal> {
        let refuse = |detail: String| Refusal::MemoryLimit {
            detail,
            retry_after: DEFAULT_RETRY_AFTER,
        };
        if let Some(rss) = self.resident.over() {
            return Err(refuse(format!(
                "resident memory {} is over the limit of {}",
                mib(rss),
                mib(self.limits.hard)
            )));
        }
        self.account
            .try_lease(bytes, self.limits.soft)
            .ok_or_else(|| {
                refuse(format!(
                    "accepted data held {} plus this request's {} would pass the soft limit of {} \
                     (limit minus spike limit)",
                    mib(self.account.held()),
                    mib(bytes),
                    mib(self.limits.soft)
                ))
            })
    }

    /// Logs when the limiter starts or stops refusing.
    fn note(&self, outcome: Result<(), &Refusal>) {
        let refusing = outcome.is_err();
        if self.refusing.load(Ordering::Relaxed) == refusing
            || self.refusing.swap(refusing, Ordering::Relaxed) == refusing
        {
            return;
        }
        match outcome {
            Err(refusal) => tracing::warn!(
                processor = %self.id,
                "memory limit reached, refusing data until memory is freed: {refusal}"
            ),
            Ok(()) => tracing::info!(
                processor = %self.id,
                held_bytes = self.account.held(),
                "memory back under the limit, admitting data again"
            ),
        }
    }
}

/// `12.3 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

impl Consumer for MemoryLimiter {
    fn try_consume(&self, mut batch: Batch) -> Result<(), Refusal> {
        let lease = match self.admit(batch.byte_len() as u64) {
            Ok(lease) => lease,
            Err(refusal) => {
                self.note(Err(&refusal));
                return Err(refusal);
            }
        };
        self.note(Ok(()));
        batch.hold(&lease);
        self.next.try_consume(batch)
    }

    fn consume(&self, mut batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        let lease = self.account.lease(batch.byte_len() as u64);
        batch.hold(&lease);
        self.next.consume(batch)
    }
}

/// Builds the limiter in front of `next`.
pub fn build(
    config: &MemoryLimiterConfig,
    context: ProcessorContext<'_>,
    next: SharedConsumer,
) -> Built {
    let available = match config.limit_percentage {
        Some(_) => available_memory(),
        None => 0,
    };
    build_with(config, context, next, available, own_rss())
}

/// [`build`] with the memory available and the resident-memory probe given (tests give their own).
pub fn build_with(
    config: &MemoryLimiterConfig,
    context: ProcessorContext<'_>,
    next: SharedConsumer,
    available: u64,
    probe: RssProbe,
) -> Built {
    let id = context.id.to_string();
    let limits = config.limits(available);
    tracing::info!(
        processor = %id,
        pipeline = context.pipeline,
        "memory limit {} (refusing when accepted data held passes {})",
        mib(limits.hard),
        mib(limits.soft)
    );
    let account = context.memory.clone();
    let held = account.clone();
    context.registry.gauge_fn(
        "vigil_memory_limiter_held_bytes",
        "Bytes of accepted data the collector holds in batches, queues and exports, as memory_limiter counts them.",
        &[],
        move || held.held() as f64,
    );
    let limiter = Arc::new(MemoryLimiter {
        id: id.clone(),
        limits,
        account,
        resident: ResidentCheck {
            hard: limits.hard,
            interval: config.check_interval,
            started: Instant::now(),
            next_due: AtomicU64::new(0),
            over: AtomicBool::new(false),
            last: AtomicU64::new(0),
            probe: Mutex::new(probe),
        },
        refusing: AtomicBool::new(false),
        next,
    });
    let state = limiter.clone();
    context.registry.gauge_fn(
        "vigil_memory_limiter_refusing",
        "1 while a memory_limiter refuses data (its last request was refused), else 0.",
        &[("processor", id.as_str())],
        move || f64::from(u8::from(state.refusing.load(Ordering::Relaxed))),
    );
    for (kind, bytes) in [("hard", limits.hard), ("soft", limits.soft)] {
        context.registry.gauge_fn(
            "vigil_memory_limiter_limit_bytes",
            "A memory_limiter's limits: soft for accepted data held, hard for resident memory.",
            &[("processor", id.as_str()), ("limit", kind)],
            move || bytes as f64,
        );
    }
    Built {
        entry: limiter,
        stage: None,
    }
}

#[cfg(test)]
mod tests;
