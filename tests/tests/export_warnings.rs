//! Export failures are never silent: an app pointed at a port where nothing listens, or at the collector's
//! HTTP port with gRPC, says so on the console with the endpoint, the protocol and the likely fix, and says at
//! exit what did not arrive.

use std::process::Command;

use vigil_e2e::{Collector, OTLP_TO_FILE, reserve_port, workspace_binary};

fn quickstart(env: &[(&str, &str)]) -> (String, bool) {
    let mut command = Command::new(workspace_binary("quickstart"));
    command
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env("OTEL_METRICS_EXPORTER", "none");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.success(),
    )
}

#[test]
fn a_dead_port_is_named_with_the_fix() {
    let (port, reservation) = reserve_port();
    drop(reservation);
    let endpoint = format!("http://127.0.0.1:{port}");
    let (stderr, ok) = quickstart(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    assert!(ok, "the app itself does not fail: {stderr}");
    assert!(
        stderr.contains(&format!(
            "vigil: WARNING cannot export traces to {endpoint} over OTLP/gRPC"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("nothing listens on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("traces export(s) failed during this run; their data did not reach"),
        "{stderr}"
    );
    assert!(
        stderr.matches("WARNING cannot export traces").count() == 1,
        "one warning per signal, not one per batch: {stderr}"
    );
}

#[test]
fn grpc_sent_to_the_http_port_is_named_with_the_fix() {
    let collector = Collector::start(OTLP_TO_FILE);
    let endpoint = format!("http://{}", collector.http);
    let (stderr, _) = quickstart(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    assert!(
        stderr.contains("set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"),
        "{stderr}"
    );
}

#[test]
fn a_working_export_prints_no_warning() {
    let collector = Collector::start(OTLP_TO_FILE);
    let endpoint = format!("http://{}", collector.grpc);
    let (stderr, ok) = quickstart(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    assert!(ok);
    assert!(!stderr.contains("WARNING cannot export"), "{stderr}");
    assert!(stderr.contains("Training completed"), "{stderr}");
}

#[test]
fn http_sent_to_the_grpc_port_is_named_with_the_fix() {
    let collector = Collector::start(OTLP_TO_FILE);
    let (stderr, _) = quickstart(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.grpc),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ]);
    assert!(stderr.contains("over OTLP/HTTP (protobuf)"), "{stderr}");
    assert!(
        stderr.contains("set OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        "{stderr}"
    );
}
