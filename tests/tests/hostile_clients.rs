//! A hostile or unlucky client cannot cost other clients their data, and cannot take the collector down: the
//! findings of the data-loss report, each as what a user would see.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use vigil_e2e::{Collector, collector_binary, eventually, file_exporter_lines, http, otlp, spans};

/// The report's reproducer: a span whose `start_time_unix_nano` (fixed64) is sent as a varint.
const POISON: &str =
    "0a2a122812260a1001010101010101010101010101010101120802020202020202022a06706f69736f6e3805";

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn post_traces(collector: &Collector, body: &[u8]) -> vigil_e2e::HttpResponse {
    http(
        "POST",
        &collector.http,
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        body,
    )
    .unwrap()
}

/// Traces through `batch` (so requests of different clients share batches) into the `file` exporter and the
/// `spanmetrics` connector, both of which decode every batch.
const BATCHED_TO_FILE: &str = "
receivers:
  otlp:
    protocols:
      grpc: {endpoint: '{grpc}'}
      http: {endpoint: '{http}'}
processors:
  batch: {send_batch_size: 200, timeout: 20ms}
exporters:
  file: {path: '{dir}/out'}
  nop:
connectors:
  spanmetrics: {metrics_flush_interval: 100ms}
extensions:
  health_check: {endpoint: '{health}'}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [file, spanmetrics]}
    metrics: {receivers: [spanmetrics], exporters: [nop]}
  telemetry:
    metrics: {address: '{metrics}'}
";

#[test]
fn the_reported_request_is_refused_and_costs_nobody_anything() {
    let mut collector = Collector::start(BATCHED_TO_FILE);
    let refused = post_traces(&collector, &hex(POISON));
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains(
            "spans[0].start_time_unix_nano: wire type 0 (a varint), expected a 64-bit value"
        ),
        "{}",
        refused.text()
    );
    assert_eq!(post_traces(&collector, &otlp::traces(1, 3)).status, 200);
    let status = collector.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "nothing accepted was lost:\n{}",
        collector.log()
    );
    let delivered = spans(&file_exporter_lines(
        &collector.dir.path().join("out"),
        "traces",
    ));
    assert_eq!(delivered.len(), 3);
}

/// xorshift64*, so a failure can be replayed from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A request a fuzzer would send: a valid one with bytes flipped, inserted, removed or cut off.
fn mutant(rng: &mut Rng, request: u32) -> Vec<u8> {
    let mut bytes = otlp::traces(request, 1 + rng.below(3) as u32);
    if rng.below(20) == 0 {
        return hex(POISON);
    }
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len());
        match rng.below(4) {
            0 => bytes[at] = rng.next() as u8,
            1 => bytes[at] ^= 1 << rng.below(8),
            2 => bytes.insert(at, rng.next() as u8),
            _ => {
                bytes.remove(at);
            }
        }
    }
    if rng.below(10) == 0 {
        bytes.truncate(rng.below(bytes.len() + 1));
    }
    bytes
}

/// The report's fuzz run as a test: a well-behaved client and a fuzzing client share a collector with
/// `batch`; every span the well-behaved client was told was accepted is delivered, and so is everything the
/// fuzzer got accepted (the exit status says nothing was dropped).
#[test]
fn a_fuzzing_client_beside_a_well_behaved_one_costs_it_nothing() {
    let mut collector = Collector::start(BATCHED_TO_FILE);
    let address = collector.http.clone();
    let fuzzer = std::thread::spawn(move || {
        let seed = 0x5eed_1234_u64;
        let mut rng = Rng(seed);
        let (mut accepted, mut refused) = (0, 0);
        for request in 0..1500u32 {
            let body = mutant(&mut rng, 100_000 + request);
            let response = http(
                "POST",
                &address,
                "/v1/traces",
                &[("Content-Type", "application/x-protobuf")],
                &body,
            )
            .unwrap();
            match response.status {
                200 => accepted += 1,
                400 => refused += 1,
                other => panic!("seed {seed:#x}, request {request}: status {other}"),
            }
        }
        (accepted, refused)
    });
    let mut told_accepted = Vec::new();
    for request in 0..300u32 {
        let response = post_traces(&collector, &otlp::traces(request, 4));
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(response.body.is_empty() || !response.text().contains("rejected"));
        told_accepted.push(request);
    }
    let (fuzz_accepted, fuzz_refused) = fuzzer.join().unwrap();
    assert!(
        fuzz_accepted > 100 && fuzz_refused > 100,
        "{fuzz_accepted} accepted, {fuzz_refused} refused"
    );
    let accepted_items = collector.metric("vigil_receiver_accepted_items_total", &[]);
    let status = collector.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "every accepted item was delivered:\n{}",
        collector.log()
    );
    let delivered = spans(&file_exporter_lines(
        &collector.dir.path().join("out"),
        "traces",
    ));
    let ids: std::collections::HashSet<String> = delivered
        .iter()
        .filter_map(|s| s["spanId"].as_str().map(str::to_string))
        .collect();
    for request in told_accepted {
        for index in 0..4 {
            assert!(
                ids.contains(&otlp::span_id(request, index)),
                "span {index} of request {request} was acknowledged but not delivered"
            );
        }
    }
    assert_eq!(
        delivered.len() as f64,
        accepted_items,
        "the file holds every accepted span"
    );
}

