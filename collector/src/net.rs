//! Serving HTTP (1.1 and h2, optionally over TLS) with graceful shutdown; shared by every listener that is not
//! gRPC: the OTLP/HTTP receiver, the health check and the self-metrics endpoint.

use std::future::Future;
use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Binds a TCP listener, with an error that names the component and address.
pub async fn bind(what: &str, endpoint: &str) -> Result<TcpListener, String> {
    let address = crate::config::parse_listen_address(endpoint)?;
    TcpListener::bind(address)
        .await
        .map_err(|e| format!("{what}: cannot listen on {endpoint}: {e}"))
}

/// Loads a PEM certificate chain and key into a rustls server config offering h2 and http/1.1.
pub fn server_tls(
    cert_file: &str,
    key_file: &str,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let open = |path: &str| {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|e| format!("cannot read `{path}`: {e}"))
    };
    let certs = rustls_pemfile::certs(&mut open(cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{cert_file}` is not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err(format!("`{cert_file}` holds no PEM certificate"));
    }
    let key = rustls_pemfile::private_key(&mut open(key_file)?)
        .map_err(|e| format!("`{key_file}` is not a PEM private key: {e}"))?
        .ok_or_else(|| format!("`{key_file}` holds no private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!("`{cert_file}` and `{key_file}` do not form a usable certificate: {e}")
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Serves `handler` on `listener` until `shutdown` turns true, then lets in-flight requests finish (at most
/// `drain` long).
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .max_concurrent_streams(1024)
        .max_frame_size(1 << 20);
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let (stream, _peer) = tokio::select! {
            biased;
            _ = crate::pipeline::raised(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let builder = builder.clone();
        match &acceptor {
            None => {
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = watched.await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(connection).await;
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
}

/// A plain-text response.
pub fn text(status: http::StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
