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

use super::{Receiver, ReceiverContext};
use crate::component::{ComponentError, ComponentId};
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
    ) -> Result<JoinHandle<()>, ComponentError> {
        let what = format!("receiver {} (grpc)", self.id);
        let tls = match &config.tls {
            Some(tls) => Some(
                crate::net::server_tls(&tls.cert_file, &tls.key_file, &[b"h2"])
                    .map_err(|e| ComponentError::build(&what, e))?,
            ),
            None => None,
        };
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
        let read_timeout = config.connections.read_timeout;
        tracing::info!(receiver = %self.id, endpoint = %config.endpoint, "OTLP/gRPC receiver listening");
        // Served by the same HTTP/2 server as every other listener, so the same connection limits and
        // timeouts apply.
        Ok(tokio::spawn(crate::net::serve_limited(
            listener,
            tls,
            move |request| {
                let mut service = service.clone();
                async move { service.call_timed(request, read_timeout).await }
            },
            context.shutdown.clone(),
            DRAIN,
            config.connections.limits(true),
        )))
    }

    async fn start_http(
        &self,
        config: &HttpConfig,
        context: &ReceiverContext,
    ) -> Result<JoinHandle<()>, ComponentError> {
        let what = format!("receiver {} (http)", self.id);
        let tls = match &config.tls {
            Some(tls) => Some(
                crate::net::server_tls(&tls.cert_file, &tls.key_file, &[b"h2", b"http/1.1"])
                    .map_err(|e| ComponentError::build(&what, e))?,
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
            config.connections.read_timeout,
        ));
        let shutdown = context.shutdown.clone();
        tracing::info!(receiver = %self.id, endpoint = %config.endpoint, "OTLP/HTTP receiver listening");
        Ok(tokio::spawn(crate::net::serve_limited(
            listener,
            tls,
            move |request| {
                let handler = handler.clone();
                async move { handler.handle(request).await }
            },
            shutdown,
            DRAIN,
            config.connections.limits(false),
        )))
    }
}

impl Receiver for OtlpReceiver {
    fn start(
        &self,
        context: ReceiverContext,
    ) -> BoxFuture<'_, Result<Vec<JoinHandle<()>>, ComponentError>> {
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
