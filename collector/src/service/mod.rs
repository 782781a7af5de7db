//! The service: assembles pipelines from a [`Config`], runs them, and shuts them down in order.
//!
//! Pipelines are built back to front: exporters first (each gets a sending queue and consumers), then a fan-out
//! over the pipeline's exporter queues, then each processor in reverse order wrapping the consumer after it, and
//! finally receivers are handed the entry consumer of every pipeline they feed.
//!
//! Shutdown runs the other way: receivers stop accepting and answer their in-flight requests, stateful
//! processors flush, exporters drain their queues, all within `service.shutdown_timeout`; whatever could not
//! be delivered by then is counted, logged and reported.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::component::{ComponentError, ComponentId};
use crate::config::Config;
use crate::connector::ConnectorExporter;
use crate::exporter::RetrySettings;
use crate::exporter::worker::ExporterWorker;
use crate::extension::ExtensionConfig;
use crate::extension::health_check::{self, Readiness};
use crate::pipeline::SharedConsumer;
use crate::pipeline::fanout::FanOut;
use crate::pipeline::memory::MemoryAccount;
use crate::processor::{ProcessorContext, StageTask};
use crate::receiver::{Outputs, ReceiverContext};
use crate::telemetry::{self, Registry};

/// A running collector.
pub struct Running {
    shutdown: watch::Sender<bool>,
    receiver_tasks: Vec<JoinHandle<()>>,
    /// Stateful stages per pipeline, front to back, with whether a connector feeds the pipeline.
    stages: Vec<(String, bool, Vec<StageTask>)>,
    exporters: BTreeMap<ComponentId, ExporterWorker>,
    /// The input sides of connectors.
    connectors: BTreeMap<ComponentId, ExporterWorker>,
    side_tasks: Vec<JoinHandle<()>>,
    /// Stops the health check and self-metrics endpoints: raised last, so drops during shutdown can be scraped.
    side_shutdown: watch::Sender<bool>,
    readiness: Readiness,
    registry: Registry,
    shutdown_timeout: std::time::Duration,
}

/// Counters of accepted items that were not delivered, whatever the reason: each item admitted by a receiver
/// is later exported or counted in one of these. (Items a sampler leaves out on purpose, and series a connector
/// folds into its overflow series, are decisions, not losses.)
pub const LOSS_COUNTERS: &[&str] = &[
    "vigil_exporter_dropped_items_total",
    "vigil_processor_dropped_items_total",
    "vigil_connector_dropped_items_total",
    "vigil_mask_failed_items_total",
    "vigil_prometheus_exporter_dropped_points_total",
];

/// What the collector could not deliver, read when it stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Items dropped because the shutdown deadline passed, by component.
    pub undelivered: BTreeMap<String, u64>,
    /// Every accepted item not delivered over the collector's life, by loss counter and labels
    /// (`vigil_exporter_dropped_items_total{exporter="otlp",reason="undecodable"}` → count); includes the
    /// shutdown losses above.
    pub dropped: BTreeMap<String, u64>,
}

impl ShutdownReport {
    /// Total accepted items not delivered; the process exits with status 3 when it is not zero.
    pub fn total(&self) -> u64 {
        let dropped: u64 = self.dropped.values().sum();
        dropped.max(self.undelivered.values().sum())
    }

