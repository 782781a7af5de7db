//! OTLP messages (re-exported from `opentelemetry-proto`) and helpers shared by every Vigil component.

pub use opentelemetry_proto::tonic::{collector, common, logs, metrics, resource, trace};

pub mod fields;
pub mod json;
pub mod scan;
pub mod schema;
pub mod wire;

/// The three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    /// All signals, in the order they are listed in configs and self-metrics.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The lower-case name used in configs, URLs (`/v1/<name>`) and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The name of one item of this signal, as OTLP's partial-success fields spell it.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
        }
    }

    /// The gRPC method path of this signal's `Export` call.
    pub fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// Parses `traces`, `metrics` or `logs`.
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string attribute, the most common `KeyValue`.
pub fn string_attribute(key: &str, value: &str) -> common::v1::KeyValue {
    common::v1::KeyValue {
        key: key.into(),
        value: Some(common::v1::AnyValue {
            value: Some(common::v1::any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}
