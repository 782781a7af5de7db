//! The logging config file, in the spirit of Python's `logging.config.dictConfig`.
//!
//! ```yaml
//! logging:                       # the wrapper key is optional
//!   version: 1
//!   formatters:
//!     json: {class: json}
//!     detailed: {format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'}
//!   handlers:
//!     console: {class: console, formatter: detailed, level: INFO}
//!     file: {class: file, filename: logs/app.jsonl, maxBytes: 52428800, backupCount: 10, formatter: json}
//!     otlp: {class: otlp, level: INFO}
//!   loggers:
//!     my_crate.db: {level: WARNING}
//!   root: {level: DEBUG, handlers: [console, file, otlp]}
//! ```
//!
//! Python class paths become Vigil names (and Python's own handler paths are accepted as written):
//! `…JSONFormatter` → `class: json`, `logging.StreamHandler` → `console`, `logging.FileHandler`,
//! `logging.handlers.RotatingFileHandler`/`TimedRotatingFileHandler`/`WatchedFileHandler` → `file`, and
//! `…MLflowHandler` → `mlflow`: records into the active MLflow run's log artifact (see [`crate::ml::mlflow`];
//! optional keys `tracking_uri`, `experiment_name`, `experiment_id`, `run_id`, else MLflow's variables; without
//! a tracking URI the handler does nothing). Logger names map to `tracing` targets (`my_crate.db` →
//! `my_crate::db`). Every error names the file, line and column.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::yaml::{self, Locations};
use crate::log::file::{DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES, FileOptions};
use crate::log::text::Pattern;

/// A level name as Python writes it (case-insensitive): DEBUG, INFO, WARNING (or WARN), ERROR, CRITICAL,
/// NOTSET. CRITICAL maps to `tracing`'s ERROR, NOTSET to TRACE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Everything.
    NotSet,
    /// DEBUG.
    Debug,
    /// INFO.
    Info,
    /// WARNING.
    Warning,
    /// ERROR.
    Error,
    /// CRITICAL (reported at `tracing`'s ERROR).
    Critical,
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(match text.to_ascii_uppercase().as_str() {
            "NOTSET" | "TRACE" => Level::NotSet,
            "DEBUG" => Level::Debug,
            "INFO" => Level::Info,
            "WARNING" | "WARN" => Level::Warning,
            "ERROR" => Level::Error,
            "CRITICAL" | "FATAL" => Level::Critical,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "`{text}` is not a level; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
                )));
            }
        })
    }
}

