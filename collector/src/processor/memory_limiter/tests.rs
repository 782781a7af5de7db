use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use vigil_proto::otlp::Signal;

use super::{Limits, MemoryLimiterConfig, RssProbe, build_with};
use crate::component::ComponentId;
use crate::config::{Config, LoadOptions};
use crate::pipeline::memory::MemoryAccount;
use crate::pipeline::{Batch, Chunk, Consumer, Refusal};
use crate::processor::test_support::Recorder;
use crate::processor::{ProcessorConfig, ProcessorContext};
use crate::telemetry::Registry;

/// A mebibyte, spelled out here so a wrong constant in the code cannot agree with the test.
const MIB: u64 = 1_048_576;

fn parse(section: &str) -> Result<MemoryLimiterConfig, String> {
    let text = format!(
        "receivers:\n  otlp:\nprocessors:\n  memory_limiter:\n{section}exporters:\n  nop:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [memory_limiter]\n      exporters: [nop]\n"
    );
    let config = Config::parse(
        &text,
        &LoadOptions {
            source: "test.yaml",
            env: &|_| None,
        },
    )
    .map_err(|e| e.to_string())?;
    match config.processors.values().next() {
        Some(ProcessorConfig::MemoryLimiter(config)) => Ok(config.clone()),
        other => panic!("not a memory_limiter: {other:?}"),
    }
}

#[test]
fn otelcol_settings_are_read_with_their_meaning() {
    let config =
        parse("    check_interval: 5s\n    limit_mib: 512\n    spike_limit_mib: 128\n").unwrap();
    assert_eq!(config.check_interval, Duration::from_secs(5));
    assert_eq!(
        config.limits(0),
        Limits {
            hard: 512 * MIB,
            soft: 384 * MIB
        }
    );
    let config = parse("    limit_mib: 100\n").unwrap();
    assert_eq!(config.check_interval, Duration::from_secs(1), "default");
    assert_eq!(
        config.limits(0),
        Limits {
            hard: 100 * MIB,
            soft: 80 * MIB
        },
        "the spike limit defaults to 20 % of the limit"
    );
    let config = parse("    limit_percentage: 80\n    spike_limit_percentage: 25\n").unwrap();
    assert_eq!(
        config.limits(1000 * MIB),
        Limits {
            hard: 800 * MIB,
            soft: 550 * MIB
        },
        "percentages are of the memory available to the process"
    );
    let config = parse("    limit_percentage: 50\n").unwrap();
    assert_eq!(config.limits(1000 * MIB).soft, 400 * MIB);
}

#[test]
fn bad_settings_are_refused_with_the_field_and_the_reason() {
    let cases = [
        (
            "    check_interval: 1s\n",
            "memory_limiter.limit_mib",
            "is required",
        ),
        (
            "    limit_mib: 0\n",
            "memory_limiter.limit_mib",
            "at least 1",
        ),
        (
            "    limit_mib: 100\n    limit_percentage: 50\n",
            "memory_limiter.limit_percentage",
            "cannot be combined",
        ),
        (
            "    limit_mib: 100\n    spike_limit_mib: 100\n",
            "memory_limiter.spike_limit_mib",
            "smaller than limit_mib (100), not 100",
        ),
        (
            "    limit_mib: 100\n    spike_limit_percentage: 10\n",
            "memory_limiter.spike_limit_percentage",
            "use `spike_limit_mib`",
        ),
        (
            "    limit_percentage: 50\n    spike_limit_mib: 10\n",
            "memory_limiter.spike_limit_mib",
            "use `spike_limit_percentage`",
        ),
        (
            "    limit_percentage: 101\n",
            "memory_limiter.limit_percentage",
            "1–100, not 101",
        ),
        (
            "    limit_percentage: 40\n    spike_limit_percentage: 40\n",
            "memory_limiter.spike_limit_percentage",
            "smaller than limit_percentage (40)",
        ),
        (
            "    limit_mib: 100\n    check_interval: 0s\n",
            "memory_limiter.check_interval",
            "longer than 0s",
        ),
        (
            "    limit_mib: 100\n    min_gc_interval_when_soft_limited: 10s\n",
            "memory_limiter.min_gc_interval_when_soft_limited",
            "Go's garbage collector",
        ),
        ("    limit_mb: 100\n", "limit_mb", "unknown field"),
    ];
    for (section, field, reason) in cases {
        let error = parse(section).expect_err(section);
        assert!(
            error.contains(field) && error.contains(reason),
            "{section}: {error}"
        );
        assert!(
            error.contains("test.yaml:"),
            "{section}: a location: {error}"
        );
    }
}

