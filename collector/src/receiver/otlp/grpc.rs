//! OTLP/gRPC: the three `Export` methods, served by one tower service that routes on the method path.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use tonic::body::Body;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use vigil_proto::otlp::Signal;

use super::config::AuthConfig;
use super::ingest::{Ingest, IngestError, response_protobuf};
use crate::grpc_codec::RawCodec;
use crate::pipeline::BoxFuture;

/// The gRPC side of the `otlp` receiver.
#[derive(Clone)]
pub struct OtlpGrpcService {
    ingest: Arc<Ingest>,
    auth: Option<Arc<AuthConfig>>,
    max_message_bytes: usize,
}

impl OtlpGrpcService {
    /// A service admitting into `ingest`.
    pub fn new(ingest: Arc<Ingest>, auth: Option<AuthConfig>, max_message_bytes: usize) -> Self {
        OtlpGrpcService {
            ingest,
            auth: auth.map(Arc::new),
            max_message_bytes,
        }
    }
}

impl OtlpGrpcService {
    /// Answers one HTTP/2 request, giving up with `DEADLINE_EXCEEDED` when the client takes longer than
    /// `read_timeout` to send it.
    pub async fn call_timed(
        &mut self,
        request: Request<hyper::body::Incoming>,
        read_timeout: Duration,
    ) -> Response<Body> {
        let request = request.map(Body::new);
        match tokio::time::timeout(read_timeout, tower_service::Service::call(self, request)).await
        {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => Status::deadline_exceeded(format!(
                "the request was not received within {}ms (protocols.grpc.connections.read_timeout)",
                read_timeout.as_millis()
            ))
            .into_http(),
        }
    }
}

fn signal_of(path: &str) -> Option<Signal> {
    Signal::ALL.into_iter().find(|s| s.grpc_path() == path)
}

/// Maps an ingest failure to the gRPC status OTLP clients expect.
pub fn status_of(error: IngestError) -> Status {
    match error {
        IngestError::Invalid(message) => Status::invalid_argument(message),
        IngestError::NotAccepted(signal) => Status::unimplemented(format!(
            "this receiver is not part of any {signal} pipeline"
        )),
        // The same words as the HTTP side, with the wait as `RetryInfo`.
        IngestError::Refused(refusal) => Status::with_error_details(
            Code::Unavailable,
            refusal.to_string(),
            ErrorDetails::with_retry_info(Some(refusal.retry_after())),
        ),
    }
}

struct Export {
    signal: Signal,
    service: OtlpGrpcService,
}

impl tonic::server::UnaryService<Bytes> for Export {
    type Response = Vec<Bytes>;
    type Future = BoxFuture<'static, Result<tonic::Response<Vec<Bytes>>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        if let Some(auth) = &self.service.auth {
            let header = request
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes());
            if !auth.allows(header) {
                self.service.ingest.count_invalid_request(self.signal);
                return Box::pin(std::future::ready(Err(Status::unauthenticated(
                    "missing or wrong bearer token in the `authorization` metadata",
                ))));
            }
        }
        let signal = self.signal;
        let ingest = self.service.ingest.clone();
        Box::pin(async move {
            let accepted = match ingest.ingest(signal, request.into_inner()) {
                Ok(accepted) => ingest.stored(signal, accepted).await,
                Err(error) => Err(error),
            };
            accepted
                .map(|accepted| tonic::Response::new(vec![response_protobuf(signal, &accepted)]))
                .map_err(status_of)
        })
    }
}

impl tower_service::Service<Request<Body>> for OtlpGrpcService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            let Some(signal) = signal_of(request.uri().path()) else {
                let status = Status::unimplemented(format!(
                    "unknown method `{}`; this server implements the OTLP TraceService, MetricsService and LogsService Export methods",
                    request.uri().path()
                ));
                return Ok(status.into_http());
            };
            let mut encodings = EnabledCompressionEncodings::default();
            encodings.enable(CompressionEncoding::Gzip);
            encodings.enable(CompressionEncoding::Zstd);
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(encodings, encodings)
                .apply_max_message_size_config(Some(service.max_message_bytes), None);
            let mut response = grpc
                .unary(
                    Export {
                        signal,
                        service: service.clone(),
                    },
                    request,
                )
                .await;
            // tonic reports an oversized message as OUT_OF_RANGE, which OTLP clients retry forever; OTLP says
            // RESOURCE_EXHAUSTED without retry info, which they do not retry.
            if response
                .headers()
                .get("grpc-status")
                .map(HeaderValue::as_bytes)
                == Some(b"11")
            {
                service.ingest.count_invalid_request(signal);
                response
                    .headers_mut()
                    .insert("grpc-status", HeaderValue::from_static("8"));
            }
            Ok(response)
        })
    }
}
