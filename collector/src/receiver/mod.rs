//! Receivers: where data enters the collector. Each receiver type lives in its own folder.

pub mod otlp;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_proto::otlp::Signal;

use crate::component::{Checker, ComponentError, ComponentId};
use crate::pipeline::precheck::SharedPrecheck;
use crate::pipeline::{Batch, BoxFuture, Consumer, Refusal, SharedConsumer};
use crate::telemetry::Registry;

/// A receiver's configuration, by type.
#[derive(Clone, Debug)]
pub enum ReceiverConfig {
    /// `otlp`: OTLP over gRPC and HTTP.
    Otlp(otlp::OtlpReceiverConfig),
}

impl ReceiverConfig {
    /// The factory: decodes the section of a receiver of type `kind`.
    pub fn decode(check: &mut Checker<'_>, path: &str, kind: &str, value: &Value) -> Option<Self> {
        match kind {
            "otlp" => {
                let config: otlp::OtlpReceiverConfig = check.decode(path, value)?;
                if config.protocols.grpc.is_none() && config.protocols.http.is_none() {
                    check.error(
                        &format!("{path}.protocols"),
                        "enable at least one of `grpc` and `http`",
                    );
                    return None;
                }
                if let Some(grpc) = &config.protocols.grpc {
                    grpc.connections
                        .validate(check, &format!("{path}.protocols.grpc.connections"));
                }
                if let Some(http) = &config.protocols.http {
                    http.connections
                        .validate(check, &format!("{path}.protocols.http.connections"));
                }
                Some(ReceiverConfig::Otlp(config))
            }
            other => {
                check.error(
                    path,
                    format!("unknown receiver type `{other}`; known types: otlp"),
                );
                None
            }
        }
    }

    /// `(config path, host:port)` of each socket this receiver will listen on.
    pub fn listen_endpoints(&self, path: &str) -> Vec<(String, String)> {
        match self {
            ReceiverConfig::Otlp(c) => c.listen_endpoints(path),
        }
    }

    /// Builds the receiver.
    pub fn build(&self, id: &ComponentId) -> Box<dyn Receiver> {
        match self {
            ReceiverConfig::Otlp(c) => Box::new(otlp::OtlpReceiver::new(id.clone(), c.clone())),
        }
    }
}

/// Where a receiver sends each signal: one consumer per signal, absent when no pipeline takes it.
#[derive(Clone, Default)]
pub struct Outputs {
    by_signal: BTreeMap<Signal, SharedConsumer>,
    prechecks: BTreeMap<Signal, SharedPrecheck>,
    durable: std::collections::BTreeSet<Signal>,
}

impl Outputs {
    /// Adds a pipeline entry for `signal`; several pipelines of one signal each get every batch.
    pub fn add(&mut self, signal: Signal, consumer: SharedConsumer) {
        let merged: SharedConsumer = match self.by_signal.remove(&signal) {
            None => consumer,
            Some(existing) => Arc::new(Broadcast(vec![existing, consumer])),
        };
        self.by_signal.insert(signal, merged);
    }

    /// Asks the receiver to validate each `signal` request through `check`, for a processor down a pipeline
    /// (see [`crate::pipeline::precheck`]). One check per signal runs in the receiver's walk; a second
    /// pipeline with another check gets requests without its mark, and its processor walks them itself.
    pub fn add_precheck(&mut self, signal: Signal, check: SharedPrecheck) {
        self.prechecks.entry(signal).or_insert(check);
    }

    /// The check each `signal` request is validated through, if any.
    pub fn precheck(&self, signal: Signal) -> Option<&SharedPrecheck> {
        self.prechecks.get(&signal)
    }

    /// Says that a `signal` pipeline ends in a persistent queue: clients are answered only once it stored
    /// their data.
    pub fn require_durability(&mut self, signal: Signal) {
        self.durable.insert(signal);
    }

    /// Whether clients sending `signal` wait for a persistent queue to store their data.
    pub fn durable(&self, signal: Signal) -> bool {
        self.durable.contains(&signal)
    }

    /// The consumer for `signal`, if a pipeline takes it.
    pub fn get(&self, signal: Signal) -> Option<&SharedConsumer> {
        self.by_signal.get(&signal)
    }
}

/// Several pipelines fed by one receiver.
///
/// Pipelines are independent: if one refuses, the client is asked to retry and the pipelines that already
/// accepted will see that data twice. Refusing is never silent loss; duplicates are the lesser harm.
struct Broadcast(Vec<SharedConsumer>);

impl Consumer for Broadcast {
    fn try_consume(&self, batch: Batch) -> Result<(), Refusal> {
        let mut result = Ok(());
        for consumer in &self.0 {
            if let Err(refusal) = consumer.try_consume(batch.clone()) {
                result = Err(refusal);
            }
        }
        result
    }

    fn consume(&self, batch: Batch) -> BoxFuture<'_, Result<(), Refusal>> {
        Box::pin(async move {
            for consumer in &self.0 {
                consumer.consume(batch.clone()).await?;
            }
            Ok(())
        })
    }
}

/// What a receiver needs to run.
pub struct ReceiverContext {
    /// Pipeline entries per signal.
    pub outputs: Outputs,
    /// Self-metrics.
    pub registry: Registry,
    /// Turns `true` when the receiver must stop accepting.
    pub shutdown: watch::Receiver<bool>,
}

/// A receiver: binds its sockets in [`Receiver::start`] and serves until shutdown.
pub trait Receiver: Send + Sync {
    /// Binds and starts serving. Errors (port in use, bad certificate) are returned, not logged.
    /// The returned tasks finish once the receiver has stopped and answered its in-flight requests.
    fn start(
        &self,
        context: ReceiverContext,
    ) -> BoxFuture<'_, Result<Vec<JoinHandle<()>>, ComponentError>>;
}
