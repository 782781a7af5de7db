//! `vigil::health` against a real PostgreSQL: `SELECT 1` answers, and a wrong port or database is reported.

use vigil::health::{HealthChecker, Status};
use vigil_e2e::Postgres;

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
