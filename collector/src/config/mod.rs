//! The collector's configuration: otelcol-shaped YAML, typed per component, every error located.
//!
//! ```yaml
//! receivers:  { otlp: { protocols: { grpc: {}, http: {} } } }
//! processors: { batch: {} }
//! exporters:  { debug: {} }
//! service:
//!   pipelines:
//!     traces: { receivers: [otlp], processors: [batch], exporters: [debug] }
//! ```
//!
//! Loading is pure (no sockets, no files besides the config itself) so `vigil-collector validate` runs exactly
//! the checks start-up runs. All problems are collected, each with its line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use vigil_proto::otlp::Signal;

use crate::component::{
    Checker, ComponentId, ConfigError, ConfigErrors, duration, parse_listen_address, yaml,
};
use crate::connector::ConnectorConfig;
use crate::exporter::ExporterConfig;
use crate::extension::ExtensionConfig;
use crate::processor::ProcessorConfig;
use crate::receiver::ReceiverConfig;

/// The configuration compiled into the binary, used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../../configs/collector.yaml");

/// A pipeline id: `traces`, `metrics` or `logs`, optionally `/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineId {
    /// The signal the pipeline carries.
    pub signal: Signal,
    /// The optional name after the slash.
    pub name: Option<String>,
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{name}", self.signal),
            None => f.write_str(self.signal.as_str()),
        }
    }
}

/// One pipeline: receivers feed processors in order, the last processor fans out to the exporters.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Receivers that feed this pipeline.
    pub receivers: Vec<String>,
    /// Processors, applied in order.
    #[serde(default)]
    pub processors: Vec<String>,
    /// Exporters that each get every batch.
    pub exporters: Vec<String>,
}

/// `service.telemetry.logs`: the collector's own logs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogsTelemetryConfig {
    /// Minimum level, or an `EnvFilter` directive such as `info,vigil_collector::exporter=debug`.
    pub level: String,
    /// `console` (human-readable) or `json` (one object per line).
    pub encoding: LogEncoding,
}

impl Default for LogsTelemetryConfig {
    fn default() -> Self {
        LogsTelemetryConfig {
            level: "info".into(),
            encoding: LogEncoding::Console,
        }
    }
}

/// How the collector writes its own logs.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogEncoding {
    /// Human-readable lines.
    Console,
    /// One JSON object per line.
    Json,
}

/// `service.telemetry.metrics`: the collector's own Prometheus endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetryConfig {
    /// Listen address of `/metrics`; `null` turns the endpoint off.
    pub address: Option<String>,
}

impl Default for MetricsTelemetryConfig {
    fn default() -> Self {
        MetricsTelemetryConfig {
            address: Some("127.0.0.1:8888".into()),
        }
    }
}

/// `service.telemetry`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Own logs.
    pub logs: LogsTelemetryConfig,
    /// Own metrics.
    pub metrics: MetricsTelemetryConfig,
}

/// The default time allowed for draining pipelines at shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    extensions: Vec<String>,
    #[serde(default)]
    pipelines: BTreeMap<String, PipelineConfig>,
    #[serde(default)]
    telemetry: TelemetryConfig,
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    shutdown_timeout: Duration,
}

fn default_shutdown_timeout() -> Duration {
    DEFAULT_SHUTDOWN_TIMEOUT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    receivers: BTreeMap<String, Value>,
    #[serde(default)]
    processors: BTreeMap<String, Value>,
    #[serde(default)]
    exporters: BTreeMap<String, Value>,
    #[serde(default)]
    extensions: BTreeMap<String, Value>,
    #[serde(default)]
    connectors: BTreeMap<String, Value>,
    service: Value,
}

/// `service`: which extensions run and how pipelines are wired.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Extensions to start.
    pub extensions: Vec<ComponentId>,
    /// Pipelines by id.
    pub pipelines: BTreeMap<PipelineId, Pipeline>,
    /// Own logs and metrics.
    pub telemetry: TelemetryConfig,
    /// How long shutdown may take to drain pipelines and flush exporters.
    pub shutdown_timeout: Duration,
}

