//! OTLP/HTTP: `POST /v1/{traces,metrics,logs}` with protobuf or JSON bodies, optionally gzip or zstd encoded.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prost::Message;
use vigil_proto::otlp::{Signal, json};

use super::config::AuthConfig;
use super::ingest::{Ingest, IngestError, response_json, response_protobuf};
use crate::net::text;

/// The HTTP side of the `otlp` receiver.
pub struct OtlpHttpHandler {
    ingest: Arc<Ingest>,
    auth: Option<AuthConfig>,
    max_body_bytes: usize,
    read_timeout: std::time::Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> HeaderValue {
        match self {
            Encoding::Protobuf => HeaderValue::from_static("application/x-protobuf"),
            Encoding::Json => HeaderValue::from_static("application/json"),
        }
    }
}

/// An error answer in the encoding the client used: `google.rpc.Status` as protobuf or JSON.
fn status_response(
    encoding: Encoding,
    status: StatusCode,
    grpc_code: i32,
    message: String,
) -> Response<Full<Bytes>> {
    let body = match encoding {
        Encoding::Protobuf => vigil_proto::rpc::Status {
            code: grpc_code,
            message,
        }
        .encode_to_vec()
        .into(),
        Encoding::Json => {
            Bytes::from(serde_json::json!({ "code": grpc_code, "message": message }).to_string())
        }
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, encoding.content_type());
    response
}

fn signal_of(path: &str) -> Option<Signal> {
    match path {
        "/v1/traces" => Some(Signal::Traces),
        "/v1/metrics" => Some(Signal::Metrics),
        "/v1/logs" => Some(Signal::Logs),
        _ => None,
    }
}

/// A gRPC client on the OTLP/HTTP port gets a gRPC answer that says what to change, instead of an HTTP 404
/// its library reports as an unexplained `INTERNAL` error.
fn grpc_on_http_port() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static("12"));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static(
            "this%20is%20an%20OTLP%2FHTTP%20port%3A%20send%20gRPC%20to%20the%20gRPC%20port%20%28default%204317%29%20or%20set%20OTEL_EXPORTER_OTLP_PROTOCOL%3Dhttp%2Fprotobuf",
        ),
    );
    response
}

const CODE_INVALID_ARGUMENT: i32 = 3;
const CODE_NOT_FOUND: i32 = 5;
const CODE_RESOURCE_EXHAUSTED: i32 = 8;
const CODE_UNAVAILABLE: i32 = 14;
const CODE_UNAUTHENTICATED: i32 = 16;

