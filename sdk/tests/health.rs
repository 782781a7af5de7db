//! Health checks against real things started by the test: TCP and HTTP servers, refused connections, slow
//! checks, a disk-space threshold, and the HTTP endpoint an orchestrator probes.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use vigil::health::{HealthChecker, Status};

/// An HTTP server answering every request with `status`.
async fn http_server(status: u16) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    address.to_string()
}

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

#[tokio::test]
async fn checks_pass_fail_time_out_and_aggregate() {
    let database = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mlflow = http_server(200).await;
    let broken = http_server(500).await;
    let checker = HealthChecker::new()
        .tcp(
            "database",
            &database.local_addr().unwrap().to_string(),
            true,
        )
        .mlflow(&mlflow, true)
        .disk("root_disk", "/", 0.0, true)
        .custom("model_loaded", true, || async { Ok("model v3".into()) });
    let report = checker.overall_health().await;
    assert_eq!(report.status, Status::Healthy, "{}", report.to_json());
    assert!(report.checks.iter().all(|c| c.status == Status::Healthy));
    assert!(report.checks[0].message.contains("connected"));

    // Non-critical failures degrade; critical ones make the service unhealthy.
    let degraded = checker
        .clone()
        .http("feature_store", &format!("{broken}/health"), false)
        .overall_health()
        .await;
    assert_eq!(degraded.status, Status::Degraded);
    let failing = degraded.checks.last().unwrap();
    assert_eq!(failing.status, Status::Degraded);
    assert!(
        failing.message.contains("answered 500"),
        "{}",
        failing.message
    );

    let refused = closed_port().await;
    let report = HealthChecker::new()
        .tcp("database", &refused, true)
        .custom("slow", false, || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok("late".into())
        })
        .with_timeout(Duration::from_millis(100))
        .disk("data_disk", "/", 100.5, false)
        .overall_health()
        .await;
    assert_eq!(report.status, Status::Unhealthy);
    let by_name = |name: &str| report.checks.iter().find(|c| c.name == name).unwrap();
    assert!(
        by_name("database").message.contains("cannot connect"),
        "{:?}",
        by_name("database")
    );
    assert!(by_name("slow").message.contains("timed out"));
    assert!(
        by_name("slow").latency < Duration::from_secs(2),
        "the timeout bounds the check"
    );
    assert!(
        by_name("data_disk").message.contains("below 100.5%"),
        "a full disk, simulated by the threshold"
    );
    assert_eq!(by_name("data_disk").status, Status::Degraded);
}

#[tokio::test]
async fn the_endpoint_answers_orchestrators_with_status_codes_and_json() {
    let refused = closed_port().await;
    let healthy = HealthChecker::new().custom("ok", true, || async { Ok("fine".into()) });
    let server = healthy.serve("127.0.0.1:0").await.unwrap();
    let (code, body) = get(server.local_addr(), "/health").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["checks"][0]["name"], "ok");
    assert!(json["checks"][0]["latency_ms"].is_f64());

    let unhealthy =
        HealthChecker::new()
            .tcp("database", &refused, true)
            .custom("cache", false, || async { Err("cache \"down\"".into()) });
    let server = unhealthy.serve("127.0.0.1:0").await.unwrap();
    let (code, body) = get(server.local_addr(), "/health").await;
    assert_eq!(code, 503);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "unhealthy");
    assert_eq!(
        json["checks"][1]["message"], "cache \"down\"",
        "messages are JSON-escaped"
    );
    assert_eq!(get(server.local_addr(), "/health/ready").await.0, 503);
    assert_eq!(
        get(server.local_addr(), "/health/live").await.0,
        200,
        "alive while unhealthy"
    );
    assert_eq!(get(server.local_addr(), "/metrics").await.0, 404);
}

#[tokio::test]
async fn the_gpu_check_reports_what_nvml_sees() {
    let report = HealthChecker::new().gpu(false).overall_health().await;
    let gpu = &report.checks[0];
    println!("gpu check: {:?}: {}", gpu.status, gpu.message);
    match gpu.status {
        Status::Healthy => assert!(gpu.message.contains("GPU")),
        _ => assert!(
            gpu.message.contains("NVIDIA") || gpu.message.contains("NVML"),
            "{}",
            gpu.message
        ),
    }
}