/// A pipeline with resolved component ids.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// Receivers feeding it.
    pub receivers: Vec<ComponentId>,
    /// Processors in order.
    pub processors: Vec<ComponentId>,
    /// Exporters it fans out to.
    pub exporters: Vec<ComponentId>,
}

/// A whole, validated collector configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Receivers by id.
    pub receivers: BTreeMap<ComponentId, ReceiverConfig>,
    /// Processors by id.
    pub processors: BTreeMap<ComponentId, ProcessorConfig>,
    /// Exporters by id.
    pub exporters: BTreeMap<ComponentId, ExporterConfig>,
    /// Extensions by id.
    pub extensions: BTreeMap<ComponentId, ExtensionConfig>,
    /// Connectors by id: exporters of one pipeline that are receivers of another.
    pub connectors: BTreeMap<ComponentId, ConnectorConfig>,
    /// Wiring.
    pub service: ServiceConfig,
}

/// Options for loading a config.
pub struct LoadOptions<'a> {
    /// Name used in error messages (the file path, or `<default>`).
    pub source: &'a str,
    /// Environment lookup for `${env:…}`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Config {
    /// Loads the embedded default config.
    pub fn default_config() -> Result<Config, ConfigErrors> {
        Config::parse(
            DEFAULT_CONFIG,
            &LoadOptions {
                source: "<default>",
                env: &|name| std::env::var(name).ok(),
            },
        )
    }

    /// Loads and validates a config file, with `${env:…}` from the process environment.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let source = path.display().to_string();
        let text = yaml::read_text(path).map_err(|e| ConfigErrors {
            source: source.clone(),
            errors: vec![ConfigError {
                location: e.location,
                path: String::new(),
                message: e.message,
            }],
        })?;
        Config::parse(
            &text,
            &LoadOptions {
                source: &source,
                env: &|name| std::env::var(name).ok(),
            },
        )
    }

    /// Parses and validates config text, collecting every problem.
    pub fn parse(text: &str, options: &LoadOptions<'_>) -> Result<Config, ConfigErrors> {
        let fail = |errors: Vec<ConfigError>| ConfigErrors {
            source: options.source.to_string(),
            errors,
        };
        let (tree, locations) = yaml::parse(text, options.env).map_err(|errors| {
            fail(
                errors
                    .into_iter()
                    .map(|e| ConfigError {
                        location: e.location,
                        path: String::new(),
                        message: e.message,
                    })
                    .collect(),
            )
        })?;
        let mut check = Checker::new(&locations);
        if tree.is_null() {
            check.error("", "the config is empty: it needs at least `receivers`, `exporters` and `service.pipelines`");
            return Err(fail(check.into_errors()));
        }
        let Some(raw) = check.decode::<RawConfig>("", &tree) else {
            return Err(fail(check.into_errors()));
        };

        let receivers = components(
            &mut check,
            "receivers",
            &raw.receivers,
            ReceiverConfig::decode,
        );
        let processors = components(
            &mut check,
            "processors",
            &raw.processors,
            ProcessorConfig::decode,
        );
        let exporters = components(
            &mut check,
            "exporters",
            &raw.exporters,
            ExporterConfig::decode,
        );
        let extensions = components(
            &mut check,
            "extensions",
            &raw.extensions,
            ExtensionConfig::decode,
        );
        let connectors = components(
            &mut check,
            "connectors",
            &raw.connectors,
            ConnectorConfig::decode,
        );

        // Components that are declared but failed to decode already have an error; references to them are fine.
        let declared = |section: &BTreeMap<String, Value>| -> BTreeSet<ComponentId> {
            section
                .keys()
                .filter_map(|k| ComponentId::parse(k).ok())
                .collect()
        };
        let declared = Declared {
            receivers: declared(&raw.receivers),
            processors: declared(&raw.processors),
            exporters: declared(&raw.exporters),
            extensions: declared(&raw.extensions),
            connectors: declared(&raw.connectors),
        };
        let service = check
            .decode::<RawService>("service", &raw.service)
            .map(|service| {
                resolve_service(&mut check, service, &declared, &exporters, &connectors)
            });
        check_endpoints(
            &mut check,
            &receivers,
            &extensions,
            &exporters,
            service.as_ref(),
        );

        let mut errors = check.into_errors();
        errors.sort_by_key(|e| (e.location.line, e.location.column));
        match service {
            Some(service) if errors.is_empty() => Ok(Config {
                receivers: receivers.into_iter().map(|(id, (_, c))| (id, c)).collect(),
                processors: processors.into_iter().map(|(id, (_, c))| (id, c)).collect(),
                exporters: exporters.into_iter().map(|(id, (_, c))| (id, c)).collect(),
                extensions: extensions.into_iter().map(|(id, (_, c))| (id, c)).collect(),
                connectors: connectors.into_iter().map(|(id, (_, c))| (id, c)).collect(),
                service,
            }),
            _ => Err(fail(errors)),
        }
    }
}

