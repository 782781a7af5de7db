//! Receiver `otlp`: OTLP over gRPC (default `127.0.0.1:4317`) and HTTP (default `127.0.0.1:4318`).
//!
//! Both transports share [`ingest::Ingest`]: the payload is validated by `vigil_proto::otlp::scan` without being
//! decoded, entries with invalid content are rejected as a partial success, and the rest is admitted into the
//! pipelines; a full pipeline is answered with a retryable error carrying a retry hint.

mod config;
pub mod grpc;
pub mod http;
pub mod ingest;

use std::sync::Arc;
use std::time::Duration;

pub use config::*;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};

use super::{Receiver, ReceiverContext};
use crate::config::ComponentId;
use crate::pipeline::BoxFuture;

/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// The `otlp` receiver.
pub struct OtlpReceiver {
    id: ComponentId,
    config: OtlpReceiverConfig,
}

impl OtlpReceiver {
    /// A receiver built from its config section.
    pub fn new(id: ComponentId, config: OtlpReceiverConfig) -> Self {
        OtlpReceiver { id, config }
    }

    async fn start_grpc(
        &self,
        config: &GrpcConfig,
        context: &ReceiverContext,
    ) -> Result<JoinHandle<()>, String> {
        let what = format!("receiver {} (grpc)", self.id);
        let listener = crate::net::bind(&what, &config.endpoint).await?;
        let ingest = Arc::new(ingest::Ingest::new(
            &self.id.to_string(),
            "grpc",
            context.outputs.clone(),
            &context.registry,
        ));
        let service = grpc::OtlpGrpcService::new(
            ingest,
            config.auth.clone(),
            config.max_recv_msg_size_mib << 20,
        );
        let mut server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(8 << 20)
            .max_concurrent_streams(1024)
            // Large frames let clients send a request in one DATA frame: fewer frames, reads and wake-ups.
            .max_frame_size(1 << 20)
            .http2_keepalive_interval(Some(Duration::from_secs(60)));
        if let Some(tls) = &config.tls {
            let read = |path: &str| {
                std::fs::read(path).map_err(|e| format!("{what}: cannot read `{path}`: {e}"))
            };
            let identity = Identity::from_pem(read(&tls.cert_file)?, read(&tls.key_file)?);
            // Fail at start, not at the first handshake, when the files are not a usable certificate.
            crate::net::server_tls(&tls.cert_file, &tls.key_file, &[b"h2"])
                .map_err(|e| format!("{what}: {e}"))?;
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(|e| format!("{what}: TLS setup failed: {e}"))?;
        }
        let mut shutdown = context.shutdown.clone();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tracing::info!(receiver = %self.id, endpoint = %config.endpoint, "OTLP/gRPC receiver listening");
        Ok(tokio::spawn(async move {
            let signal = async move {
                crate::pipeline::raised(&mut shutdown).await;
            };
            if let Err(e) = server
                .serve_with_incoming_shutdown(service, incoming, signal)
                .await
            {
                tracing::error!(error = %e, "OTLP/gRPC server failed");
            }
        }))
    }

    async fn start_http(
        &self,
        config: &HttpConfig,
        context: &ReceiverContext,
    ) -> Result<JoinHandle<()>, String> {
        let what = format!("receiver {} (http)", self.id);
        let tls = match &config.tls {
            Some(tls) => Some(
                crate::net::server_tls(&tls.cert_file, &tls.key_file, &[b"h2", b"http/1.1"])
                    .map_err(|e| format!("{what}: {e}"))?,
            ),
            None => None,
        };
        let listener = crate::net::bind(&what, &config.endpoint).await?;
        let ingest = Arc::new(ingest::Ingest::new(
            &self.id.to_string(),
            "http",
            context.outputs.clone(),
            &context.registry,
        ));
        let handler = Arc::new(http::OtlpHttpHandler::new(
            ingest,
            config.auth.clone(),
            config.max_request_body_size,
        ));
        let shutdown = context.shutdown.clone();
        tracing::info!(receiver = %self.id, endpoint = %config.endpoint, "OTLP/HTTP receiver listening");
        Ok(tokio::spawn(crate::net::serve(
            listener,
            tls,
            move |request| {
                let handler = handler.clone();
                async move { handler.handle(request).await }
            },
            shutdown,
            DRAIN,
        )))
    }
}

impl Receiver for OtlpReceiver {
    fn start(
        &self,
        context: ReceiverContext,
    ) -> BoxFuture<'_, Result<Vec<JoinHandle<()>>, String>> {
        Box::pin(async move {
            let mut tasks = Vec::new();
            if let Some(grpc) = &self.config.protocols.grpc {
                tasks.push(self.start_grpc(grpc, &context).await?);
            }
            if let Some(http) = &self.config.protocols.http {
                tasks.push(self.start_http(http, &context).await?);
            }
            Ok(tasks)
        })
    }
}