/// A probe whose readings the test sets: queued readings first, then the last value stored; it counts how
/// often it is read.
#[derive(Clone, Default)]
struct Readings {
    queued: Arc<std::sync::Mutex<std::collections::VecDeque<u64>>>,
    value: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
}

impl Readings {
    fn probe(&self) -> RssProbe {
        let readings = self.clone();
        Box::new(move || {
            readings.reads.fetch_add(1, Ordering::Relaxed);
            let queued = readings.queued.lock().unwrap().pop_front();
            Some(queued.unwrap_or_else(|| readings.value.load(Ordering::Relaxed)))
        })
    }
}

fn probe() -> (RssProbe, Arc<AtomicU64>, Arc<AtomicU64>) {
    let readings = Readings::default();
    (readings.probe(), readings.value, readings.reads)
}

struct Limiter {
    entry: crate::pipeline::SharedConsumer,
    recorder: Arc<Recorder>,
    account: MemoryAccount,
    registry: Registry,
}

/// A limiter built with `config` in front of `next`, with `available` bytes of memory and `probe`.
fn build_limiter(
    config: &MemoryLimiterConfig,
    next: crate::pipeline::SharedConsumer,
    available: u64,
    probe: RssProbe,
) -> (crate::processor::Built, MemoryAccount, Registry) {
    let account = MemoryAccount::default();
    let registry = Registry::default();
    let id = ComponentId::parse("memory_limiter").unwrap();
    let built = build_with(
        config,
        ProcessorContext {
            id: &id,
            pipeline: "traces",
            signal: Signal::Traces,
            registry: &registry,
            memory: &account,
        },
        next,
        available,
        probe,
    );
    (built, account, registry)
}

/// A limiter with a 1,000-byte hard limit and a 400-byte spike limit (soft limit 600 bytes).
fn limiter(check_interval: Duration, probe: RssProbe) -> Limiter {
    let config = MemoryLimiterConfig {
        check_interval,
        limit_mib: None,
        spike_limit_mib: None,
        limit_percentage: Some(10),
        spike_limit_percentage: Some(4),
    };
    let recorder = Arc::new(Recorder::default());
    let (built, account, registry) = build_limiter(&config, recorder.clone(), 10_000, probe);
    assert!(built.stage.is_none(), "no task of its own");
    Limiter {
        entry: built.entry,
        recorder,
        account,
        registry,
    }
}

fn batch(bytes: usize) -> Batch {
    Batch::new(Signal::Traces, Bytes::from(vec![0u8; bytes]), 1)
}

