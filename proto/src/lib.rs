//! Wire types for Vigil.
//!
//! Every protocol message Vigil sends or receives comes from this crate, so the SDK, the collector, the load
//! generator and the tests agree on one definition.
//!
//! * [`rpc`] holds `google.rpc.Status`, the OTLP/HTTP error body.
//! * [`prometheus`] holds the Prometheus remote-write 1.0 messages.
//! * [`loki`] holds Grafana Loki's push messages and a direct encoder for them.
//! * [`grpc_codec`] (feature `grpc`) is a tonic codec that passes message bytes through untouched.
//! * [`otlp`] re-exports the OTLP messages of `opentelemetry-proto` (with its OTLP/JSON serde support) and adds
//!   [`otlp::scan`], a zero-copy validator that walks an encoded `Export*ServiceRequest` without building it.
//!
//! Design decision: the collector keeps OTLP payloads as the bytes they arrived in (`bytes::Bytes`) and only decodes
//! them when a component must look inside. A protobuf `repeated` field is the concatenation of its entries, so
//! batching two requests is concatenating their bytes. The alternative, decoding every request into owned structs,
//! costs two allocations per attribute and was rejected for the receive path. What the full decode would still
//! give us, a guarantee that the payload is well formed, [`otlp::scan`] gives without allocating.
//!
//! ```
//! use vigil_proto::otlp::{scan, Signal};
//! use vigil_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
//! use prost::Message;
//!
//! let request = ExportTraceServiceRequest::default();
//! let bytes = request.encode_to_vec();
//! let summary = scan::scan(Signal::Traces, &bytes).expect("an empty request is valid");
//! assert_eq!(summary.items, 0);
//! ```
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "grpc")]
pub mod grpc_codec;
pub mod loki;
pub mod otlp;
pub mod prometheus;
pub mod rpc;
