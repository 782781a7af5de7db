//! The persistent sending queue under `kill -9`: a collector with `configs/examples/persistent-queue.yaml`
//! forwards to a second collector (writing to a file) while clients send without pause; it is killed at
//! random moments, the downstream collector is stopped and started again now and then, and at the end every
//! span a client was told was accepted has arrived downstream, and no more spans arrived twice than were in
//! flight (handed to the exporter, not confirmed) at the kills.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_e2e::{
    Collector, OTLP_TO_FILE, eventually, file_exporter_lines, http, otlp, readme_yaml_after, spans,
    validate_config, workspace_root,
};

const SPANS_PER_REQUEST: u32 = 10;

/// The downstream collector: OTLP in, every signal to `{VIGIL_SINK_DIR}/<signal>.jsonl`, appended across
/// restarts.
fn sink() -> String {
    OTLP_TO_FILE.replace("'{dir}/out'", "'${env:VIGIL_SINK_DIR}'")
}

/// The shipped example, its listen addresses moved to the test's ports.
fn example_template() -> String {
    std::fs::read_to_string(workspace_root().join("configs/examples/persistent-queue.yaml"))
        .expect("read the example")
}

/// Starts the example config on fresh ports (the template's `${env:…}` listen addresses are given the
/// harness's ports through a rendered copy).
fn start_upstream(queue: &Path, downstream: &str) -> Collector {
    // A send the downstream wrote but answered after the exporter's timeout would be sent again without
    // having been in flight at a kill: a long timeout keeps a loaded machine from making such duplicates, so
    // that the bound below (duplicates <= items in flight at the kills) holds.
    let example = example_template().replace(
        "    tls:\n      insecure: true\n",
        "    tls:\n      insecure: true\n    timeout: 120s\n",
    );
    assert!(
        example.contains("timeout: 120s"),
        "the example's exporter changed shape"
    );
    start_upstream_from(&example, queue, downstream)
}

fn start_upstream_from(example: &str, queue: &Path, downstream: &str) -> Collector {
    let template = example
        .replace("${env:VIGIL_OTLP_GRPC_ENDPOINT:-0.0.0.0:4317}", "{grpc}")
        .replace("${env:VIGIL_OTLP_HTTP_ENDPOINT:-0.0.0.0:4318}", "{http}")
        .replace("${env:VIGIL_HEALTH_ENDPOINT:-0.0.0.0:13133}", "{health}")
        .replace("${env:VIGIL_METRICS_ENDPOINT:-0.0.0.0:8888}", "{metrics}");
    let queue = queue.display().to_string();
    let endpoint = format!("http://{downstream}");
    Collector::start_with_env(
        &template,
        &[
            ("VIGIL_QUEUE_DIR", &queue),
            ("VIGIL_OTLP_EXPORT_ENDPOINT", &endpoint),
        ],
    )
}

