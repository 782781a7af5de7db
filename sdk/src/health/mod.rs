//! Health checks: is the database reachable, is the MLflow tracking server up, is there disk space, is the
//! GPU there, can telemetry reach the collector — plus checks of your own.
//!
//! Each check has a timeout and a criticality. [`HealthChecker::overall_health`] runs them all concurrently:
//! a failing critical check makes the service unhealthy, a failing non-critical one degraded. The result is
//! served for orchestrators ([`HealthChecker::serve`]: `/health`, `/health/live`, `/health/ready`, JSON) and
//! exported as metrics (`health.status{check}` 1 or 0, `health.overall` 1 healthy / 0.5 degraded / 0
//! unhealthy), so alert rules can fire on them.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::time::Duration;
//! use vigil::health::HealthChecker;
//!
//! let checker = HealthChecker::new()
//!     .tcp("database", "127.0.0.1:5432", true)
//!     .mlflow("http://127.0.0.1:5000", false)
//!     .disk("data_disk", "/", 10.0, true)
//!     .custom("model_loaded", true, || async { Ok("model v3".to_string()) })
//!     .timeout(Duration::from_secs(2));
//! let report = checker.overall_health().await;
//! println!("{}", report.to_json());
//! let _server = checker.serve("127.0.0.1:8080").await?;
//! # Ok(()) }
//! ```

mod checks;
mod server;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use server::HealthServer;

/// A check's outcome: `Ok(message)` or `Err(what is wrong)`.
pub type CheckOutcome = Result<String, String>;

/// A boxed check future.
pub type CheckFuture = Pin<Box<dyn Future<Output = CheckOutcome> + Send>>;

/// Health of one check or of the whole service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Everything works.
    Healthy,
    /// A non-critical check fails: the service works with less.
    Degraded,
    /// A critical check fails.
    Unhealthy,
}

impl Status {
    /// `healthy`, `degraded` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Healthy, or the status its failure causes (degraded or unhealthy).
    pub status: Status,
    /// Whether a failure makes the service unhealthy.
    pub critical: bool,
    /// How long it took.
    pub latency: Duration,
    /// What it found, or what is wrong.
    pub message: String,
}

/// All checks' results and the overall status.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    /// The worst status of any check.
    pub status: Status,
    /// Each check, in the order they were added.
    pub checks: Vec<CheckResult>,
}