type Decoded<C> = BTreeMap<ComponentId, (String, C)>;

struct Declared {
    receivers: BTreeSet<ComponentId>,
    processors: BTreeSet<ComponentId>,
    exporters: BTreeSet<ComponentId>,
    extensions: BTreeSet<ComponentId>,
    connectors: BTreeSet<ComponentId>,
}

fn components<C>(
    check: &mut Checker<'_>,
    section: &str,
    raw: &BTreeMap<String, Value>,
    decode: fn(&mut Checker<'_>, &str, &str, &Value) -> Option<C>,
) -> Decoded<C> {
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        let path = format!("{section}.{key}");
        match ComponentId::parse(key) {
            Ok(id) => {
                if let Some(config) = decode(check, &path, &id.kind, value) {
                    out.insert(id, (path, config));
                }
            }
            Err(message) => check.error(&path, message),
        }
    }
    out
}

fn resolve_service(
    check: &mut Checker<'_>,
    raw: RawService,
    declared: &Declared,
    exporters: &Decoded<ExporterConfig>,
    connectors: &Decoded<ConnectorConfig>,
) -> ServiceConfig {
    let resolve = |check: &mut Checker<'_>,
                   path: &str,
                   section: &str,
                   names: &[String],
                   known: &dyn Fn(&ComponentId) -> bool| {
        let mut ids = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            let item = format!("{path}[{i}]");
            match ComponentId::parse(name) {
                Ok(id) if !known(&id) => check.error(
                    &item,
                    format!(
                        "`{name}` is not defined in `{section}` (define it there or fix the name)"
                    ),
                ),
                Ok(id) => {
                    if !seen.insert(id.clone()) {
                        check.error(&item, format!("`{name}` is listed twice"));
                    }
                    ids.push(id);
                }
                Err(message) => check.error(&item, message),
            }
        }
        ids
    };
    let extension_ids = resolve(
        check,
        "service.extensions",
        "extensions",
        &raw.extensions,
        &|id| declared.extensions.contains(id),
    );
    for id in &declared.connectors {
        for (section, set) in [
            ("receivers", &declared.receivers),
            ("exporters", &declared.exporters),
        ] {
            if set.contains(id) {
                check.error(
                    &format!("connectors.{id}"),
                    format!("`{id}` is also defined in `{section}`; give the connector another name (e.g. `{id}/red`)"),
                );
            }
        }
    }
    // Where each connector is used: (as an exporter, as a receiver).
    let mut connector_uses: BTreeMap<ComponentId, (bool, bool)> = BTreeMap::new();
    let mut pipelines = BTreeMap::new();
    if raw.pipelines.is_empty() {
        check.error(
            "service",
            "`service.pipelines` must define at least one pipeline",
        );
    }
    for (key, pipeline) in &raw.pipelines {
        let path = format!("service.pipelines.{key}");
        let (signal_text, name) = match key.split_once('/') {
            Some((s, n)) => (s, Some(n.to_string())),
            None => (key.as_str(), None),
        };
        let Some(signal) = Signal::parse(signal_text) else {
            check.error(
                &path,
                format!("pipeline `{key}` must start with `traces`, `metrics` or `logs`"),
            );
            continue;
        };
        if pipeline.receivers.is_empty() {
            check.error(
                &format!("{path}.receivers"),
                "a pipeline needs at least one receiver",
            );
        }
        if pipeline.exporters.is_empty() {
            check.error(
                &format!("{path}.exporters"),
                "a pipeline needs at least one exporter",
            );
        }
        let receivers = resolve(
            check,
            &format!("{path}.receivers"),
            "receivers",
            &pipeline.receivers,
            &|id| declared.receivers.contains(id) || declared.connectors.contains(id),
        );
        let processors = resolve(
            check,
            &format!("{path}.processors"),
            "processors",
            &pipeline.processors,
            &|id| declared.processors.contains(id),
        );
        let exporters_ids = resolve(
            check,
            &format!("{path}.exporters"),
            "exporters",
            &pipeline.exporters,
            &|id| declared.exporters.contains(id) || declared.connectors.contains(id),
        );
        for (i, id) in receivers.iter().enumerate() {
            if let Some((_, connector)) = connectors.get(id) {
                connector_uses.entry(id.clone()).or_default().1 = true;
                if connector.output() != signal {
                    check.error(
                        &format!("{path}.receivers[{i}]"),
                        format!(
                            "connector `{id}` produces {}; it cannot feed a {signal} pipeline",
                            connector.output()
                        ),
                    );
                }
            }
        }
        for (i, id) in exporters_ids.iter().enumerate() {
            if let Some((_, connector)) = connectors.get(id) {
                connector_uses.entry(id.clone()).or_default().0 = true;
                if connector.input() != signal {
                    check.error(
                        &format!("{path}.exporters[{i}]"),
                        format!(
                            "connector `{id}` consumes {}; it cannot be an exporter of a {signal} pipeline",
                            connector.input()
                        ),
                    );
                }
            }
        }
        for (i, id) in exporters_ids.iter().enumerate() {
            if let Some((_, config)) = exporters.get(id)
                && let Some(problem) = config.signal_problem(signal)
            {
                check.error(
                    &format!("{path}.exporters[{i}]"),
                    format!("exporter `{id}` {problem}"),
                );
            }
        }
        pipelines.insert(
            PipelineId { signal, name },
            Pipeline {
                receivers,
                processors,
                exporters: exporters_ids,
            },
        );
    }
    for (id, (as_exporter, as_receiver)) in connector_uses {
        if as_exporter != as_receiver {
            let (used, missing) = if as_exporter {
                ("an exporter", "receiver")
            } else {
                ("a receiver", "exporter")
            };
            check.error(
                "service.pipelines",
                format!(
                    "connector `{id}` is used as {used} but no pipeline lists it as a {missing}; a connector \
                     joins two pipelines"
                ),
            );
        }
    }
    ServiceConfig {
        extensions: extension_ids,
        pipelines,
        telemetry: raw.telemetry,
        shutdown_timeout: raw.shutdown_timeout,
    }
}

