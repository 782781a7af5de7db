//! What every exporter that POSTs shares: the HTTP(S) client, one request read whole within a time limit,
//! `Retry-After`, and the retry loop of exporters that retry inside themselves (a batch they must not
//! translate twice). Used by `otlphttp`, `prometheusremotewrite` and `loki`.

use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio_rustls::rustls;

use super::{Backoff, ExportError, RetrySettings};

/// The client every POSTing exporter uses.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Client TLS for HTTPS endpoints.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientTls {
    /// A PEM CA bundle to trust instead of the system roots.
    pub ca_file: Option<String>,
}

/// The HTTP(S) client of exporters that POST: h1/h2, TLS with the system roots or `tls.ca_file`.
pub fn http_client(tls_config: &HttpClientTls) -> Result<HttpClient, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &tls_config.ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| format!("cannot read `{ca}`: {e}"))?;
            for cert in
                <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
                    &pem,
                )
            {
                let cert = cert.map_err(|e| format!("`{ca}` is not a PEM bundle: {e}"))?;
                roots.add(cert).map_err(|e| format!("`{ca}`: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    Ok(client)
}

/// Parses `Retry-After`: delay seconds or an HTTP date.
pub fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// `Retry-After`, when the server (or a proxy) sent one.
    pub retry_after: Option<Duration>,
    /// Whether the body is protobuf (`Content-Type: application/x-protobuf`).
    pub protobuf: bool,
    /// The body; empty when it could not be read.
    pub body: Bytes,
}

/// One POST of `body` to `url` with `headers` (content type and encoding included) and Vigil's `User-Agent`,
/// answered and read within `timeout`. No answer in time and network errors are retryable.
pub async fn post(
    client: &HttpClient,
    url: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, ExportError> {
    let mut request = Request::post(url.clone())
        .header(
            header::USER_AGENT,
            concat!("vigil-collector/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| ExportError::Permanent {
            message: format!("cannot build request: {e}"),
        })?;
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| ExportError::Retryable {
                message: format!("POST {url}: {e}"),
                retry_after: None,
            })?;
        let status = response.status();
        let retry_after = retry_after(response.headers().get(header::RETRY_AFTER));
        let protobuf = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf"));
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Reply {
            status,
            retry_after,
            protobuf,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ExportError::Retryable {
            message: format!("POST {url}: no response within {timeout:?}"),
            retry_after: None,
        }),
    }
}

/// Runs `attempt` until it succeeds or fails for good, waiting between retryable failures as `settings` say
/// (and at least `Retry-After`); each wait is logged with `what`. When the retries run out, the last
/// retryable error is returned.
pub async fn retrying<T, F, Fut>(
    settings: &RetrySettings,
    what: &str,
    mut attempt: F,
) -> Result<T, ExportError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ExportError>>,
{
    let mut backoff = Backoff::new(settings);
    loop {
        match attempt().await {
            Err(ExportError::Retryable {
                message,
                retry_after,
            }) => match backoff.next_wait(retry_after) {
                Some(wait) => {
                    tracing::warn!(error = %message, retry_in_ms = wait.as_millis() as u64,
                        "{what} failed; will retry");
                    tokio::time::sleep(wait).await;
                }
                None => {
                    return Err(ExportError::Retryable {
                        message,
                        retry_after,
                    });
                }
            },
            other => return other,
        }
    }
}
