//! Backpressure never lies: with the exporter down, queues fill and the receiver refuses with retryable errors;
//! every item is either delivered, refused, or counted as dropped — never silently lost.

use std::time::Duration;

use vigil_e2e::{Collector, OTLP_TO_FILE, eventually, file_exporter_lines, http, otlp, spans};

fn config(downstream_port: u16) -> String {
    format!(
        "
receivers:
  otlp:
    protocols:
      http: {{endpoint: '{{http}}'}}
processors:
  batch: {{send_batch_size: 10, timeout: 10ms, queue_size: 2}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{downstream_port}
    tls: {{insecure: true}}
    timeout: 1s
    sending_queue: {{queue_size: 2, num_consumers: 1}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}}
extensions:
  health_check: {{endpoint: '{{health}}'}}
service:
  extensions: [health_check]
  shutdown_timeout: 1s
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
  telemetry:
    metrics: {{address: '{{metrics}}'}}
"
    )
}

/// Sends `count` requests of 10 spans; returns the indices of those answered 200 and the number refused.
fn send(collector: &Collector, first: u32, count: u32) -> (Vec<u32>, u32) {
    let mut accepted = Vec::new();
    let mut refused = 0;
    for request in first..first + count {
        let response = http(
            "POST",
            &collector.http,
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &otlp::traces(request, 10),
        )
        .unwrap();
        match response.status {
            200 => accepted.push(request),
            503 => {
                assert!(
                    response.header("retry-after").is_some(),
                    "a refusal carries Retry-After"
                );
                refused += 1;
            }
            other => panic!("unexpected status {other}: {}", response.text()),
        }
    }
    (accepted, refused)
}

#[test]
fn exporter_down_fills_queues_then_refuses_and_shutdown_accounts_for_everything() {
    // An endpoint nobody serves: held so no other collector of this test run takes the port.
    let (dead_port, _dead) = vigil_e2e::reserve_port();
    let mut collector = Collector::start(&config(dead_port));
    let (accepted, refused) = send(&collector, 0, 60);
    assert!(
        refused > 0,
        "a dead exporter must eventually make the receiver refuse"
    );
    assert!(!accepted.is_empty());
    let accepted_items = (accepted.len() * 10) as f64;
    assert_eq!(
        collector.metric("vigil_receiver_accepted_items_total", &[]),
        accepted_items
    );
    assert_eq!(
        collector.metric(
            "vigil_receiver_refused_items_total",
            &["reason=\"queue_full\""]
        ),
        f64::from(refused * 10)
    );
    let status = collector.stop();
    assert_eq!(
        status.code(),
        Some(3),
        "exit status 3 reports undelivered data"
    );
    let log = collector.log();
    assert!(
        log.contains(&format!("undelivered={}", accepted.len() * 10)),
        "every accepted item is reported as undelivered:\n{log}"
    );
}

#[test]
fn exporter_that_comes_back_delivers_everything_that_was_accepted() {
    // Held until the downstream starts, so a test running in parallel cannot take the port meanwhile.
    let (downstream_port, reservation) = vigil_e2e::reserve_port();
    let mut collector = Collector::start(&config(downstream_port));
    let (mut accepted, refused) = send(&collector, 0, 40);
    assert!(
        refused > 0,
        "the dead exporter must make the receiver refuse"
    );
    drop(reservation);
    let mut downstream = Collector::start_on(OTLP_TO_FILE, &[], downstream_port);
    // Once the exporter recovers, refused clients retry and get in.
    assert!(eventually(Duration::from_secs(20), || {
        let (more, _) = send(&collector, 1000 + accepted.len() as u32, 1);
        accepted.extend(more);
        collector.metric("vigil_exporter_queue_size", &[]) == 0.0 && accepted.len() > 5
    }));
    let expected = (accepted.len() * 10) as f64;
    assert!(
        eventually(Duration::from_secs(20), || collector
            .metric("vigil_exporter_sent_items_total", &[])
            == expected),
        "{}\n{}",
        collector.metrics(),
        collector.log()
    );
    assert!(collector.stop().success(), "{}", collector.log());
    assert!(downstream.stop().success());
    let delivered = spans(&file_exporter_lines(
        &downstream.dir.path().join("out"),
        "traces",
    ));
    assert_eq!(
        delivered.len(),
        accepted.len() * 10,
        "exactly the accepted spans were delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refusal_is_unavailable_with_retry_info() {
    use tonic_types::StatusExt;
    let (dead_port, _dead) = vigil_e2e::reserve_port();
    let template = config(dead_port).replace(
        "http: {endpoint: '{http}'}",
        "http: {endpoint: '{http}'}\n      grpc: {endpoint: '{grpc}'}",
    );
    let collector = tokio::task::spawn_blocking(move || Collector::start(&template))
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", collector.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut refused = None;
    let mut accepted = 0u64;
    for request in 0..60 {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        let body = vec![bytes::Bytes::from(otlp::traces(request, 10))];
        match grpc
            .unary::<Vec<bytes::Bytes>, bytes::Bytes, vigil_collector::grpc_codec::RawCodec>(
                tonic::Request::new(body),
                path,
                vigil_collector::grpc_codec::RawCodec,
            )
            .await
        {
            Ok(_) => accepted += 10,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("a dead exporter must make the gRPC receiver refuse");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let retry = status
        .get_details_retry_info()
        .expect("RetryInfo in the status details");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d >= Duration::from_millis(100))
    );
    let accepted_metric = tokio::task::spawn_blocking(move || {
        collector.metric("vigil_receiver_accepted_items_total", &[])
    })
    .await
    .unwrap();
    assert_eq!(
        accepted_metric, accepted as f64,
        "the client's accepted count matches the collector's"
    );
}