impl OtlpHttpHandler {
    /// A handler admitting into `ingest`.
    pub fn new(
        ingest: Arc<Ingest>,
        auth: Option<AuthConfig>,
        max_body_bytes: usize,
        read_timeout: std::time::Duration,
    ) -> Self {
        OtlpHttpHandler {
            ingest,
            auth,
            max_body_bytes,
            read_timeout,
        }
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
        {
            return grpc_on_http_port();
        }
        let Some(signal) = signal_of(request.uri().path()) else {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown path `{}`: OTLP/HTTP accepts POST to /v1/traces, /v1/metrics and /v1/logs",
                    request.uri().path()
                ),
            );
        };
        if request.method() != Method::POST {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not allowed on {}; use POST",
                    request.method(),
                    request.uri().path()
                ),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let encoding = match content_type.as_deref() {
            Some("application/x-protobuf") | Some("application/protobuf") => Encoding::Protobuf,
            Some("application/json") => Encoding::Json,
            other => {
                self.ingest.count_invalid_request(signal);
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "unsupported Content-Type {}: use application/x-protobuf or application/json",
                        other.map_or("(none)".to_string(), |t| format!("`{t}`"))
                    ),
                );
            }
        };
        if let Some(auth) = &self.auth
            && !auth.allows(
                request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            )
        {
            self.ingest.count_invalid_request(signal);
            let mut response = status_response(
                encoding,
                StatusCode::UNAUTHORIZED,
                CODE_UNAUTHENTICATED,
                "missing or wrong bearer token in the Authorization header".into(),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let invalid = |status: StatusCode, code: i32, message: String| {
            self.ingest.count_invalid_request(signal);
            status_response(encoding, status, code, message)
        };
        let content_encoding = request
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
        let decoder = match content_encoding.as_deref() {
            None | Some("") | Some("identity") => Decoder::None,
            Some("gzip") | Some("x-gzip") => Decoder::Gzip,
            Some("zstd") => Decoder::Zstd,
            Some("deflate") => Decoder::Deflate,
            Some(other) => {
                self.ingest.count_invalid_request(signal);
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "unsupported Content-Encoding `{other}`: use gzip, zstd, deflate or none"
                    ),
                );
            }
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = || {
            format!(
                "request body is larger than the {} bytes this receiver accepts (protocols.http.max_request_body_size)",
                self.max_body_bytes
            )
        };
        if declared.is_some_and(|len| len > self.max_body_bytes as u64) {
            return invalid(
                StatusCode::PAYLOAD_TOO_LARGE,
                CODE_RESOURCE_EXHAUSTED,
                too_large(),
            );
        }
        let collect = Limited::new(request.into_body(), self.max_body_bytes).collect();
        let Ok(collected) = tokio::time::timeout(self.read_timeout, collect).await else {
            return invalid(
                StatusCode::REQUEST_TIMEOUT,
                CODE_UNAVAILABLE,
                format!(
                    "the request body was not received within {}ms (protocols.http.connections.read_timeout)",
                    self.read_timeout.as_millis()
                ),
            );
        };
        let body = match collected {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return invalid(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    CODE_RESOURCE_EXHAUSTED,
                    too_large(),
                );
            }
            Err(e) => {
                return invalid(
                    StatusCode::BAD_REQUEST,
                    CODE_INVALID_ARGUMENT,
                    format!("could not read the request body: {e}"),
                );
            }
        };
        let body = match decoder.decode(body, self.max_body_bytes) {
            Ok(body) => body,
            Err(DecodeError::TooLarge) => {
                return invalid(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    CODE_RESOURCE_EXHAUSTED,
                    format!(
                        "decompressed body is larger than the {} bytes this receiver accepts",
                        self.max_body_bytes
                    ),
                );
            }
            Err(DecodeError::Corrupt(message)) => {
                return invalid(StatusCode::BAD_REQUEST, CODE_INVALID_ARGUMENT, message);
            }
        };
        let protobuf = match encoding {
            Encoding::Protobuf => body,
            Encoding::Json => match json::json_to_protobuf(signal, &body) {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => {
                    return invalid(
                        StatusCode::BAD_REQUEST,
                        CODE_INVALID_ARGUMENT,
                        e.to_string(),
                    );
                }
            },
        };
        let result = match self.ingest.ingest(signal, protobuf) {
            Ok(accepted) => self.ingest.stored(signal, accepted).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(accepted) => {
                let body = match encoding {
                    Encoding::Protobuf => response_protobuf(signal, &accepted),
                    Encoding::Json => response_json(signal, &accepted),
                };
                let mut response = Response::new(Full::new(body));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, encoding.content_type());
                response
            }
            Err(IngestError::Invalid(message)) => status_response(
                encoding,
                StatusCode::BAD_REQUEST,
                CODE_INVALID_ARGUMENT,
                message,
            ),
            Err(IngestError::NotAccepted(signal)) => status_response(
                encoding,
                StatusCode::NOT_FOUND,
                CODE_NOT_FOUND,
                format!("this receiver is not part of any {signal} pipeline"),
            ),
            Err(IngestError::Refused(refusal)) => {
                let retry_after = refusal.retry_after().as_secs().max(1);
                let mut response = status_response(
                    encoding,
                    StatusCode::SERVICE_UNAVAILABLE,
                    CODE_UNAVAILABLE,
                    refusal.to_string(),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                response
            }
        }
    }
}

enum Decoder {
    None,
    Gzip,
    Zstd,
    Deflate,
}

enum DecodeError {
    TooLarge,
    Corrupt(String),
}

impl Decoder {
    fn decode(&self, body: Bytes, limit: usize) -> Result<Bytes, DecodeError> {
        let read_limited = |reader: &mut dyn Read, name: &str| {
            let mut out = Vec::with_capacity(body.len() * 4);
            match reader.take(limit as u64 + 1).read_to_end(&mut out) {
                Ok(n) if n > limit => Err(DecodeError::TooLarge),
                Ok(_) => Ok(Bytes::from(out)),
                Err(e) => Err(DecodeError::Corrupt(format!("invalid {name} body: {e}"))),
            }
        };
        match self {
            Decoder::None => Ok(body),
            Decoder::Gzip => {
                read_limited(&mut flate2::read::MultiGzDecoder::new(&body[..]), "gzip")
            }
            Decoder::Deflate => {
                read_limited(&mut flate2::read::ZlibDecoder::new(&body[..]), "deflate")
            }
            Decoder::Zstd => match zstd::stream::read::Decoder::new(&body[..]) {
                Ok(mut decoder) => read_limited(&mut decoder, "zstd"),
                Err(e) => Err(DecodeError::Corrupt(format!("invalid zstd body: {e}"))),
            },
        }
    }
}