fn escape(text: &str) -> String {
    let mut out = Vec::new();
    crate::log::json::escape_into(text, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

impl HealthReport {
    /// `{"status":"degraded","checks":[{"name":…,"status":…,"critical":…,"latency_ms":…,"message":…}]}`.
    pub fn to_json(&self) -> String {
        let checks: Vec<String> = self
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{{\"name\":\"{}\",\"status\":\"{}\",\"critical\":{},\"latency_ms\":{:.3},\"message\":\"{}\"}}",
                    escape(&c.name),
                    c.status.as_str(),
                    c.critical,
                    c.latency.as_secs_f64() * 1000.0,
                    escape(&c.message)
                )
            })
            .collect();
        format!(
            "{{\"status\":\"{}\",\"checks\":[{}]}}",
            self.status.as_str(),
            checks.join(",")
        )
    }
}

type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

#[derive(Clone)]
struct Check {
    name: String,
    critical: bool,
    timeout: Option<Duration>,
    run: CheckFn,
}

/// The set of checks of a service; cheap to clone.
#[derive(Clone)]
pub struct HealthChecker {
    checks: Vec<Check>,
    timeout: Duration,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field(
                "checks",
                &self.checks.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for HealthChecker {
    fn default() -> Self {
        HealthChecker::new()
    }
}

impl HealthChecker {
    /// No checks yet; each check may take 5 s by default.
    pub fn new() -> Self {
        HealthChecker {
            checks: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The time each check may take (unless it has its own); a check that takes longer fails.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gives the last added check its own timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        if let Some(last) = self.checks.last_mut() {
            last.timeout = Some(timeout);
        }
        self
    }

    /// Adds a check of your own: an async closure returning `Ok(message)` or `Err(problem)`.
    pub fn custom<F, Fut>(mut self, name: &str, critical: bool, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckOutcome> + Send + 'static,
    {
        self.checks.push(Check {
            name: name.to_string(),
            critical,
            timeout: None,
            run: Arc::new(move || Box::pin(check())),
        });
        self
    }

    /// A TCP connection to `address` (`host:port`) can be opened (a database, a queue, any server).
    pub fn tcp(self, name: &str, address: &str, critical: bool) -> Self {
        let address = address.to_string();
        self.custom(name, critical, move || checks::tcp(address.clone()))
    }

    /// PostgreSQL at `connection` (`host=… port=… user=… dbname=…`, or a `postgresql://` URL) answers
    /// `SELECT 1` (cargo feature `postgres`).
    #[cfg(feature = "postgres")]
    pub fn postgres(self, name: &str, connection: &str, critical: bool) -> Self {
        let connection = connection.to_string();
        self.custom(name, critical, move || checks::postgres(connection.clone()))
    }

    /// `GET url` (plain `http://`) answers with a 2xx status.
    pub fn http(self, name: &str, url: &str, critical: bool) -> Self {
        let url = url.to_string();
        self.custom(name, critical, move || checks::http_get(url.clone()))
    }

    /// The MLflow tracking server at `base_url` answers `GET /health`.
    pub fn mlflow(self, base_url: &str, critical: bool) -> Self {
        let url = format!("{}/health", base_url.trim_end_matches('/'));
        self.http("mlflow", &url, critical)
    }

    /// The file system holding `path` has at least `min_free_percent` % free (cargo feature `system`).
    #[cfg(feature = "system")]
    pub fn disk(self, name: &str, path: &str, min_free_percent: f64, critical: bool) -> Self {
        let path = std::path::PathBuf::from(path);
        self.custom(name, critical, move || {
            let path = path.clone();
            async move { checks::disk(&path, min_free_percent) }
        })
    }

    /// An NVIDIA GPU is visible through NVML (cargo feature `system`).
    #[cfg(feature = "system")]
    pub fn gpu(self, critical: bool) -> Self {
        self.custom("gpu", critical, || async { checks::gpu() })
    }

    /// The OTLP collector endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, default `localhost:4317`) accepts
    /// connections.
    pub fn collector(self, critical: bool) -> Self {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|_| "http://localhost:4317".into());
        let address = endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        self.tcp("otlp_collector", &address, critical)
    }

    /// Runs every check concurrently (each within its timeout) and aggregates the results; records the
    /// `health.status`, `health.overall` and `health.check.duration` metrics.
    pub async fn overall_health(&self) -> HealthReport {
        let mut tasks = Vec::new();
        for check in &self.checks {
            let timeout = check.timeout.unwrap_or(self.timeout);
            let future = (check.run)();
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let outcome = match tokio::time::timeout(timeout, future).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(format!("timed out after {timeout:?}")),
                };
                (outcome, started.elapsed())
            }));
        }
        let mut results = Vec::new();
        for (check, task) in self.checks.iter().zip(tasks) {
            let (outcome, latency) = match task.await {
                Ok(done) => done,
                Err(e) => (Err(format!("the check panicked: {e}")), Duration::ZERO),
            };
            let (status, message) = match outcome {
                Ok(message) => (Status::Healthy, message),
                Err(problem) if check.critical => (Status::Unhealthy, problem),
                Err(problem) => (Status::Degraded, problem),
            };
            results.push(CheckResult {
                name: check.name.clone(),
                status,
                critical: check.critical,
                latency,
                message,
            });
        }
        let status = results
            .iter()
            .map(|r| r.status)
            .max()
            .unwrap_or(Status::Healthy);
        let report = HealthReport {
            status,
            checks: results,
        };
        record(&report);
        report
    }

    /// Serves `/health` (200 healthy or degraded, 503 unhealthy), `/health/live` (200 while the process
    /// answers) and `/health/ready` (200 unless unhealthy), each with a JSON body, on `address`.
    pub async fn serve(&self, address: &str) -> std::io::Result<HealthServer> {
        HealthServer::start(self.clone(), address).await
    }
}

fn record(report: &HealthReport) {
    for check in &report.checks {
        let critical = if check.critical { "true" } else { "false" };
        let attributes = [("check", check.name.as_str()), ("critical", critical)];
        crate::metrics::gauge(
            "health.status",
            f64::from(u8::from(check.status == Status::Healthy)),
            &attributes,
        );
        crate::metrics::record_seconds("health.check.duration", check.latency, &attributes);
    }
    let overall = match report.status {
        Status::Healthy => 1.0,
        Status::Degraded => 0.5,
        Status::Unhealthy => 0.0,
    };
    crate::metrics::gauge("health.overall", overall, &[]);
}
