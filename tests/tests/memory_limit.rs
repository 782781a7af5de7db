//! `memory_limiter` under overload: with the exporter down and clients sending large requests as fast as they
//! are answered, the collector's resident memory stays under the limit plus the request bodies in flight, every
//! refusal is retryable, and once the backend is back everything accepted is delivered.
//!
//! `VIGIL_OVERLOAD_SECONDS` sets how long the overload lasts (10 s in the suite; the documented long run in
//! BENCHMARKS.md uses 60).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use vigil_e2e::{Collector, eventually, readme_yaml_after, validate_config, workspace_binary};

const MIB: u64 = 1024 * 1024;
const LIMIT_MIB: u64 = 128;
/// Headroom for what the count does not see: the process itself (about 30 MiB in a debug build), requests being
/// received, exports being encoded.
const SPIKE_LIMIT_MIB: u64 = 56;
/// Concurrent requests from the load generator.
const CONNECTIONS: u64 = 4;
const STREAMS: u64 = 2;

fn upstream(downstream_port: u16) -> String {
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: '{{grpc}}'}}
processors:
  memory_limiter: {{limit_mib: {LIMIT_MIB}, spike_limit_mib: {SPIKE_LIMIT_MIB}, check_interval: 100ms}}
  batch: {{}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{downstream_port}
    tls: {{insecure: true}}
    timeout: 2s
    # Far more room than the memory limit: the limiter, not the queue, must be what refuses.
    sending_queue: {{queue_size: 100000, num_consumers: 2}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  shutdown_timeout: 20s
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter, batch], exporters: [otlp]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
"
    )
}

const DOWNSTREAM: &str = "
receivers:
  otlp:
    protocols:
      grpc: {endpoint: '{grpc}', max_recv_msg_size_mib: 64}
exporters:
  nop:
extensions:
  health_check: {endpoint: '{health}'}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], exporters: [nop]}
  telemetry:
    metrics: {address: '{metrics}'}
";

/// What `vigil-loadgen` reports: requests answered OK, refused retryably, failed otherwise.
#[derive(Debug)]
struct Load {
    ok: u64,
    refused: u64,
    failed: u64,
    request_bytes: u64,
}

/// Sends 4,096-span requests (about 1.6 MB each) from `CONNECTIONS` × `STREAMS` concurrent streams.
fn load(collector: &Collector, seconds: u64) -> Load {
    let output = Command::new(workspace_binary("vigil-loadgen"))
        .args([
            "--endpoint",
            &collector.grpc,
            "--items",
            "4096",
            "--attributes",
            "6",
        ])
        .args(["--connections", &CONNECTIONS.to_string()])
        .args(["--streams", &STREAMS.to_string()])
        .args(["--duration", &format!("{seconds}s"), "--warmup", "0s"])
        .output()
        .expect("run vigil-loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| -> u64 {
        stdout
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in:\n{stdout}"))
    };
    let size = Command::new(workspace_binary("vigil-loadgen"))
        .args(["--items", "4096", "--attributes", "6", "--write-request"])
        .arg(collector.dir.path().join("request.bin"))
        .status()
        .expect("write the request");
    assert!(size.success());
    Load {
        ok: field("ok"),
        refused: field("refused"),
        failed: field("failed"),
        request_bytes: std::fs::metadata(collector.dir.path().join("request.bin"))
            .expect("request written")
            .len(),
    }
}

/// Samples the resident memory of `pid` every 10 ms until `stop` is raised; the largest reading.
fn watch_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let largest = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib: u64 = status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            largest.fetch_max(kib * 1024, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
        largest.load(Ordering::Relaxed)
    })
}

