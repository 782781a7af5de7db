//! The health endpoint for orchestrators: a small HTTP/1.1 server on its own task.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{HealthChecker, Status};

/// A running health endpoint; stops when dropped.
#[derive(Debug)]
pub struct HealthServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    pub(super) async fn start(checker: HealthChecker, address: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors and the like: back off instead of spinning a core.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let checker = checker.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, &checker).await;
                });
            }
        });
        Ok(HealthServer { address, task })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, checker: &HealthChecker) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (code, body) = match (method, path) {
        ("GET" | "HEAD", "/health/live") => (200, "{\"status\":\"alive\"}".to_string()),
        ("GET" | "HEAD", "/health" | "/health/ready") => {
            let report = checker.overall_health().await;
            let code = if report.status == Status::Unhealthy {
                503
            } else {
                200
            };
            (code, report.to_json())
        }
        ("GET" | "HEAD", _) => (
            404,
            "{\"error\":\"not found; use /health, /health/live or /health/ready\"}".into(),
        ),
        _ => (405, "{\"error\":\"only GET and HEAD\"}".into()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let body = if method == "HEAD" { "" } else { body.as_str() };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
