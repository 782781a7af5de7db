//! Exporter `otlp`: OTLP/gRPC to another collector, Jaeger, Tempo or any OTLP backend.
//!
//! Batches are sent as the bytes they arrived in (no re-encoding). Failures are classified by the OTLP rules:
//! `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS`, and
//! `RESOURCE_EXHAUSTED` carrying `RetryInfo` are retried (after the server's `RetryInfo` delay when given);
//! everything else is permanent.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use serde::Deserialize;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{
    Compression, ExportError, Exported, Exporter, Headers, QueueSettings, RetrySettings,
    validate_headers,
};
use crate::component::Checker;
use crate::grpc_codec::RawCodec;
use crate::pipeline::{Batch, BoxFuture};

/// Client TLS settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// Plaintext (no TLS) for `host:port` endpoints; `http://` endpoints are always plaintext.
    pub insecure: bool,
    /// A PEM CA bundle to trust instead of the system roots.
    pub ca_file: Option<String>,
}

/// `exporters.otlp`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// `host:port` (TLS unless `tls.insecure`), or a `http://` / `https://` URL.
    pub endpoint: String,
    /// TLS settings.
    #[serde(default)]
    pub tls: ClientTls,
    /// Metadata sent with every request (e.g. `authorization`).
    #[serde(default)]
    pub headers: Headers,
    /// Request compression.
    #[serde(default)]
    pub compression: Compression,
    /// Time allowed for one attempt.
    #[serde(default = "default_timeout", with = "crate::component::duration")]
    pub timeout: Duration,
    /// The queue in front of it.
    #[serde(default)]
    pub sending_queue: QueueSettings,
    /// Retries.
    #[serde(default)]
    pub retry_on_failure: RetrySettings,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl OtlpExporterConfig {
    pub(super) fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if let Err(e) = self.uri() {
            check.error(&format!("{path}.endpoint"), e);
        }
        validate_headers(&self.headers, check, path);
        for name in self.headers.keys() {
            if MetadataKey::<tonic::metadata::Ascii>::from_str(&name.to_ascii_lowercase()).is_err()
            {
                check.error(
                    &format!("{path}.headers.{name}"),
                    "not a valid gRPC metadata key",
                );
            }
        }
        if self.timeout.is_zero() {
            check.error(&format!("{path}.timeout"), "must be longer than 0s");
        }
    }

    /// The endpoint as a URI with scheme.
    pub fn uri(&self) -> Result<String, String> {
        let endpoint = self.endpoint.trim();
        if endpoint.is_empty() {
            return Err("must be set, e.g. `jaeger:4317` or `http://127.0.0.1:4317`".into());
        }
        let uri = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
            endpoint.to_string()
        } else if self.tls.insecure {
            format!("http://{endpoint}")
        } else {
            format!("https://{endpoint}")
        };
        http::Uri::from_str(&uri)
            .map_err(|e| format!("`{endpoint}` is not a valid endpoint: {e}"))?;
        Ok(uri)
    }
}

/// Sends batches over OTLP/gRPC.
pub struct OtlpExporter {
    channel: Channel,
    metadata: Vec<(
        MetadataKey<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
    compression: Option<CompressionEncoding>,
    timeout: Duration,
}

impl OtlpExporter {
    /// Builds the client; the connection is made on first use and re-made after failures.
    pub fn new(config: &OtlpExporterConfig) -> Result<Self, String> {
        let uri = config.uri()?;
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("invalid endpoint `{uri}`: {e}"))?
            .connect_timeout(config.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if uri.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &config.tls.ca_file {
                let pem = std::fs::read(ca).map_err(|e| format!("cannot read `{ca}`: {e}"))?;
                tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS setup failed: {e}"))?;
        }
        let metadata = config
            .headers
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, v)| {
                Some((
                    MetadataKey::from_str(&k.to_ascii_lowercase()).ok()?,
                    MetadataValue::from_str(v).ok()?,
                ))
            })
            .collect();
        Ok(OtlpExporter {
            channel: endpoint.connect_lazy(),
            metadata,
            compression: match config.compression {
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
                Compression::None => None,
            },
            timeout: config.timeout,
        })
    }
}

/// Classifies a gRPC failure by the OTLP retry rules.
pub fn classify(status: &Status) -> ExportError {
    let retry_after = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::Retryable {
            message,
            retry_after,
        },
        Code::ResourceExhausted if retry_after.is_some() => ExportError::Retryable {
            message,
            retry_after,
        },
        // The connection failed before an answer came (reset, closed): OTLP says a disconnect without a
        // response is retried. tonic reports these as UNKNOWN carrying a transport error.
        Code::Unknown if is_transport_failure(status) => ExportError::Retryable {
            message,
            retry_after,
        },
        Code::InvalidArgument => ExportError::Undecodable { message },
        _ => ExportError::Permanent { message },
    }
}

fn is_transport_failure(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>()
            || error.is::<hyper::Error>()
            || error.is::<std::io::Error>()
        {
            return true;
        }
        source = error.source();
    }
    status.message() == "transport error"
}

impl Exporter for OtlpExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            if let Some(encoding) = self.compression {
                grpc = grpc.send_compressed(encoding).accept_compressed(encoding);
            }
            grpc.ready().await.map_err(|e| ExportError::Retryable {
                message: format!("connection not ready: {e}"),
                retry_after: None,
            })?;
            let mut request = tonic::Request::new(batch.byte_chunks());
            request.set_timeout(self.timeout);
            for (key, value) in &self.metadata {
                request.metadata_mut().insert(key.clone(), value.clone());
            }
            let path = PathAndQuery::from_static(batch.signal.grpc_path());
            match grpc
                .unary::<Vec<Bytes>, Bytes, RawCodec>(request, path, RawCodec)
                .await
            {
                Ok(response) => Ok(super::decode::partial_success(
                    batch.signal,
                    response.get_ref(),
                )),
                Err(status) => Err(classify(&status)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_otlp_retry_rules() {
        let retryable = |status: Status| matches!(classify(&status), ExportError::Retryable { .. });
        assert!(retryable(Status::unavailable("down")));
        assert!(retryable(Status::deadline_exceeded("slow")));
        assert!(
            retryable(Status::new(Code::Unknown, "transport error")),
            "a dropped connection is retried"
        );
        assert!(!retryable(Status::invalid_argument("bad data")));
        assert!(!retryable(Status::unauthenticated("who")));
        assert!(!retryable(Status::new(
            Code::Unknown,
            "application said no"
        )));
        assert!(
            !retryable(Status::resource_exhausted("too big")),
            "no RetryInfo: not retried"
        );
        let throttled = Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        match classify(&throttled) {
            ExportError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)))
            }
            other => panic!("{other:?}"),
        }
    }
}