#[test]
fn overload_with_the_exporter_down_stays_under_the_memory_limit_and_everything_accepted_arrives_later()
 {
    let seconds: u64 = std::env::var("VIGIL_OVERLOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // Held until the downstream starts, so a test running in parallel cannot take the port meanwhile.
    let (downstream_port, reservation) = vigil_e2e::reserve_port();
    let mut collector = Collector::start(&upstream(downstream_port));
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(collector.pid(), stop.clone());

    let overload = load(&collector, seconds);
    stop.store(true, Ordering::Relaxed);
    let largest_rss = rss.join().expect("RSS watcher");
    assert_eq!(
        overload.failed, 0,
        "every refusal is retryable: {overload:?}"
    );
    assert!(
        overload.ok > 0,
        "data is admitted up to the limit: {overload:?}"
    );
    assert!(
        overload.refused > overload.ok,
        "a dead exporter must make the limiter refuse: {overload:?}"
    );
    let metrics = collector.metrics();
    let metric = |name: &str, labels: &[&str]| vigil_e2e::metric_sum(&metrics, name, labels);
    assert!(
        metric(
            "vigil_receiver_refused_items_total",
            &["reason=\"memory_limit\""]
        ) >= (overload.refused * 4096) as f64,
        "{metrics}"
    );
    assert_eq!(
        metric(
            "vigil_receiver_refused_items_total",
            &["reason=\"queue_full\""]
        ),
        0.0,
        "the limiter refuses before any queue fills"
    );
    let held = metric("vigil_memory_limiter_held_bytes", &[]);
    assert!(
        held <= ((LIMIT_MIB - SPIKE_LIMIT_MIB) * MIB) as f64 && held > 0.0,
        "accepted data held stays under the soft limit: {held}"
    );
    // The documented bound: the limit, plus twice the request bodies being received at once (a body can be
    // in memory twice while it is read and reassembled) and twice the batches being exported (two consumers,
    // batches of two requests).
    let in_flight =
        2 * CONNECTIONS * STREAMS * overload.request_bytes + 2 * 2 * 2 * overload.request_bytes;
    let bound = LIMIT_MIB * MIB + in_flight;
    eprintln!(
        "overload {seconds}s: {overload:?}, largest RSS {} MiB, bound {} MiB",
        largest_rss / MIB,
        bound / MIB
    );
    assert!(
        largest_rss <= bound,
        "resident memory {} MiB passed the limit plus requests in flight ({} MiB)",
        largest_rss / MIB,
        bound / MIB
    );

    // The backend comes back: the backlog drains, memory is given back, and data is admitted again.
    drop(reservation);
    let mut downstream = Collector::start_on(DOWNSTREAM, &[], downstream_port);
    assert!(
        eventually(Duration::from_secs(60), || {
            collector.metric("vigil_memory_limiter_held_bytes", &[]) == 0.0
        }),
        "the backlog never drained:\n{}",
        collector.log()
    );
    let after = load(&collector, 2);
    assert!(after.ok > 0 && after.failed == 0, "{after:?}");
    let accepted = collector.metric("vigil_receiver_accepted_items_total", &[]);
    assert!(
        eventually(Duration::from_secs(60), || {
            collector.metric("vigil_exporter_sent_items_total", &[]) == accepted
        }),
        "everything accepted is sent:\n{}",
        collector.metrics()
    );
    assert!(
        collector
            .log()
            .contains("memory limit reached, refusing data"),
        "the refusals are explained in the log:\n{}",
        collector.log()
    );
    assert!(collector.stop().success(), "{}", collector.log());
    assert!(downstream.stop().success());
}

/// The README's snippet, completed with the receiver and exporter it names, is valid, and says what it does:
/// refusing starts at `limit_mib − spike_limit_mib` held. otelcol's Go garbage-collector settings are refused
/// with the reason.
#[test]
fn the_readme_snippet_validates_and_its_limits_are_what_it_says() {
    let snippet = readme_yaml_after("### Memory limit");
    let components = "receivers:\n  otlp: {}\nexporters:\n  otlp: {endpoint: 127.0.0.1:9}\n";
    let (valid, stderr) = validate_config(&format!("{components}{snippet}"));
    assert!(valid, "{stderr}");
    let running = snippet.replace(
        "service:\n",
        "service:\n  telemetry: {metrics: {address: '{metrics}'}}\n",
    );
    let mut collector = Collector::start(&format!(
        "receivers:\n  otlp: {{protocols: {{grpc: {{endpoint: '{{grpc}}'}}}}}}\nexporters:\n  otlp: {{endpoint: 127.0.0.1:9}}\nextensions:\n  health_check: {{endpoint: '{{health}}'}}\n{}",
        running.replace("service:\n", "service:\n  extensions: [health_check]\n")
    ));
    let soft = collector.metric("vigil_memory_limiter_limit_bytes", &["limit=\"soft\""]);
    let hard = collector.metric("vigil_memory_limiter_limit_bytes", &["limit=\"hard\""]);
    assert_eq!((soft, hard), ((384 * MIB) as f64, (512 * MIB) as f64));
    collector.stop();

    let go = snippet.replace(
        "    spike_limit_mib: 128",
        "    min_gc_interval_when_soft_limited: 10s\n    spike_limit_mib: 128",
    );
    assert_ne!(go, snippet);
    let (valid, stderr) = validate_config(&format!("{components}{go}"));
    assert!(!valid);
    assert!(
        stderr.contains("processors.memory_limiter.min_gc_interval_when_soft_limited")
            && stderr.contains("Go's garbage collector"),
        "{stderr}"
    );
}