/// Reads until the peer closes; `true` when it did within the socket's read timeout.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

const SHORT_TIMEOUTS: &str = "
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: '{grpc}'
        connections: {idle_timeout: 1s, read_timeout: 2s, read_header_timeout: 1s}
      http:
        endpoint: '{http}'
        connections: {idle_timeout: 1s, read_timeout: 2s, read_header_timeout: 1s, max_connections: MAX}
exporters:
  file: {path: '{dir}/out'}
extensions:
  health_check: {endpoint: '{health}'}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], exporters: [file]}
  telemetry:
    metrics: {address: '{metrics}'}
";

fn open(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

#[test]
fn idle_and_slow_connections_are_closed_while_a_normal_client_keeps_working() {
    let mut collector = Collector::start(&SHORT_TIMEOUTS.replace("MAX", "1000"));
    let mut idle: Vec<TcpStream> = (0..500).map(|_| open(&collector.http)).collect();
    let mut grpc_idle: Vec<TcpStream> = (0..50).map(|_| open(&collector.grpc)).collect();
    // Slowloris: headers that never end.
    let mut slow_headers: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = open(&collector.http);
            s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    // Slow bodies: a promised body that never comes.
    let mut slow_bodies: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = open(&collector.http);
            s.write_all(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n0123456789",
            )
            .unwrap();
            s
        })
        .collect();
    // Meanwhile a normal client is served, and so is the health check.
    for request in 0..20 {
        assert_eq!(
            post_traces(&collector, &otlp::traces(request, 2)).status,
            200
        );
        assert_eq!(
            http("GET", &collector.health, "/readyz", &[], b"")
                .unwrap()
                .status,
            200
        );
    }
    for (kind, streams) in [
        ("idle HTTP", &mut idle),
        ("idle gRPC", &mut grpc_idle),
        ("slow headers", &mut slow_headers),
        ("slow bodies", &mut slow_bodies),
    ] {
        for (i, stream) in streams.iter_mut().enumerate() {
            assert!(
                closed_by_peer(stream),
                "{kind} connection {i} is still open after 15s"
            );
        }
    }
    let mut answer = String::new();
    let mut slow = open(&collector.http);
    slow.write_all(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 10\r\n\r\n01",
    )
    .unwrap();
    let _ = slow.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a slow body is answered 408: {answer}"
    );
    assert_eq!(collector.stop().code(), Some(0));
}

#[test]
fn past_max_connections_new_clients_are_closed_at_once_and_health_stays_up() {
    let mut collector = Collector::start(&SHORT_TIMEOUTS.replace("MAX", "100"));
    let held: Vec<TcpStream> = (0..100).map(|_| open(&collector.http)).collect();
    // Let the collector accept the hundred before the next ones arrive.
    assert!(eventually(Duration::from_secs(5), || {
        let mut probe = open(&collector.http);
        probe
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        closed_by_peer(&mut probe)
    }));
    let mut extra: Vec<TcpStream> = (0..50).map(|_| open(&collector.http)).collect();
    for stream in &mut extra {
        stream
            .set_read_timeout(Some(Duration::from_millis(900)))
            .unwrap();
        assert!(
            closed_by_peer(stream),
            "a connection past the limit is closed at once"
        );
    }
    assert_eq!(
        http("GET", &collector.health, "/readyz", &[], b"")
            .unwrap()
            .status,
        200
    );
    // The idle hundred are closed after the idle timeout, and clients are served again.
    drop(held);
    assert!(eventually(Duration::from_secs(10), || {
        http(
            "POST",
            &collector.http,
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &otlp::traces(1, 1),
        )
        .is_ok_and(|r| r.status == 200)
    }));
    assert_eq!(collector.stop().code(), Some(0));
}

