//! Support for Vigil's end-to-end tests: start the real `vigil-collector` binary on free loopback ports, wait
//! until it is ready, talk to it over HTTP and gRPC, read its self-metrics, and stop it with a signal.
//!
//! ```no_run
//! let collector = vigil_e2e::Collector::start("receivers: …");
//! let metrics = collector.metrics();
//! ```
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Serialises choosing ports and binding them within this test process: a port chosen for a collector is free
/// until the collector binds it, and a test running in parallel must not take it meanwhile.
pub fn port_lock() -> std::sync::MutexGuard<'static, ()> {
    static PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ports handed out come from below the kernel's ephemeral range (32768 and up on Linux): a port the kernel
/// gives to outgoing connections could otherwise be taken, between release and bind, by any client socket.
const PORTS_FROM: u16 = 20_000;
const PORTS_TO: u16 = 32_000;

fn bind_any() -> (u16, TcpListener) {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Each process starts at its own place in the range, then moves on, so ports do not repeat.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORTS_TO - PORTS_FROM);
    let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let offset = (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = PORTS_FROM + offset as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return (port, listener);
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("no free loopback port");
    let port = listener.local_addr().expect("bound address").port();
    (port, listener)
}

/// `n` loopback ports that differ from each other and from `except`: held open together while chosen, since
/// ports chosen one after another can repeat once released. Call with [`port_lock`] held.
fn distinct_ports(n: usize, except: u16) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let (port, listener) = bind_any();
        if port != except {
            held.push((port, listener));
        }
    }
    held.into_iter().map(|(port, _)| port).collect()
}

/// A loopback port held open (so no other test gets it) until the returned listener is dropped.
pub fn reserve_port() -> (u16, TcpListener) {
    let _ports = port_lock();
    bind_any()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `vigil-collector` binary: `$VIGIL_COLLECTOR_BIN`, else the workspace's debug build.
pub fn collector_binary() -> PathBuf {
    if let Ok(path) = std::env::var("VIGIL_COLLECTOR_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let path = target.join("debug").join("vigil-collector");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p vigil-collector`; scripts/test does this)",
        path.display()
    );
    path
}

/// A binary of the workspace's debug build (built by `cargo build --workspace`, which scripts/test runs).
pub fn workspace_binary(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

/// The first `yaml` code block after `heading` in the README.
pub fn readme_yaml_after(heading: &str) -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has no `{heading}`"));
    section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("no yaml block after `{heading}`"))
        .to_string()
}

