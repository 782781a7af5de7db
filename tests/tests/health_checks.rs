//! `vigil::health` against real servers: PostgreSQL (`SELECT 1`) and an MLflow tracking server (`/health`),
//! healthy and then stopped, plus the HTTP endpoint reporting them.

use vigil::health::{HealthChecker, Status};
use vigil_e2e::{MlflowServer, Postgres};

#[tokio::test]
async fn postgres_answers_select_1_and_failures_say_why() {
    let server = Postgres::start();
    let report = HealthChecker::new()
        .postgres("database", &server.connection(), true)
        .overall_health()
        .await;
    assert_eq!(report.status, Status::Healthy, "{}", report.to_json());
    assert_eq!(report.checks[0].message, "SELECT 1 answered");

    let missing = server
        .connection()
        .replace("dbname=postgres", "dbname=no_such_db");
    let report = HealthChecker::new()
        .postgres("database", &missing, true)
        .overall_health()
        .await;
    assert_eq!(report.status, Status::Unhealthy);
    assert!(
        report.checks[0].message.contains("no_such_db"),
        "{}",
        report.checks[0].message
    );

    let port = server.port;
    drop(server);
    let report = HealthChecker::new()
        .postgres(
            "database",
            &format!("host=127.0.0.1 port={port} user=vigil dbname=postgres connect_timeout=2"),
            false,
        )
        .overall_health()
        .await;
    assert_eq!(
        report.status,
        Status::Degraded,
        "a stopped server, non-critical"
    );
    assert!(report.checks[0].message.contains("cannot connect"));
}

/// One MLflow server per test run (it takes seconds to start): up, then stopped.
#[tokio::test]
async fn mlflow_tracking_server_is_checked_and_served() {
    let mut mlflow = tokio::task::spawn_blocking(MlflowServer::start)
        .await
        .unwrap();
    let checker = HealthChecker::new().mlflow(&mlflow.url, false);
    let report = checker.overall_health().await;
    assert_eq!(report.status, Status::Healthy, "{}", report.to_json());
    assert!(report.checks[0].message.contains("answered 200"));

    let server = checker.serve("127.0.0.1:0").await.unwrap();
    let address = server.local_addr().to_string();
    let response = tokio::task::spawn_blocking(move || {
        vigil_e2e::http("GET", &address, "/health", &[], b"").unwrap()
    })
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(json["checks"][0]["name"], "mlflow");

    tokio::task::spawn_blocking(move || {
        mlflow.stop();
        mlflow
    })
    .await
    .unwrap();
    let report = checker.overall_health().await;
    assert_eq!(report.status, Status::Degraded, "MLflow down, non-critical");
    assert!(
        report.checks[0].message.contains("cannot connect"),
        "{}",
        report.checks[0].message
    );
}