fn validate(text: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(collector_binary())
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "FILE"),
    )
}

#[test]
fn hostile_config_files_are_errors_with_a_place_not_crashes() {
    // 8,000 levels of `- `: was a stack overflow (killed by a signal, no exit code).
    let nested: String = (0..8000)
        .map(|depth| format!("{}- \n", "  ".repeat(depth)))
        .collect();
    let (code, stderr) = validate(nested.as_bytes());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("FILE:65:"), "{stderr}");
    assert!(stderr.contains("nested deeper than 64 levels"), "{stderr}");
    // An alias bomb under 1 KB: was an out-of-memory abort.
    let mut bomb = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        bomb.push_str(&format!(
            "{}: &{} [{}]\n",
            pair[1],
            pair[1],
            vec![format!("*{}", pair[0]); 9].join(",")
        ));
    }
    let (code, stderr) = validate(bomb.as_bytes());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("alias bomb"), "{stderr}");
    // Empty, binary and Latin-1 files: a message a person understands, at a place that exists.
    let (code, stderr) = validate(b"");
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("FILE: the config is empty"), "{stderr}");
    let (code, stderr) = validate(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0xff, 0xfe]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("FILE:1:9: the file is not UTF-8 text (byte 0xff)"),
        "{stderr}"
    );
    assert!(stderr.contains("looks binary"), "{stderr}");
    let (code, stderr) = validate(b"receivers:\n  otlp: # caf\xe9\n");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("FILE:2:14: the file is not UTF-8 text (byte 0xe9)"),
        "{stderr}"
    );
    // A missing file names the file and the reason, without a made-up `:0:0`.
    let output = Command::new(collector_binary())
        .args(["validate", "--config", "/nonexistent/vigil.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr.trim(),
        "cannot read /nonexistent/vigil.yaml: No such file or directory"
    );
}

/// Answers every request with `status` and an OTLP-style error body.
fn answering(status: u16) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = vec![0u8; 1 << 16];
            let mut seen = Vec::new();
            // Read the headers and the body the Content-Length announces.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let body = "malformed request";
            let _ = write!(
                stream,
                "HTTP/1.1 {status} Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (address, server)
}

#[test]
fn any_loss_gives_exit_status_3_and_metrics_stay_up_while_draining() {
    let (rejecting, _server) = answering(400);
    let (dead_port, _dead) = vigil_e2e::reserve_port();
    let config = format!(
        "
receivers:
  otlp:
    protocols:
      http: {{endpoint: '{{http}}'}}
exporters:
  otlphttp:
    endpoint: http://{rejecting}
    compression: none
    retry_on_failure: {{initial_interval: 10ms}}
  otlp/stuck:
    endpoint: 127.0.0.1:{dead_port}
    tls: {{insecure: true}}
    timeout: 200ms
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 0s}}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  shutdown_timeout: 3s
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlphttp, otlp/stuck]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
"
    );
    let mut collector = Collector::start(&config);
    for request in 1..=3 {
        assert_eq!(
            post_traces(&collector, &otlp::traces(request, 2)).status,
            200
        );
    }
    let undecodable = "reason=\"undecodable\"";
    assert!(eventually(Duration::from_secs(10), || {
        collector.metric("vigil_exporter_dropped_items_total", &[undecodable]) == 6.0
    }));
    collector.terminate();
    // While the stuck exporter drains, the collector says it is not ready, and its metrics still answer.
    assert!(eventually(Duration::from_secs(2), || {
        http("GET", &collector.health, "/readyz", &[], b"").is_ok_and(|r| r.status == 503)
    }));
    let during = http("GET", &collector.metrics_address, "/metrics", &[], b"").unwrap();
    assert_eq!(during.status, 200);
    assert!(during.text().contains(undecodable));
    let status = collector.stop();
    assert_eq!(status.code(), Some(3), "{}", collector.log());
    let log = collector.log();
    assert!(
        log.contains("undelivered=12"),
        "6 dropped as undecodable, 6 at the deadline:\n{log}"
    );
    assert!(
        log.contains("reason=\"undecodable\"} 6") || log.contains("reason=\\\"undecodable\\\"} 6"),
        "the final line names the reason:\n{log}"
    );
}