/// Validates `config` with `vigil-collector validate`: whether it is valid, and what it said on stderr.
pub fn validate_config(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("collector.yaml");
    std::fs::write(&file, config).expect("write config");
    let output = Command::new(collector_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .expect("run vigil-collector validate");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A test certificate authority and a server certificate for 127.0.0.1 signed by it.
#[derive(Debug)]
pub struct TestCerts {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server's certificate (not a CA, as rustls requires of end entities).
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Generates [`TestCerts`] in `dir` with the `openssl` command.
pub fn test_certs(dir: &Path) -> TestCerts {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed (scripts/test installs it)");
        assert!(status.success(), "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-days",
            "1",
            "-subj",
            "/CN=vigil-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "cert.pem",
        "-extfile",
        "server.ext",
    ]);
    TestCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// The Python interpreter of the test venv: `$VIGIL_PYTHON`, else `~/.cache/vigil/venv/bin/python`.
pub fn python() -> PathBuf {
    if let Ok(path) = std::env::var("VIGIL_PYTHON") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = PathBuf::from(home).join(".cache/vigil/venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which creates the test venv",
        path.display()
    );
    path
}

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole response.
pub fn http(
    method: &str,
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // The server may answer (413) before reading everything; a failed write is then not an error.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "no HTTP response: {:?}",
                String::from_utf8_lossy(&raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// A running collector process on free ports.
pub struct Collector {
    child: Option<Child>,
    /// OTLP/gRPC `host:port`.
    pub grpc: String,
    /// OTLP/HTTP `host:port`.
    pub http: String,
    /// Self-metrics `host:port`.
    pub metrics_address: String,
    /// Health check `host:port`.
    pub health: String,
    /// The `prometheus` exporter's `host:port` (`{prometheus}` in templates).
    pub prometheus: String,
    /// Scratch directory owned by this collector (file exporter output, config).
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

/// A collector that receives OTLP over gRPC and HTTP and writes every signal with the `file` exporter to
/// `{dir}/out` (read it back with [`file_exporter_lines`]).
pub const OTLP_TO_FILE: &str = "
receivers:
  otlp:
    protocols:
      grpc: {endpoint: '{grpc}'}
      http: {endpoint: '{http}'}
exporters:
  file: {path: '{dir}/out'}
extensions:
  health_check: {endpoint: '{health}'}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], exporters: [file]}
    metrics: {receivers: [otlp], exporters: [file]}
    logs: {receivers: [otlp], exporters: [file]}
  telemetry:
    metrics: {address: '{metrics}'}
";

/// Ports and paths substituted into a config template: `{grpc}`, `{http}`, `{metrics}`, `{health}`, `{dir}`
/// (and `{prometheus}`, by [`Collector`]).
pub fn render(
    template: &str,
    grpc: &str,
    http: &str,
    metrics: &str,
    health: &str,
    dir: &Path,
) -> String {
    template
        .replace("{grpc}", grpc)
        .replace("{http}", http)
        .replace("{metrics}", metrics)
        .replace("{health}", health)
        .replace("{dir}", &dir.display().to_string())
}

impl Collector {
    /// Starts the collector with a config template (see [`render`]) and waits until `/readyz` answers 200.
    /// An empty template starts the embedded default config on free ports.
    pub fn start(template: &str) -> Collector {
        Collector::start_with_env(template, &[])
    }

    /// Like [`Collector::start`], with extra environment variables.
    pub fn start_with_env(template: &str, env: &[(&str, &str)]) -> Collector {
        let _ports = port_lock();
        Collector::start_locked(template, env, None)
    }

    /// Like [`Collector::start`], with extra environment variables and a chosen OTLP/gRPC port.
    pub fn start_on(template: &str, env: &[(&str, &str)], grpc_port: u16) -> Collector {
        let _ports = port_lock();
        Collector::start_locked(template, env, Some(grpc_port))
    }

    /// Starts the collector, on `grpc_port` if given; the caller holds [`port_lock`] until it is ready (its
    /// ports are bound).
    ///
    /// A port found free here can still be taken by another process before the collector binds it (the lock
    /// only orders this test process). The collector then exits naming the port, and start-up is tried again
    /// on fresh ports, at most three times; any other start-up failure (or a taken `grpc_port` that the caller
    /// chose) fails the test at once.
    fn start_locked(template: &str, env: &[(&str, &str)], grpc_port: Option<u16>) -> Collector {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let grpc = grpc_port.unwrap_or_else(|| distinct_ports(1, 0)[0]);
            let mut collector = Collector::spawn(template, env, grpc);
            match collector.wait_ready() {
                Ok(()) => return collector,
                Err(failure)
                    if attempt < ATTEMPTS
                        && failure.contains("Address already in use")
                        && !grpc_port
                            .is_some_and(|port| failure.contains(&format!(":{port}:"))) =>
                {
                    eprintln!(
                        "collector start-up attempt {attempt} lost a port, retrying:\n{failure}"
                    );
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Spawns the collector on fresh ports (and `grpc_port`), without waiting for it.
    fn spawn(template: &str, env: &[(&str, &str)], grpc_port: u16) -> Collector {
        let dir = tempfile::tempdir().expect("temp dir");
        let address = |port: u16| format!("127.0.0.1:{port}");
        let ports = distinct_ports(4, grpc_port);
        let (grpc, http, metrics, health, prometheus) = (
            address(grpc_port),
            address(ports[0]),
            address(ports[1]),
            address(ports[2]),
            address(ports[3]),
        );
        let log = dir.path().join("collector.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(collector_binary());
        if template.is_empty() {
            // The embedded default config, its listen addresses moved through the environment it reads.
            command
                .env("VIGIL_OTLP_GRPC_ENDPOINT", &grpc)
                .env("VIGIL_OTLP_HTTP_ENDPOINT", &http)
                .env("VIGIL_HEALTH_ENDPOINT", &health)
                .env("VIGIL_METRICS_ADDRESS", &metrics)
                .env("VIGIL_PROMETHEUS_ENDPOINT", &prometheus);
        } else {
            let config = render(template, &grpc, &http, &metrics, &health, dir.path())
                .replace("{prometheus}", &prometheus);
            let config_path = dir.path().join("collector.yaml");
            std::fs::write(&config_path, config).expect("write config");
            command.arg("--config").arg(&config_path);
        }
        command
            .stdout(Stdio::null())
            .stderr(log_file)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("start vigil-collector");
        Collector {
            child: Some(child),
            grpc,
            http,
            metrics_address: metrics,
            health,
            prometheus,
            dir,
            log,
        }
    }

    /// Waits until `/readyz` answers 200; the failure, with the collector's log, if it exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = http("GET", &self.health, "/readyz", &[], b"")
                && response.status == 200
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "collector exited during start-up ({status}):\n{}",
                    self.log()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "collector not ready after 20s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The collector's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its self-metrics text.
    pub fn metrics(&self) -> String {
        http("GET", &self.metrics_address, "/metrics", &[], b"")
            .expect("scrape self-metrics")
            .text()
    }

    /// Sum of the samples of `name` whose label text contains every one of `labels` (`key="value"`).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("collector already stopped").id()
    }

    /// Sends SIGTERM without waiting: the collector starts its shutdown ([`Collector::stop`] waits for it).
    pub fn terminate(&self) {
        let child = self.child.as_ref().expect("collector already stopped");
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc_kill(child.id() as i32, 15);
        }
    }

    /// `kill -9`: the process gets no chance to flush or drain. Waits until it is gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("collector already stopped");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("collector already stopped");
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc_kill(child.id() as i32, 15);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "collector did not stop within 60s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sum of the samples of `name` in Prometheus text whose labels contain every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|l| label_text.contains(l)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Reads every OTLP/JSON line the `file` exporter wrote for `signal` under `dir`.
pub fn file_exporter_lines(dir: &Path, signal: &str) -> Vec<serde_json::Value> {
    let path = dir.join(format!("{signal}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: invalid JSON line: {e}", path.display()))
        })
        .collect()
}

/// Every span in OTLP/JSON export requests, flattened.
pub fn spans(requests: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for request in requests {
        for resource in request["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    out.push(span.clone());
                }
            }
        }
    }
    out
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub mod alerting;
pub mod http_server;
pub mod loki;

/// Builds OTLP requests whose span ids encode `(request, index)`, so tests can check every span arrived once.
pub mod otlp {
    use prost::Message;
    use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use vigil_proto::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
    use vigil_proto::otlp::resource::v1::Resource;
    use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// The span id of span `index` of request `request`, as lower-case hex.
    pub fn span_id(request: u32, index: u32) -> String {
        format!("{request:08x}{:08x}", index + 1)
    }

    /// An encoded `ExportTraceServiceRequest` with `spans` spans of 3 attributes each.
    pub fn traces(request: u32, spans: u32) -> Vec<u8> {
        let attribute = |key: &str, value: String| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value)),
            }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![attribute("service.name", "e2e".into())],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|i| Span {
                            // Never all zero (OTLP rejects such ids): the span id counts from 1.
                            trace_id: [request.to_be_bytes(), [0xe2; 4], [0; 4], i.to_be_bytes()]
                                .concat(),
                            span_id: [request.to_be_bytes(), (i + 1).to_be_bytes()].concat(),
                            name: format!("op-{i}"),
                            kind: 2,
                            start_time_unix_nano: 1_700_000_000_000_000_000,
                            end_time_unix_nano: 1_700_000_000_100_000_000,
                            attributes: vec![
                                attribute("http.route", "/v1/predict".into()),
                                attribute("request.id", format!("req-{request}-{i}")),
                                attribute("user.tier", "gold".into()),
                            ],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }
}

/// One line of the PII corpus (`tests/data/pii_corpus.jsonl`): a log line or attribute value with planted
/// secrets, the fragments around them that must survive, and the attribute key it is sent under (if any).
#[derive(Clone, Debug)]
pub struct PiiCase {
    /// The text as an application would write it.
    pub text: String,
    /// Substrings that must not come out.
    pub secrets: Vec<String>,
    /// Substrings that must come out unchanged.
    pub keep: Vec<String>,
    /// The attribute key the text is the value of, for key-driven cases.
    pub key: Option<String>,
    /// Whether it needs an opt-in detector (phone numbers, IBANs).
    pub opt_in: bool,
}

impl PiiCase {
    /// The problems with `output` (what a sink produced for this case): leaked secrets, lost fragments, and
    /// any change to a case with no secret. Each line starts with `sink`.
    pub fn problems(&self, sink: &str, output: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for secret in &self.secrets {
            if output.contains(secret.as_str()) {
                problems.push(format!("{sink}: LEAK {secret:?} in {output:?}"));
            }
        }
        for keep in &self.keep {
            if !output.contains(keep.as_str()) {
                problems.push(format!(
                    "{sink}: LOST {keep:?}: {:?} → {output:?}",
                    self.text
                ));
            }
        }
        if self.secrets.is_empty() && output != self.text {
            problems.push(format!("{sink}: CHANGED {:?} → {output:?}", self.text));
        }
        problems
    }
}

/// The PII corpus, every line.
pub fn pii_corpus() -> Vec<PiiCase> {
    let path = workspace_root().join("tests/data/pii_corpus.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let strings = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    text.lines()
        .enumerate()
        .map(|(number, line)| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("pii_corpus.jsonl:{}: {e}", number + 1));
            PiiCase {
                text: value["text"].as_str().unwrap_or_default().to_string(),
                secrets: strings(&value["secrets"]),
                keep: strings(&value["keep"]),
                key: value["key"].as_str().map(String::from),
                opt_in: value["opt_in"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// A private PostgreSQL server for one test: a fresh cluster in a temporary directory, on a free loopback port,
/// trusting local connections; stopped when dropped. Uses Debian's `postgresql` binaries (installed by
/// `scripts/test`); as root, the server runs as the `postgres` user, since PostgreSQL refuses to run as root.
pub struct Postgres {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_root: bool,
}

impl Postgres {
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Starts the server; panics with what to install when PostgreSQL is missing.
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                    .filter(|p| p.join("initdb").exists())
                    .max()
            })
            .expect("PostgreSQL is not installed: run scripts/test, which installs Debian's `postgresql`");
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = tempfile::tempdir().expect("temp dir");
        // The server user must be able to create its data directory and socket here.
        let _ = Command::new("chmod").arg("0777").arg(dir.path()).status();
        let (port, held) = reserve_port();
        drop(held);
        let mut server = Postgres {
            port,
            dir,
            bin,
            as_root,
        };
        let data = server.dir.path().join("data");
        let output = server
            .command("initdb")
            .args(["-A", "trust", "-U", "vigil", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            server.dir.path().display()
        );
        let output = server
            .command("pg_ctl")
            .args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(server.dir.path().join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start")
            .output()
            .expect("run pg_ctl");
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
        );
        server.port = port;
        server
    }

    /// A libpq connection string for user `vigil`, database `postgres`.
    pub fn connection(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=vigil dbname=postgres connect_timeout=5",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(&data)
            .arg("stop")
            .output();
    }
}

/// An MLflow tracking server (`mlflow server`, sqlite backend, one worker, artifacts served through its proxy
/// from a temporary directory) from the test venv, on a free loopback port; the whole process group is stopped
/// when dropped.
pub struct MlflowServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl MlflowServer {
    /// Starts the server and waits (up to 90 s) until `/health` answers.
    pub fn start() -> MlflowServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, held) = reserve_port();
        drop(held);
        let mut server = MlflowServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            child: None,
            dir,
        };
        server.restart();
        server
    }

    /// Starts the server again on the same port and database (after [`MlflowServer::stop`]).
    pub fn restart(&mut self) {
        use std::os::unix::process::CommandExt as _;
        self.stop();
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("log file");
        let child = Command::new(python())
            .args([
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--workers",
                "1",
            ])
            .args(["--port", &self.port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}/mlflow.db", dir.display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            // Both streams: the access log (a line per request) goes to stdout.
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start mlflow (scripts/test installs it in the test venv)");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        let mut exited = false;
        let ready = eventually(Duration::from_secs(90), || {
            // A server that exits at start (a broken install) fails the test at once, with its log.
            exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            exited || http("GET", &address, "/health", &[], b"").is_ok_and(|r| r.status == 200)
        });
        assert!(
            !exited,
            "mlflow server exited at start:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        assert!(
            ready,
            "mlflow server not ready after 90 s:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server (and its workers) now.
    pub fn stop(&mut self) {
        const SIGTERM: i32 = 15;
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(group) = i32::try_from(child.id()) else {
            return;
        };
        // The server's process group (its workers too); a group id of 0 or 1 would reach far more.
        if group > 1 {
            // SAFETY: kill(2) with a negative pid signals exactly that process group.
            unsafe {
                libc_kill(-group, SIGTERM);
            }
        }
        let _ = child.wait();
        // The workers may outlive the parent for a moment; wait until the port is free again.
        eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
    }

    /// Every run of experiment `name`, as MLflow's own Python client reports it (`tests/python/mlflow_inspect.py`).
    pub fn inspect(&self, experiment: &str) -> serde_json::Value {
        self.inspect_with(experiment, &[])
    }

    /// [`MlflowServer::inspect`] with extra arguments (`--latest-only`).
    pub fn inspect_with(&self, experiment: &str, args: &[&str]) -> serde_json::Value {
        let output = Command::new(python())
            .arg(workspace_root().join("tests/python/mlflow_inspect.py"))
            .arg(&self.url)
            .arg(experiment)
            .args(args)
            .output()
            .expect("run mlflow_inspect.py");
        assert!(
            output.status.success(),
            "mlflow_inspect.py failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("mlflow_inspect.py prints JSON")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real Prometheus server (Debian's `prometheus`, installed by `scripts/test`) on a free loopback port, with
/// its own TSDB in a temporary directory; stopped when dropped.
pub struct Prometheus {
    child: Child,
    /// Its `host:port`.
    pub address: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second (`honor_labels`, so the exporter's `job` and
    /// `instance` stand), with the remote-write receiver and exemplar storage enabled, and waits until
    /// `/-/ready` answers 200.
    pub fn start(targets: &[&str]) -> Prometheus {
        Prometheus::start_with_rules(targets, &[])
    }

    /// [`Prometheus::start`], also evaluating `rule_files` every second.
    pub fn start_with_rules(targets: &[&str], rule_files: &[&Path]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|f| format!("'{}'", f.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nscrape_configs:\n  - job_name: vigil\n    honor_labels: true\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", ")
        );
        Prometheus::start_with_config(&config)
    }

    /// Starts Prometheus with `config` (a whole `prometheus.yml`), the remote-write receiver and exemplar
    /// storage enabled, and waits until `/-/ready` answers 200.
    pub fn start_with_config(config: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let binary = std::env::var("VIGIL_PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
        let (child, address) = {
            let _ports = port_lock();
            let port = distinct_ports(1, 0)[0];
            let address = format!("127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={address}"))
                .arg("--web.enable-remote-write-receiver")
                .arg("--enable-feature=exemplar-storage")
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start `{binary}` (scripts/test installs it): {e}")
                });
            (child, address)
        };
        let mut prometheus = Prometheus {
            child,
            address,
            dir,
        };
        let ready = eventually(Duration::from_secs(30), || {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            http("GET", &prometheus.address, "/-/ready", &[], b"").is_ok_and(|r| r.status == 200)
        });
        assert!(
            ready,
            "prometheus not ready after 30s:\n{}",
            prometheus.log()
        );
        prometheus
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant PromQL query; returns each result's labels and value.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let Ok(response) = http("GET", &self.address, &path, &[], b"") else {
            return Vec::new();
        };
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            return Vec::new();
        };
        assert_eq!(body["status"], "success", "query `{promql}` failed: {body}");
        body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// Its active alerts (`/api/v1/alerts`): each one's labels and state (`pending`, `firing`).
    pub fn alerts(&self) -> Vec<(BTreeMap<String, String>, String)> {
        let Ok(response) = http("GET", &self.address, "/api/v1/alerts", &[], b"") else {
            return Vec::new();
        };
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            return Vec::new();
        };
        body["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let labels = a["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                (labels, a["state"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }

    /// The `trace_id` of every exemplar stored for the series `promql` selects (the last hour).
    pub fn exemplar_trace_ids(&self, promql: &str) -> Vec<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            percent_encode(promql),
            now.saturating_sub(3600),
            now + 60
        );
        let Ok(response) = http("GET", &self.address, &path, &[], b"") else {
            return Vec::new();
        };
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&response.body) else {
            return Vec::new();
        };
        body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits up to `timeout` for `promql` to return exactly one series with value `want`; returns its labels,
    /// or panics with what it last saw.
    pub fn wait_for(
        &self,
        promql: &str,
        want: f64,
        timeout: Duration,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut last = Vec::new();
        let found = eventually(timeout, || {
            last = self.query(promql);
            last.len() == 1 && last[0].1 == want
        });
        assert!(
            found,
            "`{promql}` should be one series with value {want}; Prometheus returned {last:?}\n{}",
            self.log()
        );
        last.remove(0).0
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` percent-encoded for a URL query value (every byte but unreserved characters).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