    /// Reads every [`LOSS_COUNTERS`] series of `registry` into [`ShutdownReport::dropped`].
    fn read_losses(&mut self, registry: &Registry) {
        for name in LOSS_COUNTERS {
            for (labels, count) in registry.counter_series(name) {
                if count > 0 {
                    self.dropped.insert(format!("{name}{{{labels}}}"), count);
                }
            }
        }
    }
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A pipeline names a component the config does not define ([`Config`] loading reports this first; a
    /// config built in code may still have it).
    #[error("{kind} `{id}` is not defined")]
    Undefined {
        /// `receiver`, `processor`, `exporter` or `extension`.
        kind: &'static str,
        /// The id the pipeline names.
        id: ComponentId,
    },
    /// A component could not be built or started (port in use, unreadable certificate).
    #[error(transparent)]
    Component(#[from] ComponentError),
}

/// Builds and starts everything in `config`. Errors name the component (port in use, unreadable certificate).
pub async fn start(mut config: Config) -> Result<Running, StartError> {
    fit_connections_to_descriptors(&mut config);
    let registry = Registry::default();
    let memory = MemoryAccount::default();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let readiness = Readiness::default();

    let mut connectors = BTreeMap::new();
    let mut connector_workers = BTreeMap::new();
    for (id, connector_config) in &config.connectors {
        let connector = connector_config.build(id, &registry)?;
        let worker = ExporterWorker::start(
            &format!("connector/{id}"),
            Box::new(ConnectorExporter(connector.clone())),
            connector_config.queue(),
            RetrySettings {
                enabled: false,
                ..RetrySettings::default()
            },
            &registry,
        )?;
        connectors.insert(id.clone(), (connector, Vec::new()));
        connector_workers.insert(id.clone(), worker);
    }

    let mut exporters = BTreeMap::new();
    for pipeline in config.service.pipelines.values() {
        for id in &pipeline.exporters {
            if exporters.contains_key(id) || connectors.contains_key(id) {
                continue;
            }
            let Some(exporter_config) = config.exporters.get(id) else {
                return Err(StartError::Undefined {
                    kind: "exporter",
                    id: id.clone(),
                });
            };
            let exporter = exporter_config.build(id, &registry)?;
            let worker = ExporterWorker::start(
                &id.to_string(),
                exporter,
                exporter_config.queue(),
                exporter_config.retry(),
                &registry,
            )?;
            exporters.insert(id.clone(), worker);
        }
    }

    let mut outputs: BTreeMap<ComponentId, Outputs> = BTreeMap::new();
    let mut stages = Vec::new();
    for (pipeline_id, pipeline) in &config.service.pipelines {
        let name = pipeline_id.to_string();
        let queues: Vec<_> = pipeline
            .exporters
            .iter()
            .map(|id| match connector_workers.get(id) {
                Some(worker) => worker.queue(),
                None => exporters[id].queue(),
            })
            .collect();
        let durable = queues.iter().any(|queue| queue.is_persistent());
        let mut next: SharedConsumer = Arc::new(FanOut::new(queues));
        let mut pipeline_stages = Vec::new();
        for id in pipeline.processors.iter().rev() {
            let Some(processor) = config.processors.get(id) else {
                return Err(StartError::Undefined {
                    kind: "processor",
                    id: id.clone(),
                });
            };
            let context = ProcessorContext {
                id,
                pipeline: &name,
                signal: pipeline_id.signal,
                registry: &registry,
                memory: &memory,
            };
            let built = processor.build(context, next);
            next = built.entry;
            pipeline_stages.extend(built.stage);
        }
        pipeline_stages.reverse();
        let fed_by_connector = pipeline
            .receivers
            .iter()
            .any(|id| connectors.contains_key(id));
        stages.push((name, fed_by_connector, pipeline_stages));
        // Chunks keep the mark through processors that do not change them, so the first processor of the
        // pipeline that declares a check is the one whose check the receivers run.
        let precheck = pipeline
            .processors
            .iter()
            .find_map(|id| config.processors.get(id)?.precheck());
        for id in &pipeline.receivers {
            match connectors.get_mut(id) {
                Some((_, connector_outputs)) => connector_outputs.push(next.clone()),
                None => {
                    let receiver_outputs = outputs.entry(id.clone()).or_default();
                    receiver_outputs.add(pipeline_id.signal, next.clone());
                    if durable {
                        receiver_outputs.require_durability(pipeline_id.signal);
                    }
                    if let Some(check) = &precheck {
                        receiver_outputs.add_precheck(pipeline_id.signal, check.clone());
                    }
                }
            }
        }
    }
    for (connector, connector_outputs) in connectors.into_values() {
        connector.start(connector_outputs);
    }

    let mut receiver_tasks = Vec::new();
    for (id, receiver_outputs) in outputs {
        let Some(receiver_config) = config.receivers.get(&id) else {
            return Err(StartError::Undefined {
                kind: "receiver",
                id: id.clone(),
            });
        };
        let receiver = receiver_config.build(&id);
        let context = ReceiverContext {
            outputs: receiver_outputs,
            registry: registry.clone(),
            shutdown: shutdown_rx.clone(),
        };
        receiver_tasks.extend(receiver.start(context).await?);
    }

    // The health check and self-metrics outlive the pipelines: readiness turns false when shutdown starts,
    // but both keep answering until everything is drained, so shutdown drops can still be scraped.
    let (side_shutdown, side_shutdown_rx) = watch::channel(false);
    let mut side_tasks = Vec::new();
    for id in &config.service.extensions {
        match config.extensions.get(id) {
            Some(ExtensionConfig::HealthCheck(c)) => {
                side_tasks.push(
                    health_check::start(
                        c,
                        readiness.clone(),
                        registry.problems().clone(),
                        side_shutdown_rx.clone(),
                    )
                    .await?,
                );
            }
            None => {
                return Err(StartError::Undefined {
                    kind: "extension",
                    id: id.clone(),
                });
            }
        }
    }
    if let Some(address) = &config.service.telemetry.metrics.address {
        side_tasks.push(
            telemetry::serve_metrics(address, registry.clone(), side_shutdown_rx.clone()).await?,
        );
    }
    readiness.set(true);
    tracing::info!(
        pipelines = config.service.pipelines.len(),
        "collector started"
    );
    Ok(Running {
        shutdown,
        receiver_tasks,
        stages,
        exporters,
        connectors: connector_workers,
        side_tasks,
        side_shutdown,
        readiness,
        registry,
        shutdown_timeout: config.service.shutdown_timeout,
    })
}

/// Descriptors kept back from client connections: listeners, exporters' connections, files, the health
/// check and self-metrics endpoints.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Lowers the receivers' `max_connections` so that together they leave [`RESERVED_DESCRIPTORS`] of the
/// process's file limit free: clients that open every connection they may still cannot starve the health
/// check, the self-metrics endpoint or the exporters.
fn fit_connections_to_descriptors(config: &mut Config) {
    let Some(limit) = crate::net::raise_descriptor_limit() else {
        return;
    };
    let mut transports: Vec<&mut crate::receiver::otlp::ConnectionConfig> = Vec::new();
    for receiver in config.receivers.values_mut() {
        let crate::receiver::ReceiverConfig::Otlp(otlp) = receiver;
        if let Some(grpc) = &mut otlp.protocols.grpc {
            transports.push(&mut grpc.connections);
        }
        if let Some(http) = &mut otlp.protocols.http {
            transports.push(&mut http.connections);
        }
    }
    let wanted: u64 = transports.iter().map(|c| c.max_connections as u64).sum();
    let available = limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(transports.len() as u64);
    if wanted <= available {
        return;
    }
    for connections in transports {
        let share = (connections.max_connections as u64 * available / wanted).max(1);
        connections.max_connections = share as usize;
    }
    tracing::warn!(
        file_limit = limit,
        wanted,
        available,
        "receivers' max_connections exceed what the open-file limit allows; each was lowered in proportion \
         (raise `ulimit -n` to allow more)"
    );
}

impl Running {
    /// The collector's self-metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Stops accepting, drains pipelines and flushes exporters within `service.shutdown_timeout`.
    pub async fn shutdown(self) -> ShutdownReport {
        let deadline = Instant::now() + self.shutdown_timeout;
        let mut report = ShutdownReport::default();
        self.readiness.set(false);
        let _ = self.shutdown.send(true);
        for task in self.receiver_tasks {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        // Pipelines that feed connectors drain first, then the connectors hand on what they hold, then the
        // pipelines they feed drain.
        let (fed, feeding): (Vec<_>, Vec<_>) =
            self.stages.into_iter().partition(|(_, fed, _)| *fed);
        Self::drain_stages(feeding, deadline, &self.registry, &mut report).await;
        for (id, worker) in self.connectors {
            let lost = worker.shutdown(deadline).await;
            if lost > 0 {
                report.undelivered.insert(format!("connector {id}"), lost);
            }
        }
        Self::drain_stages(fed, deadline, &self.registry, &mut report).await;
        for (id, worker) in self.exporters {
            let lost = worker.shutdown(deadline).await;
            if lost > 0 {
                report.undelivered.insert(format!("exporter {id}"), lost);
            }
        }
        report.read_losses(&self.registry);
        if report.total() == 0 {
            tracing::info!("collector stopped; everything accepted was delivered");
        } else {
            let by_reason = report
                .dropped
                .iter()
                .map(|(series, count)| format!("{series} {count}"))
                .collect::<Vec<_>>()
                .join(", ");
            tracing::error!(
                undelivered = report.total(),
                by_reason = %by_reason,
                "collector stopped; some accepted items were not delivered (exit status 3)"
            );
        }
        let _ = self.side_shutdown.send(true);
        for task in self.side_tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
        }
        report
    }

    async fn drain_stages(
        stages: Vec<(String, bool, Vec<StageTask>)>,
        deadline: Instant,
        registry: &Registry,
        report: &mut ShutdownReport,
    ) {
        for (pipeline, _, stages) in stages {
            for stage in stages {
                let _ = stage.closing.send(true);
                let mut task = stage.task;
                if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                    task.abort();
                    let lost = stage.held_items.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        registry
                            .counter(
                                "vigil_processor_dropped_items_total",
                                "Items a processor held when the shutdown deadline passed.",
                                &[("pipeline", pipeline.as_str()), ("reason", "shutdown")],
                            )
                            .add(lost);
                        tracing::error!(
                            pipeline,
                            items = lost,
                            "shutdown deadline passed while a processor still held items"
                        );
                        *report
                            .undelivered
                            .entry(format!("pipeline {pipeline}"))
                            .or_default() += lost;
                    }
                }
            }
        }
    }
}
