//! Backends for the alerting tests: an HTTP sink that records what it receives (a webhook receiver, a Slack
//! stand-in) and a real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{distinct_ports, eventually, http, port_lock};

/// One POST as received.
#[derive(Clone, Debug)]
pub struct Posted {
    /// Request path.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: HashMap<String, String>,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: serde_json::Value,
}

#[derive(Default)]
struct SinkState {
    posted: Vec<Posted>,
    script: VecDeque<u16>,
}

/// Records every POST and answers 200, or the scripted statuses first.
pub struct HttpSink {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<Mutex<SinkState>>,
}

impl HttpSink {
    /// Starts the sink.
    pub fn start() -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(SinkState::default()));
        let shared = state.clone();
        crate::http_server::serve(
            listener,
            Arc::new(move |request_line, headers, body| {
                let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                let status = state.script.pop_front().unwrap_or(200);
                state.posted.push(Posted {
                    path: request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("")
                        .to_string(),
                    headers: headers.clone(),
                    json: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
                });
                (
                    status,
                    if status == 200 {
                        String::new()
                    } else {
                        "scripted".into()
                    },
                )
            }),
        );
        HttpSink { url, state }
    }

    /// The next requests are answered with `statuses`, in order.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.lock().script.extend(statuses);
    }

    /// Everything received so far.
    pub fn posted(&self) -> Vec<Posted> {
        self.lock().posted.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A real Alertmanager whose one receiver is a webhook to `receiver_url`, grouping by `alertname` with no
/// wait, so what it receives is passed on at once.
pub struct Alertmanager {
    child: Child,
    /// `http://host:port`.
    pub url: String,
    address: String,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts it and waits for `/-/ready`.
    pub fn start(receiver_url: &str) -> Alertmanager {
        Alertmanager::start_with_config(&format!(
            "route:\n  receiver: sink\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: sink\n    webhook_configs:\n      - url: '{receiver_url}'\n        send_resolved: true\n"
        ))
    }

    /// Starts it with `config` (a whole `alertmanager.yml`) and waits for `/-/ready`.
    pub fn start_with_config(config: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).expect("write alertmanager.yml");
        let (child, address) = {
            let _ports = port_lock();
            let port = distinct_ports(1, 0)[0];
            let address = format!("127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log file");
            let child = Command::new("prometheus-alertmanager")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={address}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start prometheus-alertmanager (scripts/test installs it): {e}")
                });
            (child, address)
        };
        let mut alertmanager = Alertmanager {
            child,
            url: format!("http://{address}"),
            address,
            dir,
        };
        let ready = eventually(Duration::from_secs(30), || {
            if let Ok(Some(status)) = alertmanager.child.try_wait() {
                panic!("alertmanager exited ({status}):\n{}", alertmanager.log());
            }
            http("GET", &alertmanager.address, "/-/ready", &[], b"").is_ok_and(|r| r.status == 200)
        });
        assert!(ready, "alertmanager not ready:\n{}", alertmanager.log());
        alertmanager
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    /// `GET /api/v2/alerts` (active, silenced and inhibited ones).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        http("GET", &self.address, "/api/v2/alerts", &[], b"")
            .ok()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SMTP server from the test venv (`aiosmtpd`, `tests/python/smtp_sink.py`) on a free loopback port.
pub struct SmtpSink {
    child: Child,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts it; with `tls` (`TestCerts`), STARTTLS is required and `user`/`password` must authenticate.
    pub fn start(tls: Option<(&crate::TestCerts, &str, &str)>) -> SmtpSink {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("temp dir");
        let _ports = port_lock();
        let port = distinct_ports(1, 0)[0];
        let mut command = Command::new(crate::python());
        command
            .arg(crate::workspace_root().join("tests/python/smtp_sink.py"))
            .arg(port.to_string())
            .arg(dir.path().join("mail.jsonl"));
        if let Some((certs, user, password)) = tls {
            command
                .arg(&certs.cert)
                .arg(&certs.key)
                .arg(user)
                .arg(password);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start smtp_sink.py (scripts/test installs aiosmtpd in the test venv)");
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        assert_eq!(line.trim(), "ready", "smtp_sink.py did not start");
        SmtpSink { child, port, dir }
    }

    /// Every message received: `{"from", "to", "data", "tls", "user"}`.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("mail.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
