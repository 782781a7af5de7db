//! Two collectors chained with the `otlp` exporter: every span sent to the first arrives at the second exactly
//! once.

use std::collections::HashSet;
use std::time::Duration;

use vigil_e2e::{Collector, OTLP_TO_FILE, eventually, file_exporter_lines, http, otlp, spans};

fn upstream(exporter: &str) -> String {
    let id = exporter.split(':').next().unwrap_or_default();
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: '{{grpc}}'}}
      http: {{endpoint: '{{http}}'}}
processors:
  batch: {{send_batch_size: 100, timeout: 20ms}}
exporters:
  {exporter}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [{id}]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
"
    )
}

#[test]
fn chained_over_otlp_grpc_nothing_lost_nothing_duplicated() {
    chain(|downstream| {
        format!(
            "otlp/out: {{endpoint: '{}', tls: {{insecure: true}}, compression: gzip}}",
            downstream.grpc
        )
    });
}

#[test]
fn chained_over_otlphttp_protobuf_nothing_lost_nothing_duplicated() {
    chain(|downstream| {
        format!(
            "otlphttp/out: {{endpoint: 'http://{}', compression: zstd}}",
            downstream.http
        )
    });
}

#[test]
fn chained_over_otlphttp_json_nothing_lost_nothing_duplicated() {
    chain(|downstream| {
        format!(
            "otlphttp/out: {{traces_endpoint: 'http://{}/v1/traces', encoding: json}}",
            downstream.http
        )
    });
}

#[test]
fn chained_over_otlp_grpc_with_tls_verified_by_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = vigil_e2e::test_certs(dir.path());
    let tls = format!(
        "tls: {{cert_file: '{}', key_file: '{}'}}",
        certs.cert.display(),
        certs.key.display()
    );
    let downstream = OTLP_TO_FILE.replace(
        "grpc: {endpoint: '{grpc}'}",
        &format!("grpc: {{endpoint: '{{grpc}}', {tls}}}"),
    );
    chain_to(&downstream, |d| {
        format!(
            "otlp/out: {{endpoint: '{}', tls: {{ca_file: '{}'}}}}",
            d.grpc,
            certs.ca.display()
        )
    });
}

fn chain(exporter: impl Fn(&Collector) -> String) {
    chain_to(OTLP_TO_FILE, exporter);
}

fn chain_to(downstream_config: &str, exporter: impl Fn(&Collector) -> String) {
    let mut downstream = Collector::start(downstream_config);
    let mut upstream = Collector::start(&upstream(&exporter(&downstream)));
    const REQUESTS: u32 = 60;
    const SPANS: u32 = 25;
    for request in 0..REQUESTS {
        let response = http(
            "POST",
            &upstream.http,
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &otlp::traces(request, SPANS),
        )
        .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let total = f64::from(REQUESTS * SPANS);
    assert!(
        eventually(Duration::from_secs(20), || upstream
            .metric("vigil_exporter_sent_items_total", &[])
            == total),
        "upstream did not deliver everything:\n{}",
        upstream.metrics()
    );
    assert!(upstream.stop().success(), "{}", upstream.log());
    assert!(downstream.stop().success(), "{}", downstream.log());

    let received = spans(&file_exporter_lines(
        &downstream.dir.path().join("out"),
        "traces",
    ));
    let ids: Vec<String> = received
        .iter()
        .map(|s| s["spanId"].as_str().unwrap().to_string())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), (REQUESTS * SPANS) as usize, "every span arrives");
    assert_eq!(unique.len(), ids.len(), "no span arrives twice");
    for request in 0..REQUESTS {
        for index in 0..SPANS {
            assert!(
                unique.contains(&otlp::span_id(request, index)),
                "span {request}/{index} missing"
            );
        }
    }
    // Attributes survive the hop unchanged.
    let sample = received
        .iter()
        .find(|s| s["spanId"] == otlp::span_id(7, 3))
        .unwrap();
    assert_eq!(sample["attributes"][1]["value"]["stringValue"], "req-7-3");
}