impl Level {
    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            Level::NotSet => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warn",
            Level::Error | Level::Critical => "error",
        }
    }

    /// The `tracing` level.
    pub fn tracing(self) -> tracing::Level {
        match self {
            Level::NotSet => tracing::Level::TRACE,
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warning => tracing::Level::WARN,
            Level::Error | Level::Critical => tracing::Level::ERROR,
        }
    }

    /// The level for a `tracing` level (TRACE is NOTSET: everything).
    pub fn from_tracing(level: tracing::Level) -> Level {
        match level {
            tracing::Level::TRACE => Level::NotSet,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warning,
            tracing::Level::ERROR => Level::Error,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormatter {
    class: Option<String>,
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    class: String,
    formatter: Option<String>,
    level: Option<Level>,
    filename: Option<String>,
    #[serde(rename = "maxBytes")]
    max_bytes: Option<u64>,
    #[serde(rename = "backupCount")]
    backup_count: Option<usize>,
    when: Option<String>,
    utc: Option<bool>,
    compress: Option<bool>,
    max_age_days: Option<u64>,
    mode: Option<String>,
    stream: Option<String>,
    tracking_uri: Option<String>,
    experiment_name: Option<String>,
    experiment_id: Option<String>,
    run_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogger {
    level: Option<Level>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    level: Option<Level>,
    #[serde(default)]
    handlers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    #[serde(default = "one")]
    version: u32,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    formatters: BTreeMap<String, RawFormatter>,
    #[serde(default)]
    handlers: BTreeMap<String, Value>,
    #[serde(default)]
    loggers: BTreeMap<String, Value>,
    #[serde(default)]
    root: Value,
    #[serde(default)]
    mask: Option<crate::mask::MaskConfig>,
    #[serde(default)]
    sampling: Option<crate::log::sampling::LogSamplingConfig>,
}

fn one() -> u32 {
    1
}

/// How a handler formats records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// A Python `logging` format string.
    Text(Pattern),
    /// The human-readable console format (colour on a terminal).
    Console,
}

/// Where a handler sends records.
#[derive(Clone, Debug)]
pub enum Sink {
    /// Standard error.
    Stderr,
    /// Standard output.
    Stdout,
    /// A rotating file.
    File(FileOptions),
    /// The OTLP log exporter (to the collector).
    Otlp,
    /// The active MLflow run's log artifact (see [`crate::ml::mlflow`]).
    Mlflow(MlflowKeys),
}

/// An `mlflow` handler's own keys; each falls back to MLflow's variable (`MLFLOW_TRACKING_URI`…).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MlflowKeys {
    /// `tracking_uri`.
    pub tracking_uri: Option<String>,
    /// `experiment_name`.
    pub experiment_name: Option<String>,
    /// `experiment_id`.
    pub experiment_id: Option<String>,
    /// `run_id`: attach to this run.
    pub run_id: Option<String>,
}

/// One handler of the root logger.
#[derive(Clone, Debug)]
pub struct Handler {
    /// Its name in the file.
    pub name: String,
    /// Where records go.
    pub sink: Sink,
    /// How they are formatted (ignored for OTLP).
    pub format: Format,
    /// Records below this level are not given to this handler.
    pub level: Option<Level>,
}

/// A validated logging config.
#[derive(Clone, Debug)]
pub struct LoggingConfig {
    /// The service name, when the file sets `service_name`.
    pub service_name: Option<String>,
    /// The `tracing` filter: root level plus per-logger levels.
    pub filter: String,
    /// The root logger's handlers.
    pub handlers: Vec<Handler>,
    /// The `mask:` section, when the file has one (masking is on by default without it; `enabled: false` turns
    /// it off).
    pub mask: Option<crate::mask::MaskConfig>,
    /// The `sampling:` section, when the file has one (no log sampling without it).
    pub sampling: Option<crate::log::sampling::LogSamplingConfig>,
}

impl LoggingConfig {
    /// Parses config text; `source` names the file in error messages, one line per problem.
    pub fn parse(text: &str, source: &str) -> Result<LoggingConfig, LoggingConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let failed = |problems: Vec<ConfigProblem>| LoggingConfigError {
            file: source.to_string(),
            problems,
        };
        let (tree, locations) = yaml::parse(text, &env).map_err(|errors| {
            failed(
                errors
                    .into_iter()
                    .map(|e| ConfigProblem {
                        location: e.location,
                        path: String::new(),
                        message: e.message,
                    })
                    .collect(),
            )
        })?;
        let mut errors = Vec::new();
        let mut locations = locations;
        let (root, prefix) = unwrap_logging(tree, &mut locations, &mut errors);
        let config = build(&root, prefix, &locations, &mut errors);
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(failed(
                errors
                    .into_iter()
                    .map(|(location, path, message)| ConfigProblem {
                        location,
                        path,
                        message,
                    })
                    .collect(),
            )),
        }
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &std::path::Path) -> Result<LoggingConfig, LoggingConfigError> {
        let text = yaml::read_text(path).map_err(|e| LoggingConfigError {
            file: path.display().to_string(),
            problems: vec![ConfigProblem {
                location: e.location,
                path: String::new(),
                message: e.message,
            }],
        })?;
        LoggingConfig::parse(&text, &path.display().to_string())
    }
}

/// One problem in a logging config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where it is (line 0 when the file could not be read at all).
    pub location: yaml::Location,
    /// The dotted key path (`logging.handlers.console.level`), empty when the problem is not at a key.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Every problem found in one logging config, in file order; shown one `file:line:column: key: problem` line
