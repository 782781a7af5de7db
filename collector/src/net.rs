//! Serving HTTP (1.1 and h2, optionally over TLS) with graceful shutdown; shared by every listener that is not
//! gRPC: the OTLP/HTTP receiver, the health check and the self-metrics endpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::component::ComponentError;

/// Binds a TCP listener, with an error that names the component and address.
pub async fn bind(what: &str, endpoint: &str) -> Result<TcpListener, ComponentError> {
    let address = crate::component::parse_listen_address(endpoint)
        .map_err(|reason| ComponentError::build(what, reason))?;
    TcpListener::bind(address)
        .await
        .map_err(|source| ComponentError::Bind {
            what: what.to_string(),
            endpoint: endpoint.to_string(),
            source,
        })
}

/// Raises the soft limit on open files to the hard limit (as Go programs such as the OpenTelemetry Collector
/// do at start) and returns the soft limit now in force; `None` where it cannot be read.
pub fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write and read the one struct passed; no other memory is touched.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every target
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Loads a PEM certificate chain and key into a rustls server config offering h2 and http/1.1.
pub fn server_tls(
    cert_file: &str,
    key_file: &str,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"));
    let chain = read(cert_file)?;
    let certs = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{cert_file}` is not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err(format!("`{cert_file}` holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!("`{key_file}` holds no private key"),
        other => format!("`{key_file}` is not a PEM private key: {other}"),
    })?;
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

/// What a listener allows its client connections: how many, and how long each may take or sit idle.
///
/// A connection that sits idle (no request in flight, none finished) for `idle_timeout` is closed gracefully;
/// one still open `CLOSE_GRACE` later is dropped. HTTP/1 request headers must arrive within
/// `header_read_timeout`; HTTP/2 connections are pinged every `keepalive_interval` and closed when a ping goes
/// unanswered for `keepalive_timeout`. Over `max_connections`, new connections are accepted and closed at once,
/// so clients see an immediate error instead of a connect timeout; the listener keeps serving the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Longest wait for an HTTP/1 request's headers.
    pub header_read_timeout: Duration,
    /// Longest a connection may sit without a request before it is closed.
    pub idle_timeout: Duration,
    /// How often idle HTTP/2 connections are pinged.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered.
    pub keepalive_timeout: Duration,
    /// Serve HTTP/2 only (gRPC), not HTTP/1.
    pub http2_only: bool,
}

impl ConnectionLimits {
    /// Limits for the collector's own endpoints (health check, self-metrics, the Prometheus exporter): a few
    /// scrapers and probes, never starved by data clients, which connect to other listeners.
    pub const INTERNAL: ConnectionLimits = ConnectionLimits {
        max_connections: 128,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(20),
        http2_only: false,
    };
}

/// How long an idle connection asked to close may take before it is dropped (at shutdown, the listener's
/// drain time applies instead).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Requests in flight on one connection and when the last one started or finished (atomics: this is touched
/// twice per request on the hot path).
struct Activity {
    /// When the connection was accepted; `last_change` counts milliseconds from it.
    opened: tokio::time::Instant,
    in_flight: AtomicUsize,
    last_change: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_change.store(now, Ordering::Release);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.last_change.load(Ordering::Acquire));
        Some(self.opened.elapsed().saturating_sub(since))
    }
}

/// Marks a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `handler` on `listener` with [`ConnectionLimits::INTERNAL`] until `shutdown` turns true, then lets
/// in-flight requests finish (at most `drain` long).
pub async fn serve<H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_limited(
        listener,
        tls,
        handler,
        shutdown,
        drain,
        ConnectionLimits::INTERNAL,
    )
    .await
}

/// Serves `handler` on `listener` within `limits` until `shutdown` turns true, then lets in-flight requests
/// finish (at most `drain` long).
pub async fn serve_limited<H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    limits: ConnectionLimits,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if limits.http2_only {
        builder = builder.http2_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .max_concurrent_streams(1024)
        // Large frames let clients send a request in one DATA frame: fewer frames, reads and wake-ups.
        .max_frame_size(1 << 20)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut refused_at: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = crate::pipeline::raised(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; pausing 50ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once: the client sees a reset now rather than a connect timeout later.
            if refused_at.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    %peer,
                    "connection limit reached; closing new connections until some end"
                );
                refused_at = Some(tokio::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let handler = handler.clone();
        let tracked = activity.clone();
        let service = hyper::service::service_fn(move |request| {
            let in_flight = InFlight::new(&tracked);
            let response = handler(request);
            async move {
                let response = response.await;
                drop(in_flight);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watch_connection(connection, &activity, limits.idle_timeout, stop, drain).await;
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watch_connection(connection, &activity, limits.idle_timeout, stop, drain).await;
                }
            }
        });
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means every connection has drained.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(drain, slots.acquire_many(all)).await;
}

/// Runs one connection until it ends, closing it gracefully when it sits idle for `idle_timeout` (dropping it
/// if it has not closed `CLOSE_GRACE` later) or when `shutdown` rises (its requests get `drain` to finish).
async fn watch_connection<C>(
    connection: C,
    activity: &Activity,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) where
    C: GracefulConnection,
{
    tokio::pin!(connection);
    let period = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = loop {
        tokio::select! {
            _ = &mut connection => return,
            _ = crate::pipeline::raised(&mut shutdown) => break drain,
            _ = ticks.tick() => {
                if activity.idle_for().is_some_and(|idle| idle >= idle_timeout) {
                    break CLOSE_GRACE;
                }
            }
        }
    };
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, connection).await;
}

/// A served connection that can be asked to finish its requests and close.
trait GracefulConnection: Future + Send {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConnection for auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B> + Send,
    Self: Future + Send,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self)
    }
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