#[test]
fn admits_until_accepted_data_would_pass_the_soft_limit_and_again_once_it_is_gone() {
    let (probe, _, _) = probe();
    let limiter = limiter(Duration::from_secs(3600), probe);
    limiter.entry.try_consume(batch(250)).unwrap();
    limiter.entry.try_consume(batch(350)).unwrap();
    assert_eq!(
        limiter.account.held(),
        600,
        "held while downstream keeps them"
    );
    let refusal = limiter.entry.try_consume(batch(1)).unwrap_err();
    let Refusal::MemoryLimit {
        detail,
        retry_after,
    } = &refusal
    else {
        panic!("{refusal:?}")
    };
    assert!(
        detail.contains("soft limit of 0.0 MiB") && detail.contains("this request's 0.0 MiB"),
        "{detail}"
    );
    assert!(!retry_after.is_zero(), "clients are told when to retry");
    assert_eq!(refusal.reason(), "memory_limit");
    assert_eq!(
        limiter.recorder.0.lock().unwrap().len(),
        2,
        "nothing refused passed"
    );
    assert_eq!(limiter.account.held(), 600, "a refusal holds nothing");

    // Downstream lets go of the first batch (exported, written to disk, or dropped).
    let first = limiter.recorder.0.lock().unwrap().remove(0);
    drop(first);
    assert_eq!(limiter.account.held(), 350);
    limiter.entry.try_consume(batch(250)).unwrap();
    assert_eq!(limiter.account.held(), 600);
    let text = limiter.registry.render();
    assert!(
        text.contains("vigil_memory_limiter_held_bytes 600"),
        "{text}"
    );
    assert!(
        text.contains(
            "vigil_memory_limiter_limit_bytes{processor=\"memory_limiter\",limit=\"soft\"} 600"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "vigil_memory_limiter_limit_bytes{processor=\"memory_limiter\",limit=\"hard\"} 1000"
        ),
        "{text}"
    );
}

#[test]
fn the_lease_follows_copies_and_derived_chunks_until_the_last_is_gone() {
    let (probe, _, _) = probe();
    let limiter = limiter(Duration::from_secs(3600), probe);
    limiter.entry.try_consume(batch(500)).unwrap();
    let admitted = limiter.recorder.0.lock().unwrap().remove(0);
    let copy = admitted.clone();
    let derived = Chunk::derived(&admitted.chunks[0], Bytes::from_static(b"masked"), 1);
    drop(admitted);
    drop(copy);
    assert_eq!(limiter.account.held(), 500, "the derived chunk holds it");
    drop(derived);
    assert_eq!(limiter.account.held(), 0);
}

#[test]
fn a_batch_refused_downstream_gives_its_bytes_back() {
    struct Full;
    impl Consumer for Full {
        fn try_consume(&self, _: Batch) -> Result<(), Refusal> {
            Err(Refusal::Full {
                retry_after: Duration::from_secs(1),
            })
        }
        fn consume(&self, _: Batch) -> crate::pipeline::BoxFuture<'_, Result<(), Refusal>> {
            Box::pin(async { Ok(()) })
        }
    }
    let (probe, _, _) = probe();
    let config = MemoryLimiterConfig {
        check_interval: Duration::from_secs(1),
        limit_mib: Some(1),
        spike_limit_mib: None,
        limit_percentage: None,
        spike_limit_percentage: None,
    };
    let (built, account, _registry) = build_limiter(&config, Arc::new(Full), 0, probe);
    assert!(matches!(
        built.entry.try_consume(batch(100)),
        Err(Refusal::Full { .. })
    ));
    assert_eq!(account.held(), 0);
}

#[tokio::test]
async fn data_that_cannot_be_refused_passes_and_is_counted() {
    let (probe, _, _) = probe();
    let limiter = limiter(Duration::from_secs(3600), probe);
    limiter.entry.try_consume(batch(600)).unwrap();
    limiter.entry.consume(batch(700)).await.unwrap();
    assert_eq!(limiter.recorder.0.lock().unwrap().len(), 2);
    assert_eq!(limiter.account.held(), 1_300);
    assert!(limiter.entry.try_consume(batch(1)).is_err());
}