/// Checks that every listen address parses and that no two components listen on the same one.
fn check_endpoints(
    check: &mut Checker<'_>,
    receivers: &Decoded<ReceiverConfig>,
    extensions: &Decoded<ExtensionConfig>,
    exporters: &Decoded<ExporterConfig>,
    service: Option<&ServiceConfig>,
) {
    let mut listeners: Vec<(String, String)> = Vec::new();
    for (path, config) in receivers.values() {
        listeners.extend(config.listen_endpoints(path));
    }
    for (path, config) in extensions.values() {
        listeners.extend(config.listen_endpoints(path));
    }
    for (path, config) in exporters.values() {
        listeners.extend(config.listen_endpoints(path));
    }
    if let Some(address) = service.and_then(|s| s.telemetry.metrics.address.clone()) {
        listeners.push(("service.telemetry.metrics.address".into(), address));
    }
    let mut seen: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for (path, endpoint) in listeners {
        match parse_listen_address(&endpoint) {
            Ok(address) => {
                if address.port() != 0
                    && let Some(other) = seen.insert(address, path.clone())
                {
                    check.error(&path, format!("`{endpoint}` is already used by `{other}`"));
                }
            }
            Err(message) => check.error(&path, message),
        }
    }
}

#[cfg(test)]
mod tests;
