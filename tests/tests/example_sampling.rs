//! `configs/examples/sampling.yaml` does what its header says: every error and every slow trace is kept, about
//! 10 % of the other traces, and no health check unless it fails or is slow. (It used to keep every ordinary
//! trace: an inverted policy on its own votes to keep what it does not match.)

use prost::Message;
use vigil_e2e::{Collector, OTLP_TO_FILE, file_exporter_lines, http, spans};
use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vigil_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use vigil_proto::otlp::{resource::v1::Resource, string_attribute};

/// One single-span trace: a random id (tail sampling's 10 % reads its randomness), its route, whether it
/// failed and how long it took.
fn trace(n: u64, route: &str, error: bool, millis: u64) -> Span {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let trace_id = [next().to_be_bytes(), next().to_be_bytes()].concat();
    let start = 1_700_000_000_000_000_000u64 + n * 1_000_000;
    Span {
        trace_id,
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: format!("GET {route}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + millis * 1_000_000,
        attributes: vec![string_attribute("http.route", route)],
        status: error.then(|| Status {
            code: 2,
            message: "failed".into(),
        }),
        ..Default::default()
    }
}

#[test]
fn the_sampling_example_keeps_errors_slow_traces_and_a_tenth_of_the_rest() {
    // The backend it exports to: a collector that writes what it receives to a file.
    let backend = Collector::start(OTLP_TO_FILE);
    let shipped = std::fs::read_to_string(vigil_e2e::workspace_root().join("configs/examples/sampling.yaml"))
        .unwrap()
        .replace("127.0.0.1:4317", "{grpc}")
        .replace("127.0.0.1:4318", "{http}")
        .replace("    metrics: {receivers: [otlp], processors: [mask, batch], exporters: [otlp]}", "    metrics: {receivers: [otlp], processors: [mask, batch], exporters: [otlp]}\n  telemetry:\n    metrics: {address: '{metrics}'}\n  extensions: [health_check]\nextensions:\n  health_check: {endpoint: '{health}'}");
    let mut sampling =
        Collector::start_with_env(&shipped, &[("VIGIL_OTLP_BACKEND", &backend.grpc)]);
    let mut spans_sent = Vec::new();
    let mut n = 0;
    let mut add =
        |count: u64, route: &str, error: bool, millis: u64, spans_sent: &mut Vec<Span>| {
            for _ in 0..count {
                spans_sent.push(trace(n, route, error, millis));
                n += 1;
            }
        };
    add(40, "/api/orders", true, 20, &mut spans_sent); // errors: all kept
    add(40, "/api/orders", false, 900, &mut spans_sent); // slow: all kept
    add(600, "/api/orders", false, 20, &mut spans_sent); // the rest: ~10 %
    add(200, "/healthz", false, 2, &mut spans_sent); // health checks: none
    add(5, "/healthz", true, 2, &mut spans_sent); // failing health checks: kept
    for chunk in spans_sent.chunks(50) {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", "shop")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: chunk.to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let response = http(
            "POST",
            &sampling.http,
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &request.encode_to_vec(),
        )
        .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
    // Shutting down makes the tail sampler decide every buffered trace (decision_wait is 10s) and flush.
    assert_eq!(sampling.stop().code(), Some(0), "{}", sampling.log());
    let mut backend = backend;
    assert_eq!(backend.stop().code(), Some(0));
    let kept = spans(&file_exporter_lines(
        &backend.dir.path().join("out"),
        "traces",
    ));
    let count = |route: &str, error: bool, slow: bool| {
        kept.iter()
            .filter(|s| {
                let attrs = s["attributes"].to_string();
                let is_error =
                    s["status"]["code"] == 2 || s["status"]["code"] == "STATUS_CODE_ERROR";
                let start: u64 = s["startTimeUnixNano"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let end: u64 = s["endTimeUnixNano"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                attrs.contains(route) && is_error == error && ((end - start) > 500_000_000) == slow
            })
            .count()
    };
    assert_eq!(count("/api/orders", true, false), 40, "every error is kept");
    assert_eq!(
        count("/api/orders", false, true),
        40,
        "every slow trace is kept"
    );
    let rest = count("/api/orders", false, false);
    assert!(
        (30..=95).contains(&rest),
        "about 10% of 600 ordinary traces, got {rest}"
    );
    assert_eq!(
        count("/healthz", false, false),
        0,
        "no healthy health check"
    );
    assert_eq!(
        count("/healthz", true, false),
        5,
        "failing health checks are kept"
    );
}