#[test]
fn resident_memory_over_the_hard_limit_refuses_everything_until_a_later_reading_is_under() {
    let (probe, rss, reads) = probe();
    let limiter = limiter(Duration::from_millis(1), probe);
    rss.store(1_001, Ordering::Relaxed);
    let refusal = limiter.entry.try_consume(batch(1)).unwrap_err();
    assert!(
        matches!(&refusal, Refusal::MemoryLimit { detail, .. } if detail.contains("resident memory")),
        "{refusal:?}"
    );
    assert_eq!(
        reads.load(Ordering::Relaxed),
        2,
        "read again after asking the allocator to give memory back"
    );
    rss.store(1_000, Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while limiter.entry.try_consume(batch(1)).is_err() {
        assert!(std::time::Instant::now() < deadline, "never admitted again");
        std::thread::yield_now();
    }
    assert_eq!(limiter.account.held(), 1);
}

#[test]
fn memory_exactly_at_the_hard_limit_is_not_over_it() {
    let readings = Readings::default();
    let limiter = limiter(Duration::from_secs(3600), readings.probe());
    readings.value.store(1_000, Ordering::Relaxed);
    limiter
        .entry
        .try_consume(batch(1))
        .expect("at the limit, not over");
    assert_eq!(
        readings.reads.load(Ordering::Relaxed),
        1,
        "no second reading when the first is not over"
    );
}

#[test]
fn memory_given_back_to_the_system_admits_at_once() {
    let readings = Readings::default();
    let limiter = limiter(Duration::from_secs(3600), readings.probe());
    // Over before freed memory is handed back, exactly at the limit after.
    readings.queued.lock().unwrap().extend([5_000, 1_000]);
    limiter
        .entry
        .try_consume(batch(1))
        .expect("the second reading decides");
    assert_eq!(readings.reads.load(Ordering::Relaxed), 2);
}

#[test]
fn the_refusing_gauge_and_the_megabytes_in_messages() {
    let (probe, _, _) = probe();
    let limiter = limiter(Duration::from_secs(3600), probe);
    let refusing = |limiter: &Limiter| {
        limiter
            .registry
            .render()
            .lines()
            .find_map(|line| {
                line.strip_prefix("vigil_memory_limiter_refusing{processor=\"memory_limiter\"} ")
                    .map(str::to_string)
            })
            .expect("gauge")
    };
    assert_eq!(refusing(&limiter), "0.0");
    limiter.entry.try_consume(batch(600)).unwrap();
    assert_eq!(refusing(&limiter), "0.0");
    assert!(limiter.entry.try_consume(batch(1)).is_err());
    assert_eq!(refusing(&limiter), "1.0");
    assert!(limiter.entry.try_consume(batch(1)).is_err());
    assert_eq!(refusing(&limiter), "1.0", "still refusing");
    limiter.recorder.0.lock().unwrap().clear();
    limiter.entry.try_consume(batch(1)).unwrap();
    assert_eq!(refusing(&limiter), "0.0", "admitting again");
    assert_eq!(super::mib(1_572_864), "1.5 MiB");
    assert_eq!(super::mib(0), "0.0 MiB");
}

#[test]
fn resident_memory_is_read_at_most_once_per_check_interval() {
    let (probe, rss, reads) = probe();
    let limiter = limiter(Duration::from_secs(3600), probe);
    for _ in 0..5 {
        limiter.entry.try_consume(batch(1)).unwrap();
    }
    assert_eq!(reads.load(Ordering::Relaxed), 1, "one reading per interval");
    rss.store(u64::MAX, Ordering::Relaxed);
    limiter
        .entry
        .try_consume(batch(1))
        .expect("the next reading is not due yet");
}

#[test]
fn percentages_are_of_the_cgroup_limit_when_there_is_one() {
    assert_eq!(super::available_of(Some(512), 4096), 512);
    assert_eq!(super::available_of(Some(1), 4096), 1);
    assert_eq!(super::available_of(Some(0), 4096), 4096, "unreadable");
    assert_eq!(super::available_of(None, 4096), 4096);
}

#[test]
fn the_real_probe_reads_this_process() {
    let rss = (super::own_rss())().expect("resident memory on this platform");
    assert!(rss > 1024 * 1024, "{rss}");
    assert!(super::available_memory() > rss);
}
