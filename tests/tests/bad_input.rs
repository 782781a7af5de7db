//! Every kind of bad input gets a specific error naming the problem; none crashes the collector or loses data
//! it had already accepted.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic::codec::CompressionEncoding;
use vigil_collector::grpc_codec::RawCodec;
use vigil_e2e::{Collector, HttpResponse, eventually, file_exporter_lines, http, otlp, spans};
use vigil_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use vigil_proto::otlp::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};

const CONFIG: &str = "
receivers:
  otlp:
    protocols:
      grpc: {endpoint: '{grpc}', max_recv_msg_size_mib: 1}
      http: {endpoint: '{http}', max_request_body_size: 1048576}
processors:
  batch: {timeout: 10ms}
exporters:
  file: {path: '{dir}/out'}
extensions:
  health_check: {endpoint: '{health}'}
service:
  extensions: [health_check]
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [file]}
  telemetry:
    metrics: {address: '{metrics}'}
";

fn post(collector: &Collector, path: &str, content_type: &str, body: &[u8]) -> HttpResponse {
    http(
        "POST",
        &collector.http,
        path,
        &[("Content-Type", content_type)],
        body,
    )
    .unwrap()
}

fn rpc_status(response: &HttpResponse) -> vigil_proto::rpc::Status {
    vigil_proto::rpc::Status::decode(response.body.as_slice())
        .expect("error body is a google.rpc.Status")
}

