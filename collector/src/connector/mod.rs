//! Connectors: the exporter of one pipeline and the receiver of another, as in otelcol. A connector is
//! declared under `connectors:` and listed in a pipeline's `exporters` (its input signal) and in another
//! pipeline's `receivers` (its output signal).
//!
//! On the input side the service wraps a connector in the same worker as an exporter ([`ConnectorExporter`]),
//! so it gets a bounded queue, backpressure and item accounting for free. On the output side it hands what it
//! produces to the entry of every pipeline that lists it as a receiver.

pub mod spanmetrics;

use std::sync::Arc;

use serde_json::Value;
use vigil_proto::otlp::Signal;

use crate::component::{Checker, ComponentError, ComponentId};
use crate::exporter::{ExportError, Exported, Exporter, QueueSettings};
use crate::pipeline::{Batch, BoxFuture, SharedConsumer};
use crate::telemetry::Registry;

/// A connector: consumes batches of one signal, produces batches of another.
pub trait Connector: Send + Sync + 'static {
    /// Takes one batch of the input signal (called by the worker's consumers).
    fn consume<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>>;

    /// Starts producing into `outputs`, the entries of the pipelines that list the connector as a receiver.
    fn start(self: Arc<Self>, outputs: Vec<SharedConsumer>);

    /// Produces what it still holds and stops; called once, after the last `consume`.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// A connector seen from its input pipeline: an exporter.
pub struct ConnectorExporter(pub Arc<dyn Connector>);

impl Exporter for ConnectorExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        self.0.consume(batch)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.0.shutdown()
    }
}

/// A connector's configuration, by type.
#[derive(Clone, Debug)]
pub enum ConnectorConfig {
    /// `spanmetrics`: request rate, errors and duration (RED) metrics from spans.
    SpanMetrics(spanmetrics::SpanMetricsConfig),
    /// `alerting`: alerting and recording rules over metrics, with notifications.
    Alerting(Box<crate::alert::AlertingConfig>),
}

impl ConnectorConfig {
    /// The factory: decodes the section of a connector of type `kind`.
    pub fn decode(check: &mut Checker<'_>, path: &str, kind: &str, value: &Value) -> Option<Self> {
        match kind {
            "spanmetrics" => {
                let config: spanmetrics::SpanMetricsConfig = check.decode(path, value)?;
                config.validate(check, path);
                reject_storage(check, path, &config.sending_queue);
                Some(ConnectorConfig::SpanMetrics(config))
            }
            "alerting" => {
                let mut config: crate::alert::AlertingConfig = check.decode(path, value)?;
                config.validate(check, path);
                reject_storage(check, path, &config.sending_queue);
                Some(ConnectorConfig::Alerting(Box::new(config)))
            }
            other => {
                check.error(
                    path,
                    format!("unknown connector type `{other}`; known types: spanmetrics, alerting"),
                );
                None
            }
        }
    }

    /// The signal it consumes (it is listed as an exporter of pipelines of this signal).
    pub fn input(&self) -> Signal {
        match self {
            ConnectorConfig::SpanMetrics(_) => Signal::Traces,
            ConnectorConfig::Alerting(_) => Signal::Metrics,
        }
    }

    /// The signal it produces (it is listed as a receiver of pipelines of this signal).
    pub fn output(&self) -> Signal {
        match self {
            ConnectorConfig::SpanMetrics(_) | ConnectorConfig::Alerting(_) => Signal::Metrics,
        }
    }

    /// The queue in front of its input side.
    pub fn queue(&self) -> &QueueSettings {
        match self {
            ConnectorConfig::SpanMetrics(c) => &c.sending_queue,
            ConnectorConfig::Alerting(c) => &c.sending_queue,
        }
    }

    /// Builds it.
    pub fn build(
        &self,
        id: &ComponentId,
        registry: &Registry,
    ) -> Result<Arc<dyn Connector>, ComponentError> {
        Ok(match self {
            ConnectorConfig::SpanMetrics(c) => {
                Arc::new(spanmetrics::SpanMetrics::new(c, &id.to_string(), registry))
            }
            ConnectorConfig::Alerting(c) => Arc::new(
                crate::alert::Alerting::new(c, &id.to_string(), registry)
                    .map_err(|reason| ComponentError::build(format!("connector {id}"), reason))?,
            ),
        })
    }
}

/// A connector turns data into other data in memory at once: a persistent queue in front of it would store
/// what it consumes in microseconds. Its output pipelines' exporters can have one.
fn reject_storage(check: &mut Checker<'_>, path: &str, queue: &QueueSettings) {
    if queue.storage.is_some() {
        check.error(
            &format!("{path}.sending_queue.storage"),
            "connectors keep their queue in memory; give the exporters of the pipeline it feeds a \
             persistent queue instead",
        );
    }
}