/// Sends requests from `clients` threads until `stop`; returns the ids of the requests answered 200.
fn send_until(
    address: &str,
    next_id: &Arc<AtomicU32>,
    stop: &Arc<AtomicBool>,
    clients: usize,
) -> Vec<u32> {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (address, next_id, stop, acknowledged) = (
                address.to_string(),
                next_id.clone(),
                stop.clone(),
                acknowledged.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    let body = otlp::traces(id, SPANS_PER_REQUEST);
                    match http(
                        "POST",
                        &address,
                        "/v1/traces",
                        &[("content-type", "application/x-protobuf")],
                        &body,
                    ) {
                        Ok(response) if response.status == 200 => {
                            acknowledged.lock().unwrap().push(id)
                        }
                        Ok(_) => {}
                        // The collector was killed: this client stops (its request was never answered).
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    Arc::try_unwrap(acknowledged).unwrap().into_inner().unwrap()
}

/// The items `vigil-collector queue check` finds handed to the exporter and not confirmed, in every queue under
/// `dir`.
fn in_flight_items(dir: &Path) -> u64 {
    let check = std::process::Command::new(vigil_e2e::collector_binary())
        .args(["queue", "check"])
        .arg(dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    // 1 is a report with damage (a tail torn by the kill); 2 would be no report at all.
    assert!(
        matches!(check.status.code(), Some(0 | 1)),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    report
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(" of them (")?;
            let (items, _) = rest.split_once(" items) were handed to the exporter")?;
            Some(items.parse::<u64>().expect("a count of items"))
        })
        .sum()
}

#[test]
fn every_acknowledged_span_survives_repeated_kill_9() {
    let queue = tempfile::tempdir().unwrap();
    let sink_dir = tempfile::tempdir().unwrap();
    let sink_env = [("VIGIL_SINK_DIR", sink_dir.path().to_str().unwrap())];
    let mut downstream = Collector::start_with_env(&sink(), &sink_env);
    let downstream_grpc = downstream.grpc.clone();
    let grpc_port: u16 = downstream_grpc.rsplit(':').next().unwrap().parse().unwrap();

    let next_id = Arc::new(AtomicU32::new(1));
    let mut acknowledged: HashSet<u32> = HashSet::new();
    // Items the exporter had been handed and not finished at each kill, as `queue check` reports them: the
    // only items a restart may deliver twice.
    let mut in_flight_at_kills = 0;
    const KILLS: usize = 20;
    for round in 0..KILLS {
        let mut upstream = start_upstream(queue.path(), &downstream_grpc);
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (address, next_id, stop) = (upstream.http.clone(), next_id.clone(), stop.clone());
            std::thread::spawn(move || send_until(&address, &next_id, &stop, 16))
        };
        // The downstream goes away for a while every fifth round: the queue holds the backlog meanwhile.
        if round % 5 == 2 {
            downstream.stop();
        }
        // A random moment to kill at, while the clients are sending.
        let moment = std::collections::hash_map::RandomState::new().hash_one(round) % 500;
        std::thread::sleep(Duration::from_millis(100 + moment));
        upstream.kill();
        stop.store(true, Ordering::SeqCst);
        acknowledged.extend(sender.join().unwrap());
        in_flight_at_kills += in_flight_items(queue.path());
        if round % 5 == 2 {
            downstream = Collector::start_on(&sink(), &sink_env, grpc_port);
        }
    }
    assert!(
        acknowledged.len() > 50,
        "the clients should have been answered often: {}",
        acknowledged.len()
    );

    // One last run delivers everything left in the queue.
    let mut upstream = start_upstream(queue.path(), &downstream_grpc);
    assert!(
        eventually(Duration::from_secs(60), || {
            upstream.metric("vigil_exporter_queue_items", &[]) == 0.0
        }),
        "the queue did not drain:\n{}",
        upstream.log()
    );
    let redelivered = upstream.metric("vigil_exporter_redelivered_items_total", &[]);
    upstream.stop();
    downstream.stop();

    let mut seen: HashMap<String, u32> = HashMap::new();
    for span in spans(&file_exporter_lines(sink_dir.path(), "traces")) {
        let id = span["spanId"].as_str().unwrap().to_string();
        *seen.entry(id).or_default() += 1;
    }
    let mut missing = Vec::new();
    for &request in &acknowledged {
        for index in 0..SPANS_PER_REQUEST {
            if !seen.contains_key(&otlp::span_id(request, index)) {
                missing.push((request, index));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged spans never arrived (of {}), e.g. {:?}",
        missing.len(),
        acknowledged.len() as u32 * SPANS_PER_REQUEST,
        &missing[..missing.len().min(5)]
    );
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    assert!(
        u64::from(duplicates) <= in_flight_at_kills,
        "{duplicates} spans arrived twice, more than the {in_flight_at_kills} in flight at the kills"
    );

    // What the header promises for an inspection: the drained queue is clean.
    let check = std::process::Command::new(vigil_e2e::collector_binary())
        .args(["queue", "check"])
        .arg(queue.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        report.contains("0 undelivered records") && report.contains("clean"),
        "{report}"
    );
    eprintln!(
        "{KILLS} kills: {} acknowledged requests, {} spans arrived, {duplicates} duplicates \
         ({in_flight_at_kills} in flight at the kills), {redelivered} redelivered in the last run",
        acknowledged.len(),
        seen.len()
    );
}

/// The README's snippet, completed with a receiver and a pipeline, is valid; the otelcol way of writing
/// `storage` (the id of a `file_storage` extension) gets an error that shows what to write instead.
#[test]
fn the_readme_snippet_validates_and_the_otelcol_shape_is_explained() {
    let snippet = readme_yaml_after("### Persistent queue");
    let snippet = snippet.as_str();
    let pipeline = "receivers:\n  otlp: {}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [otlp]}\n";
    let (valid, stderr) = validate_config(&format!("{snippet}{pipeline}"));
    assert!(valid, "{stderr}");

    let otelcol = snippet.replace(
        "      storage:\n        directory: /var/lib/vigil/queue   # one subdirectory per exporter, locked while in use\n        fsync: always                     # or interval(1s), or never\n        max_size_mib: 1024                # undelivered backlog past which receivers refuse (retryably)\n",
        "      storage: file_storage/queue\n",
    );
    assert_ne!(otelcol, snippet, "the replacement must apply");
    let (valid, stderr) = validate_config(&format!("{otelcol}{pipeline}"));
    assert!(!valid);
    assert!(
        stderr.contains("exporters.otlp.sending_queue")
            && stderr.contains("names an otelcol storage extension")
            && stderr.contains("storage: {directory:"),
        "{stderr}"
    );
    let (valid, stderr) = validate_config(&format!(
        "{}{pipeline}",
        snippet.replace("fsync: always", "fsync: sometimes")
    ));
    assert!(!valid);
    assert!(stderr.contains("interval(1s)"), "{stderr}");
}

/// What the example's header promises when the backlog reaches `max_size_mib` (here 1 MiB, with the backend
/// down): clients are answered "retry later" (503 with `Retry-After`) at once, not held, and what was stored
/// stays in the queue.
#[test]
fn a_full_queue_answers_retry_later_at_once() {
    let queue = tempfile::tempdir().unwrap();
    let (port, listener) = vigil_e2e::reserve_port();
    drop(listener); // nothing listens there: the backend is down
    let example = example_template().replace("max_size_mib: 2048", "max_size_mib: 1");
    assert_ne!(
        example,
        example_template(),
        "the example's limit must be found"
    );
    let upstream = start_upstream_from(&example, queue.path(), &format!("127.0.0.1:{port}"));
    let mut answers = Vec::new();
    for request in 1..=40 {
        let started = std::time::Instant::now();
        let response = http(
            "POST",
            &upstream.http,
            "/v1/traces",
            &[("content-type", "application/x-protobuf")],
            &otlp::traces(request, 1000),
        )
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "request {request} was held {:?}",
            started.elapsed()
        );
        answers.push((
            response.status,
            response.header("retry-after").map(str::to_string),
        ));
        if response.status == 503 {
            break;
        }
    }
    let (status, retry_after) = answers.last().unwrap().clone();
    assert_eq!(status, 503, "never refused: {answers:?}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count() as f64;
    assert!(accepted >= 1.0, "{answers:?}");
    // Every request answered 200 is in the queue; the refused one is counted as refused, not accepted.
    let spans_accepted = upstream.metric("vigil_receiver_accepted_items_total", &[]);
    assert_eq!(spans_accepted, accepted * 1000.0, "{}", upstream.metrics());
    assert!(upstream.metric("vigil_exporter_queue_items", &[]) >= spans_accepted);
    assert!(
        upstream.metric(
            "vigil_receiver_refused_items_total",
            &["reason=\"queue_full\""]
        ) >= 1000.0
    );
}