fn deep_value(depth: usize) -> AnyValue {
    let mut value = AnyValue {
        value: Some(Value::StringValue("leaf".into())),
    };
    for _ in 0..depth {
        value = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    value
}

fn with_span_edit(request: u32, edit: impl FnOnce(&mut ExportTraceServiceRequest)) -> Vec<u8> {
    let mut decoded =
        ExportTraceServiceRequest::decode(otlp::traces(request, 3).as_slice()).unwrap();
    edit(&mut decoded);
    decoded.encode_to_vec()
}

#[test]
fn http_bad_input_gets_specific_errors_and_accepted_data_survives() {
    let mut collector = Collector::start(CONFIG);
    // Accepted first: must still be delivered after all the abuse below.
    assert_eq!(
        post(
            &collector,
            "/v1/traces",
            "application/x-protobuf",
            &otlp::traces(1, 5)
        )
        .status,
        200
    );

    let r = post(
        &collector,
        "/v1/traces",
        "application/x-protobuf",
        b"\x0a\xff\xff\xff\xff\x0fgarbage",
    );
    assert_eq!(r.status, 400);
    assert!(
        rpc_status(&r)
            .message
            .contains("malformed OTLP traces request"),
        "{}",
        rpc_status(&r).message
    );
    assert_eq!(rpc_status(&r).code, 3, "INVALID_ARGUMENT");

    let r = post(
        &collector,
        "/v1/traces",
        "application/json",
        b"{\"resourceSpans\": [ {\"scopeSpans\": 5} ]}",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains("invalid OTLP/JSON traces request at line 1"),
        "{}",
        r.text()
    );

    let r = post(&collector, "/v1/traces", "text/plain", b"hello");
    assert_eq!(r.status, 415);
    assert!(
        r.text().contains("unsupported Content-Type `text/plain`"),
        "{}",
        r.text()
    );

    let r = http("POST", &collector.http, "/v1/traces", &[], b"x").unwrap();
    assert_eq!(r.status, 415);
    assert!(r.text().contains("(none)"), "{}", r.text());

    let r = post(&collector, "/v1/spans", "application/x-protobuf", b"");
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("/v1/traces, /v1/metrics and /v1/logs"),
        "{}",
        r.text()
    );

    let r = http("GET", &collector.http, "/v1/traces", &[], b"").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));

    let r = post(
        &collector,
        "/v1/traces",
        "application/x-protobuf",
        &vec![0u8; 2 << 20],
    );
    assert_eq!(r.status, 413);

    // A small gzip body that inflates past the limit (a zip bomb) is refused too.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 4 << 20]).unwrap();
    let bomb = encoder.finish().unwrap();
    let r = http(
        "POST",
        &collector.http,
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    )
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());

    let r = http(
        "POST",
        &collector.http,
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        b"not gzip at all",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(rpc_status(&r).message.contains("invalid gzip body"));

    let r = http(
        "POST",
        &collector.http,
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "br"),
        ],
        b"x",
    )
    .unwrap();
    assert_eq!(r.status, 415);

    // Invalid UTF-8 in a span name: that span alone is rejected (a partial success naming the field path);
    // the other two spans of the request are accepted.
    let mut bad = with_span_edit(2, |r| {
        r.resource_spans[0].scope_spans[0].spans[1].name = "MARK".into()
    });
    let at = bad.windows(4).position(|w| w == b"MARK").unwrap();
    bad[at] = 0xc3;
    bad[at + 1] = 0x28;
    let r = post(&collector, "/v1/traces", "application/x-protobuf", &bad);
    assert_eq!(r.status, 200);
    let partial = ExportTraceServiceResponse::decode(r.body.as_slice())
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("resource_spans[0].scope_spans[0].spans[1].name: invalid UTF-8"),
        "{}",
        partial.error_message
    );

    // Absurdly deep AnyValue nesting.
    let deep = with_span_edit(3, |r| {
        r.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .push(KeyValue {
                key: "deep".into(),
                value: Some(deep_value(200)),
                ..Default::default()
            })
    });
    let r = post(&collector, "/v1/traces", "application/x-protobuf", &deep);
    assert_eq!(r.status, 200);
    let partial = ExportTraceServiceResponse::decode(r.body.as_slice())
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("nested deeper than"),
        "{}",
        partial.error_message
    );

    // Partial success: the span with a broken id is rejected; its siblings and the other entry are accepted.
    let mut mixed = ExportTraceServiceRequest::decode(otlp::traces(4, 2).as_slice()).unwrap();
    let mut broken = ExportTraceServiceRequest::decode(otlp::traces(5, 3).as_slice()).unwrap();
    broken.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
    mixed.resource_spans.extend(broken.resource_spans);
    let r = post(
        &collector,
        "/v1/traces",
        "application/x-protobuf",
        &mixed.encode_to_vec(),
    );
    assert_eq!(r.status, 200);
    let response = ExportTraceServiceResponse::decode(r.body.as_slice()).unwrap();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("trace_id: id is 3 bytes, expected 16"),
        "{}",
        partial.error_message
    );

    // Empty requests succeed and carry nothing.
    assert_eq!(
        post(&collector, "/v1/traces", "application/x-protobuf", b"").status,
        200
    );
    assert_eq!(
        post(&collector, "/v1/traces", "application/json", b"{}").status,
        200
    );

    // Still healthy, and everything accepted is delivered.
    assert_eq!(
        post(
            &collector,
            "/v1/traces",
            "application/x-protobuf",
            &otlp::traces(6, 4)
        )
        .status,
        200
    );
    assert!(eventually(Duration::from_secs(10), || collector
        .metric("vigil_exporter_sent_items_total", &[])
        == 17.0));
    assert!(collector.metric("vigil_receiver_invalid_requests_total", &[]) >= 7.0);
    assert!(collector.stop().success(), "{}", collector.log());
    let delivered: Vec<String> = spans(&file_exporter_lines(
        &collector.dir.path().join("out"),
        "traces",
    ))
    .iter()
    .map(|s| s["spanId"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(
        delivered.len(),
        17,
        "5 + 2 + 2 (the valid spans of two requests with one bad span each) + 4 (partial success) + 4"
    );
    assert!(delivered.contains(&otlp::span_id(1, 4)));
    assert!(delivered.contains(&otlp::span_id(4, 1)));
    assert!(
        !delivered.contains(&otlp::span_id(5, 0)),
        "the rejected span was not exported"
    );
    assert!(
        delivered.contains(&otlp::span_id(5, 1)),
        "its valid sibling was"
    );
}

async fn grpc_export(address: &str, body: Vec<u8>, gzip: bool) -> Result<Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    if gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary::<Vec<Bytes>, Bytes, RawCodec>(
        tonic::Request::new(vec![Bytes::from(body)]),
        path,
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_input_gets_specific_status_codes() {
    let collector = tokio::task::spawn_blocking(|| Collector::start(CONFIG))
        .await
        .unwrap();
    let ok = grpc_export(&collector.grpc, otlp::traces(1, 3), true)
        .await
        .unwrap();
    assert!(
        ExportTraceServiceResponse::decode(ok)
            .unwrap()
            .partial_success
            .is_none()
    );

    let status = grpc_export(
        &collector.grpc,
        b"\x0a\xff\xff\xff\xff\x0fgarbage".to_vec(),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("malformed OTLP traces request"),
        "{}",
        status.message()
    );

    let status = grpc_export(&collector.grpc, vec![0u8; 2 << 20], false)
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "oversized is RESOURCE_EXHAUSTED, not retried: {status:?}"
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", collector.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
    );
    let status = grpc
        .unary::<Vec<Bytes>, Bytes, RawCodec>(tonic::Request::new(vec![]), path, RawCodec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    let ok = grpc_export(&collector.grpc, otlp::traces(2, 3), false)
        .await
        .unwrap();
    assert!(
        ExportTraceServiceResponse::decode(ok)
            .unwrap()
            .partial_success
            .is_none()
    );
    let delivered = tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(10), || {
            collector.metric("vigil_exporter_sent_items_total", &[]) == 6.0
        })
    })
    .await
    .unwrap();
    assert!(delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_when_configured() {
    let config = CONFIG
        .replace(
            "max_recv_msg_size_mib: 1}",
            "max_recv_msg_size_mib: 1, auth: {bearer_token: '${env:E2E_TOKEN}'}}",
        )
        .replace(
            "max_request_body_size: 1048576}",
            "max_request_body_size: 1048576, auth: {bearer_token: '${env:E2E_TOKEN}'}}",
        );
    let collector = tokio::task::spawn_blocking(move || {
        Collector::start_with_env(&config, &[("E2E_TOKEN", "s3cret")])
    })
    .await
    .unwrap();
    let status = grpc_export(&collector.grpc, otlp::traces(1, 1), false)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let address = collector.http.clone();
    let (denied, allowed) = tokio::task::spawn_blocking(move || {
        let body = otlp::traces(1, 1);
        let denied = http(
            "POST",
            &address,
            "/v1/traces",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Authorization", "Bearer nope"),
            ],
            &body,
        )
        .unwrap();
        let allowed = http(
            "POST",
            &address,
            "/v1/traces",
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Authorization", "Bearer s3cret"),
            ],
            &body,
        )
        .unwrap();
        (denied.status, allowed.status)
    })
    .await
    .unwrap();
    assert_eq!((denied, allowed), (401, 200));
    assert!(
        !collector.log().contains("s3cret"),
        "the token never appears in logs"
    );
}
