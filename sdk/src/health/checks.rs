//! The built-in checks.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::CheckOutcome;

/// A TCP connection to `address` opens.
pub(super) async fn tcp(address: String) -> CheckOutcome {
    match tokio::net::TcpStream::connect(&address).await {
        Ok(_) => Ok(format!("connected to {address}")),
        Err(e) => Err(format!("cannot connect to {address}: {e}")),
    }
}

/// `GET url` over plain HTTP/1.1 answers 2xx.
pub(super) async fn http_get(url: String) -> CheckOutcome {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "`{url}`: only http:// URLs are checked (use a tcp check for TLS endpoints)"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: vigil-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{url}: cannot send the request: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("{url}: cannot read the response: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status_line = line.lines().next().unwrap_or_default().to_string();
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP response: {status_line:?}"))?;
    if (200..300).contains(&code) {
        Ok(format!("{url} answered {code}"))
    } else {
        Err(format!("{url} answered {code}"))
    }
}

/// The file system holding `path` has at least `min_free_percent` % free.
#[cfg(feature = "system")]
pub(super) fn disk(path: &std::path::Path, min_free_percent: f64) -> CheckOutcome {
    let path = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let disks = sysinfo::Disks::new_with_refreshed_list();
    let disk = disks
        .list()
        .iter()
        .filter(|d| path.starts_with(d.mount_point()) && d.total_space() > 0)
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .ok_or_else(|| format!("{}: no mounted file system holds it", path.display()))?;
    let free = disk.available_space() as f64 / disk.total_space() as f64 * 100.0;
    let mount = disk.mount_point().display();
    if free >= min_free_percent {
        Ok(format!("{free:.1}% free on {mount}"))
    } else {
        Err(format!(
            "only {free:.1}% free on {mount} (below {min_free_percent}%)"
        ))
    }
}

/// An NVIDIA GPU is visible through NVML.
#[cfg(feature = "system")]
pub(super) fn gpu() -> CheckOutcome {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("no NVIDIA driver: {e}"))?;
    match nvml.device_count() {
        Ok(0) => Err("NVML sees no GPU".into()),
        Ok(n) => Ok(format!("{n} GPU(s)")),
        Err(e) => Err(format!("NVML cannot count GPUs: {e}")),
    }
}

/// PostgreSQL answers `SELECT 1`.
#[cfg(feature = "postgres")]
pub(super) async fn postgres(connection: String) -> CheckOutcome {
    let (client, driver) = tokio_postgres::connect(&connection, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {}", describe(&e)))?;
    let driver = tokio::spawn(driver);
    let outcome = client
        .simple_query("SELECT 1")
        .await
        .map(|_| "SELECT 1 answered".to_string())
        .map_err(|e| format!("SELECT 1 failed: {}", describe(&e)));
    drop(client);
    let _ = driver.await;
    outcome
}

/// What the server said (`database "x" does not exist`), or the error and its causes.
#[cfg(feature = "postgres")]
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db.message().to_string();
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
