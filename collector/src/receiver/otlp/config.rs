//! Configuration of the `otlp` receiver.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// `receivers.otlp`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// Which transports to serve.
    #[serde(default)]
    pub protocols: Protocols,
}

/// `protocols`: a key that is present (even empty) turns its transport on.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC.
    #[serde(default, deserialize_with = "present")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP (protobuf and JSON).
    #[serde(default, deserialize_with = "present")]
    pub http: Option<HttpConfig>,
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols {
            grpc: Some(GrpcConfig::default()),
            http: Some(HttpConfig::default()),
        }
    }
}

/// Treats `grpc:` with no value as "on, with defaults".
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

/// Default OTLP/gRPC listen address (loopback, so a default start exposes nothing).
pub const DEFAULT_GRPC_ENDPOINT: &str = "127.0.0.1:4317";
/// Default OTLP/HTTP listen address.
pub const DEFAULT_HTTP_ENDPOINT: &str = "127.0.0.1:4318";
/// Default largest request, after decompression: the 64 MiB OTLP recommends.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 << 20;

/// Default most client connections per transport.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default longest wait for a request's headers.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait for a whole request body.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest a connection may sit without a request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default HTTP/2 ping interval.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default wait for a ping's answer.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Connection limits and timeouts, the same keys on both transports. A client that opens connections and
/// sends nothing, or sends slowly, cannot hold the collector's descriptors or memory.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    /// Most client connections open at once; further connections are closed at once until some end.
    pub max_connections: usize,
    /// Longest wait for a request's headers (HTTP/1) or for a TLS handshake.
    #[serde(with = "crate::component::duration")]
    pub read_header_timeout: Duration,
    /// Longest wait for a whole request body; a slower request is answered 408 / `DEADLINE_EXCEEDED`.
    #[serde(with = "crate::component::duration")]
    pub read_timeout: Duration,
    /// A connection without a request for this long is closed.
    #[serde(with = "crate::component::duration")]
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive: ping an idle connection this often…
    #[serde(with = "crate::component::duration")]
    pub keepalive_interval: Duration,
    /// …and close it when a ping goes unanswered this long.
    #[serde(with = "crate::component::duration")]
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }
}

impl ConnectionConfig {
    /// The listener's limits.
    pub fn limits(&self, http2_only: bool) -> crate::net::ConnectionLimits {
        crate::net::ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: self.read_header_timeout,
            idle_timeout: self.idle_timeout,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            http2_only,
        }
    }

    /// Reports zero limits, which would refuse every client or close every connection at once.
    pub fn validate(&self, check: &mut crate::component::Checker<'_>, path: &str) {
        if self.max_connections == 0 {
            check.error(&format!("{path}.max_connections"), "must be at least 1");
        }
        for (key, value) in [
            ("read_header_timeout", self.read_header_timeout),
            ("read_timeout", self.read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if value.is_zero() {
                check.error(&format!("{path}.{key}"), "must be longer than 0s");
            }
        }
    }
}

/// `protocols.grpc`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Largest accepted message in MiB, after decompression.
    pub max_recv_msg_size_mib: usize,
    /// TLS; plaintext when absent.
    pub tls: Option<TlsConfig>,
    /// Client authentication; none when absent.
    pub auth: Option<AuthConfig>,
    /// Connection limits and timeouts.
    pub connections: ConnectionConfig,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: DEFAULT_GRPC_ENDPOINT.into(),
            max_recv_msg_size_mib: DEFAULT_MAX_REQUEST_BYTES >> 20,
            tls: None,
            auth: None,
            connections: ConnectionConfig::default(),
        }
    }
}

/// `protocols.http`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    /// Largest accepted body in bytes, both as sent and after decompression.
    pub max_request_body_size: usize,
    /// TLS; plaintext when absent.
    pub tls: Option<TlsConfig>,
    /// Client authentication; none when absent.
    pub auth: Option<AuthConfig>,
    /// Connection limits and timeouts.
    pub connections: ConnectionConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: DEFAULT_HTTP_ENDPOINT.into(),
            max_request_body_size: DEFAULT_MAX_REQUEST_BYTES,
            tls: None,
            auth: None,
            connections: ConnectionConfig::default(),
        }
    }
}

/// Server TLS: PEM certificate chain and private key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Path of the PEM certificate chain.
    pub cert_file: String,
    /// Path of the PEM private key.
    pub key_file: String,
}

/// Client authentication.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Requests must carry `Authorization: Bearer <token>`. Use `${env:NAME}` to keep it out of the file.
    pub bearer_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never print it.
        f.write_str("AuthConfig { bearer_token: \"[REDACTED]\" }")
    }
}

impl AuthConfig {
    /// Whether an `Authorization` header value carries the configured token (compared in constant time).
    pub fn allows(&self, header: Option<&[u8]>) -> bool {
        let Some(header) = header else { return false };
        let Some(token) = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
        else {
            return false;
        };
        let expected = self.bearer_token.as_bytes();
        token.len() == expected.len()
            && token
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl OtlpReceiverConfig {
    /// `(config path, endpoint)` for each enabled transport.
    pub fn listen_endpoints(&self, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(grpc) = &self.protocols.grpc {
            out.push((
                format!("{path}.protocols.grpc.endpoint"),
                grpc.endpoint.clone(),
            ));
        }
        if let Some(http) = &self.protocols.http {
            out.push((
                format!("{path}.protocols.http.endpoint"),
                http.endpoint.clone(),
            ));
        }
        out
    }
}
