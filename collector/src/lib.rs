//! `vigil-collector`: receives OTLP from any language, processes it, and exports it — without ever losing
//! accepted data silently.
//!
//! A span's path through the code follows the folders:
//! [`receiver`] (OTLP over gRPC and HTTP, validated without decoding) → [`pipeline`] (bounded queues and the
//! [`pipeline::Consumer`] hand-off whose error is the backpressure) → [`processor`] (`batch`) → [`exporter`]
//! (`otlp`, `otlphttp`, `file`, `debug`, `nop`, each behind a sending queue with retries). [`config`] reads the
//! otelcol-shaped YAML, [`service`] assembles and runs pipelines from it, [`telemetry`] is the collector
//! watching itself, and [`extension`] holds the health check. Components build themselves from their config
//! section with the leaf [`component`] module and share [`prometheus`], [`delivery`] and [`pipeline::precheck`];
//! none imports another component or [`config`].
//!
//! Design decision: data stays in its wire encoding (`bytes::Bytes`) from the socket to the exporter, and
//! admission is the only place data may be refused. The alternative, decoding into owned structs and buffering
//! freely (as the OpenTelemetry Collector's batch processor does), is both slower and the source of its known
//! silent drops under backpressure.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = vigil_collector::config::Config::default_config()?;
//! let running = vigil_collector::service::start(config).await?;
//! // … serve until a signal arrives …
//! let report = running.shutdown().await;
//! assert_eq!(report.total(), 0);
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod alert;
pub mod component;
pub mod config;
pub mod connector;
pub mod delivery;
pub mod exporter;
pub mod extension;
pub use vigil_proto::grpc_codec;
pub mod net;
pub mod pipeline;
pub mod processor;
pub mod prometheus;
pub mod receiver;
pub mod service;
pub mod telemetry;
