//! Extension `health_check`: `GET /healthz` (the process serves requests) and `GET /readyz` (pipelines are
//! running, not shutting down, and no component reports a problem only a person can fix, such as an exporter
//! whose backend answers 401), answered with JSON: `{"status":"failing","problems":{"exporter/loki":"…"}}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::telemetry::Problems;

/// `extensions.health_check`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "127.0.0.1:13133".into(),
        }
    }
}

/// Whether the collector is ready to take data; shared with the service, which flips it.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the collector ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn json(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Binds and serves the health endpoints until shutdown.
pub async fn start(
    config: &HealthCheckConfig,
    readiness: Readiness,
    problems: Problems,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, crate::component::ComponentError> {
    let listener = crate::net::bind("extension health_check", &config.endpoint).await?;
    tracing::info!(endpoint = %config.endpoint, "health check listening");
    Ok(tokio::spawn(crate::net::serve(
        listener,
        None,
        move |request| {
            let ready = readiness.get();
            let problems = problems.list();
            async move {
                match request.uri().path() {
                    "/healthz" | "/" => json(StatusCode::OK, r#"{"status":"ok"}"#),
                    "/readyz" if ready && problems.is_empty() => {
                        json(StatusCode::OK, r#"{"status":"ready"}"#)
                    }
                    "/readyz" => json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &serde_json::json!({
                            "status": if ready { "failing" } else { "not ready" },
                            "problems": problems,
                        })
                        .to_string(),
                    ),
                    other => crate::net::text(
                        StatusCode::NOT_FOUND,
                        format!("unknown path `{other}`: use /healthz or /readyz"),
                    ),
                }
            }
        },
        shutdown,
        Duration::from_secs(1),
    )))
}

/// `GET path` on `endpoint` over HTTP/1.0 (the health server closes the connection after answering): the
/// status code and the body. Bounded by a 5 s timeout so a hung collector fails its health check.
pub fn probe(endpoint: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_secs(5);
    let address = endpoint.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the endpoint resolves to no address",
        )
    })?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "the answer is not HTTP")
        })?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::probe;

    /// A one-shot server answering `response`; returns its address and the request it will have read.
    fn answer(response: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let served = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // The whole request first: closing with unread bytes would reset the connection.
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
            }
            stream.write_all(response).unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (address, served)
    }

    #[test]
    fn probe_reads_the_status_and_body() {
        let (address, served) =
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"status\":\"ok\"}");
        assert_eq!(
            probe(&address, "/readyz").unwrap(),
            (200, "{\"status\":\"ok\"}".to_string())
        );
        let request = served.join().unwrap();
        assert!(
            request.starts_with(&format!("GET /readyz HTTP/1.0\r\nHost: {address}\r\n\r\n")),
            "{request}"
        );
    }

    #[test]
    fn probe_reads_a_long_body_whole() {
        static RESPONSE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let response = RESPONSE.get_or_init(|| {
            let mut r = b"HTTP/1.1 503 Service Unavailable\r\n\r\n".to_vec();
            r.extend(std::iter::repeat_n(b'x', 20_000));
            r
        });
        let (address, _served) = answer(response);
        assert_eq!(probe(&address, "/readyz").unwrap().1.len(), 20_000);
    }

    #[test]
    fn probe_reports_a_failing_answer_with_its_problems() {
        let (address, _served) = answer(
            b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"problems\":{\"exporter/loki\":\"401\"}}",
        );
        let (status, body) = probe(&address, "/healthz").unwrap();
        assert_eq!(status, 503);
        assert!(body.contains("exporter/loki"), "{body}");
    }

    #[test]
    fn probe_fails_on_what_is_not_http_and_on_nothing_listening() {
        let (address, _served) = answer(b"SSH-2.0-OpenSSH\r\n");
        assert_eq!(
            probe(&address, "/readyz").unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(probe(&closed.to_string(), "/readyz").is_err());
        assert!(probe("no-such-host.invalid:1", "/readyz").is_err());
    }
}