/// each.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.lines())]
pub struct LoggingConfigError {
    /// The file name shown in messages.
    pub file: String,
    /// The problems.
    pub problems: Vec<ConfigProblem>,
}

impl LoggingConfigError {
    fn lines(&self) -> String {
        self.problems
            .iter()
            .map(|problem| {
                if problem.location.line == 0 {
                    // Nothing in the text to point at (an unreadable file): the message names the file.
                    return problem.message.clone();
                }
                let path = match problem.path.is_empty() {
                    true => String::new(),
                    false => format!("{}: ", problem.path),
                };
                format!(
                    "{}:{}:{}: {path}{}",
                    self.file, problem.location.line, problem.location.column, problem.message
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Vigil's own sections, which may sit next to a `logging:` wrapper as well as inside it.
const SIBLING_SECTIONS: [&str; 2] = ["mask", "sampling"];

/// The config under a `logging:` wrapper (as Python's `dictConfig` files are often written), with `mask:` and
/// `sampling:` taken from beside the wrapper too; or the whole document when there is no wrapper. Anything else
/// beside the wrapper is an error that names it.
fn unwrap_logging(
    tree: Value,
    locations: &mut Locations,
    errors: &mut Vec<(yaml::Location, String, String)>,
) -> (Value, &'static str) {
    let Value::Object(mut top) = tree else {
        return (tree, "");
    };
    let Some(Value::Object(mut inner)) = top.remove("logging") else {
        return (Value::Object(top), "");
    };
    for (key, value) in top {
        if SIBLING_SECTIONS.contains(&key.as_str()) {
            if inner.contains_key(&key) {
                errors.push((
                    locations.find(&key),
                    key.clone(),
                    format!("`{key}` is given twice: here and inside `logging:`; keep one"),
                ));
            } else {
                // Errors inside it are reported under `logging.<key>`, at the lines where it was written.
                locations.alias(&key, &format!("logging.{key}"));
                inner.insert(key, value);
            }
        } else {
            errors.push((
                locations.find(&key),
                key.clone(),
                format!(
                    "unknown top-level key `{key}` next to `logging:`; only `mask:` and `sampling:` may sit beside it"
                ),
            ));
        }
    }
    (Value::Object(inner), "logging")
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn build(
    root: &Value,
    prefix: &str,
    locations: &Locations,
    errors: &mut Vec<(yaml::Location, String, String)>,
) -> Option<LoggingConfig> {
    let mut error =
        |path: String, message: String| errors.push((locations.find(&path), path, message));
    let raw: RawLogging = match yaml::decode(root, prefix, locations) {
        Ok(raw) => raw,
        Err(e) => {
            error(e.path, e.message);
            return None;
        }
    };
    if raw.version != 1 {
        error(
            join(prefix, "version"),
            format!("only version 1 exists, not {}", raw.version),
        );
    }
    let mut formats = BTreeMap::new();
    for (name, formatter) in &raw.formatters {
        let path = join(prefix, &format!("formatters.{name}"));
        let format = match (formatter.class.as_deref(), &formatter.format) {
            (Some("json"), None) => Format::Json,
            // The seed's `src.common.logging.formatters.JSONFormatter` and other such class paths.
            (Some(class), None) if class.to_ascii_lowercase().ends_with("jsonformatter") => {
                Format::Json
            }
            (Some("console"), None) => Format::Console,
            (None | Some("text"), Some(format)) => match Pattern::parse(format) {
                Ok(pattern) => Format::Text(pattern),
                Err(message) => {
                    error(format!("{path}.format"), message);
                    continue;
                }
            },
            (Some(class), None) => {
                error(
                    format!("{path}.class"),
                    format!(
                        "unknown formatter class `{class}`; use json, console or a `format` string"
                    ),
                );
                continue;
            }
            (None, None) => {
                error(
                    path,
                    "a formatter needs `class: json` or a `format` string".into(),
                );
                continue;
            }
            (Some(_), Some(_)) => {
                error(path, "give either `class` or `format`, not both".into());
                continue;
            }
        };
        formats.insert(name.clone(), format);
    }
    let mut handlers = BTreeMap::new();
    for (name, value) in &raw.handlers {
        let path = join(prefix, &format!("handlers.{name}"));
        let handler: RawHandler = match yaml::decode(value, &path, locations) {
            Ok(handler) => handler,
            Err(e) => {
                error(e.path, e.message);
                continue;
            }
        };
        let format = match &handler.formatter {
            None => Format::Console,
            Some(formatter) => match formats.get(formatter) {
                Some(format) => format.clone(),
                None => {
                    if !raw.formatters.contains_key(formatter) {
                        error(
                            format!("{path}.formatter"),
                            format!("formatter `{formatter}` is not defined under `formatters`"),
                        );
                    }
                    continue;
                }
            },
        };
        // Python's own class paths are accepted as they are written in a `dictConfig`.
        let class = match handler.class.as_str() {
            "logging.StreamHandler" => "console",
            "logging.FileHandler"
            | "logging.handlers.RotatingFileHandler"
            | "logging.handlers.TimedRotatingFileHandler"
            | "logging.handlers.WatchedFileHandler" => "file",
            other => other,
        };
        let sink = match class {
            "console" => match handler.stream.as_deref() {
                None | Some("stderr") | Some("ext://sys.stderr") => Sink::Stderr,
                Some("stdout") | Some("ext://sys.stdout") => Sink::Stdout,
                Some(other) => {
                    error(
                        format!("{path}.stream"),
                        format!("`{other}` is not a stream; use stderr or stdout"),
                    );
                    continue;
                }
            },
            "file" => {
                let Some(filename) = &handler.filename else {
                    error(path, "a file handler needs `filename`".into());
                    continue;
                };
                let mut options = FileOptions::new(PathBuf::from(filename));
                options.max_bytes = handler.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
                options.max_files = handler.backup_count.filter(|n| *n > 0);
                options.daily = match handler
                    .when
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    None | Some("midnight") | Some("d") | Some("daily") => true,
                    Some("never") => false,
                    Some(other) => {
                        error(
                            format!("{path}.when"),
                            format!("`{other}` is not supported; use midnight or never"),
                        );
                        continue;
                    }
                };
                // As Python's TimedRotatingFileHandler: days in local time unless `utc: true`.
                options.local_time = handler.utc != Some(true);
                options.compress = handler.compress.unwrap_or(true);
                options.max_age = Some(
                    handler
                        .max_age_days
                        .map_or(DEFAULT_MAX_AGE, |d| Duration::from_secs(d * 86_400)),
                );
                if let Some(mode) = &handler.mode {
                    match u32::from_str_radix(mode.trim_start_matches("0o"), 8) {
                        Ok(bits) if bits <= 0o777 => options.mode = bits,
                        _ => {
                            error(
                                format!("{path}.mode"),
                                format!("`{mode}` is not an octal mode such as 0640"),
                            );
                            continue;
                        }
                    }
                }
                Sink::File(options)
            }
            "otlp" => Sink::Otlp,
            // The seed's `src.common.logging.handlers.MLflowHandler` and any such class path.
            mlflow
                if mlflow == "mlflow" || mlflow.to_ascii_lowercase().ends_with("mlflowhandler") =>
            {
                Sink::Mlflow(MlflowKeys {
                    tracking_uri: handler.tracking_uri.clone(),
                    experiment_name: handler.experiment_name.clone(),
                    experiment_id: handler.experiment_id.clone(),
                    run_id: handler.run_id.clone(),
                })
            }
            other => {
                error(
                    format!("{path}.class"),
                    format!("unknown handler class `{other}`; use console, file, otlp or mlflow"),
                );
                continue;
            }
        };
        if matches!(sink, Sink::File(_)) && format == Format::Console {
            error(
                format!("{path}.formatter"),
                "a file handler needs a `json` or `format` formatter".into(),
            );
            continue;
        }
        handlers.insert(
            name.clone(),
            Handler {
                name: name.clone(),
                sink,
                format,
                level: handler.level,
            },
        );
    }
    let root_path = join(prefix, "root");
    let root_config: RawRoot = if raw.root.is_null() {
        RawRoot::default()
    } else {
        match yaml::decode(&raw.root, &root_path, locations) {
            Ok(root) => root,
            Err(e) => {
                error(e.path, e.message);
                RawRoot::default()
            }
        }
    };
    let mut root_handlers = Vec::new();
    for (i, name) in root_config.handlers.iter().enumerate() {
        match handlers.get(name) {
            Some(handler) => root_handlers.push(handler.clone()),
            None if raw.handlers.contains_key(name) => {}
            None => error(
                join(prefix, &format!("root.handlers[{i}]")),
                format!("handler `{name}` is not defined under `handlers`"),
            ),
        }
    }
    let mut filter = root_config
        .level
        .unwrap_or(Level::Info)
        .directive()
        .to_string();
    for (name, value) in &raw.loggers {
        let path = join(prefix, &format!("loggers.{name}"));
        let logger: RawLogger = match yaml::decode(value, &path, locations) {
            Ok(logger) => logger,
            Err(e) => {
                error(e.path, e.message);
                continue;
            }
        };
        if let Some(level) = logger.level {
            filter.push_str(&format!(
                ",{}={}",
                name.replace('.', "::"),
                level.directive()
            ));
        }
    }
    if let Some(mask) = &raw.mask
        && mask.enabled
        && let Err(e) = crate::mask::Masker::new(mask)
    {
        error(join(prefix, "mask"), e.to_string());
    }
    Some(LoggingConfig {
        service_name: raw.service_name,
        filter,
        handlers: root_handlers,
        mask: raw.mask,
        sampling: raw.sampling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_handler_class_paths_are_accepted() {
        let text = "version: 1\nformatters:\n  json: {class: json}\nhandlers:\n  out: {class: logging.StreamHandler, stream: ext://sys.stdout}\n  plain: {class: logging.FileHandler, filename: /tmp/x.log, formatter: json}\n  rotating: {class: logging.handlers.RotatingFileHandler, filename: /tmp/y.log, maxBytes: 1000, backupCount: 2, formatter: json}\nroot: {level: INFO, handlers: [out, plain, rotating]}\n";
        let config = LoggingConfig::parse(text, "python.yaml").unwrap();
        let sinks: Vec<&str> = config
            .handlers
            .iter()
            .map(|h| match h.sink {
                Sink::Stdout => "stdout",
                Sink::Stderr => "stderr",
                Sink::File(_) => "file",
                Sink::Otlp => "otlp",
                Sink::Mlflow(_) => "mlflow",
            })
            .collect();
        assert_eq!(sinks, ["stdout", "file", "file"]);
    }

    /// The README's `mask:` snippet pasted next to a `logging:` wrapper works, and an error inside it points at
    /// its own line.
    #[test]
    fn a_mask_section_beside_the_logging_wrapper_is_read() {
        let text = "logging:\n  version: 1\n  handlers:\n    console: {class: console}\n  root: {level: INFO, handlers: [console]}\nmask:\n  detectors:\n    ipv4: {enabled: false}\n    email: {action: hash}\n  hash_key: k\n";
        let config = LoggingConfig::parse(text, "app.yaml").unwrap();
        let mask = config.mask.expect("the mask section");
        assert!(format!("{mask:?}").contains("Hash"), "{mask:?}");
        let broken = "logging:\n  version: 1\n  handlers:\n    console: {class: console}\n  root: {level: INFO, handlers: [console]}\nmask:\n  detectors:\n    email: {action: shout}\n";
        let error = LoggingConfig::parse(broken, "app.yaml")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("app.yaml:8:"), "{error}");
        let stray = "logging:\n  version: 1\n  handlers:\n    console: {class: console}\n  root: {level: INFO, handlers: [console]}\nmasking: {}\n";
        let error = LoggingConfig::parse(stray, "app.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown top-level key `masking` next to `logging:`"),
            "{error}"
        );
    }

    #[test]
    fn accepts_the_shipped_default_config() {
        let text = include_str!("../../../configs/logging/default.yaml");
        let config = LoggingConfig::parse(text, "default.yaml").unwrap();
        assert_eq!(config.filter, "debug");
        let names: Vec<&str> = config.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["console", "file", "otlp"]);
        let Sink::File(file) = &config.handlers[1].sink else {
            panic!("file handler")
        };
        assert_eq!(file.max_bytes, 52_428_800);
        assert_eq!(file.max_files, Some(10));
        assert_eq!(config.handlers[1].format, Format::Json);
        assert!(matches!(config.handlers[0].format, Format::Text(_)));
        assert_eq!(config.handlers[0].level, Some(Level::Info));
        assert!(matches!(config.handlers[2].sink, Sink::Otlp));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let text = "logging:\n  version: 1\n  handlers:\n    console:\n      class: console\n      levle: INFO\n    file:\n      class: file\n      formatter: missing\n  root:\n    level: LOUD\n    handlers: [console, nope]\n";
        let errors = LoggingConfig::parse(text, "l.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("l.yaml:6:7: logging.handlers.console.levle: unknown field `levle`"),
            "{errors}"
        );
        assert!(
            errors.contains("l.yaml:11:5: logging.root.level: `LOUD` is not a level"),
            "{errors}"
        );
    }

    #[test]
    fn references_and_logger_levels() {
        let text = "formatters:\n  f: {format: '%(message)s'}\nhandlers:\n  h: {class: console, formatter: g}\nloggers:\n  my_crate.db: {level: WARNING}\nroot: {level: INFO, handlers: [h, x]}\n";
        let errors = LoggingConfig::parse(text, "c.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("c.yaml:4:23: handlers.h.formatter: formatter `g` is not defined"),
            "{errors}"
        );
        assert!(
            errors.contains("root.handlers[1]: handler `x` is not defined"),
            "{errors}"
        );
        let ok = "loggers:\n  my_crate.db: {level: WARNING}\nroot: {level: INFO}\n";
        assert_eq!(
            LoggingConfig::parse(ok, "c.yaml").unwrap().filter,
            "info,my_crate::db=warn"
        );
    }

    /// The seed's logging config, exactly as the seed document writes it.
    const SEED: &str = "logging:\n  version: 1\n\n  formatters:\n    json:\n      class: src.common.logging.formatters.JSONFormatter\n\n    detailed:\n      format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'\n\n  handlers:\n    console:\n      class: logging.StreamHandler\n      formatter: detailed\n      level: INFO\n\n    file:\n      class: logging.handlers.RotatingFileHandler\n      filename: artifacts/logs/app.log\n      maxBytes: 52428800  # 50MB\n      backupCount: 10\n      formatter: json\n      level: DEBUG\n\n    mlflow:\n      class: src.common.logging.handlers.MLflowHandler\n      level: INFO\n\n  root:\n    level: DEBUG\n    handlers: [console, file, mlflow]\n";

    #[test]
    fn the_seed_config_loads_as_written_with_its_mlflow_handler() {
        let config = LoggingConfig::parse(SEED, "seed.yaml").unwrap();
        assert_eq!(config.handlers[1].format, Format::Json);
        let mlflow = &config.handlers[2];
        assert!(matches!(&mlflow.sink, Sink::Mlflow(keys) if *keys == MlflowKeys::default()));
        assert_eq!(mlflow.level, Some(Level::Info));
        let keyed = "handlers:\n  m: {class: mlflow, tracking_uri: 'http://mlflow:5000', experiment_name: churn, run_id: abc}\nroot: {handlers: [m]}\n";
        let config = LoggingConfig::parse(keyed, "m.yaml").unwrap();
        let Sink::Mlflow(keys) = &config.handlers[0].sink else {
            panic!("not an mlflow handler")
        };
        assert_eq!(keys.tracking_uri.as_deref(), Some("http://mlflow:5000"));
        assert_eq!(keys.experiment_name.as_deref(), Some("churn"));
        assert_eq!(keys.run_id.as_deref(), Some("abc"));
    }
}
