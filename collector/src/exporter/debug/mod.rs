//! Exporter `debug`: writes what passes to stderr, as a one-line summary per batch (`basic`, `normal`) or as
//! every item in OTLP/JSON (`detailed`).

use std::io::Write;

use serde::Deserialize;
use vigil_proto::otlp::json::protobuf_to_json;

use super::{ExportError, Exported, Exporter, QueueSettings};
use crate::pipeline::{Batch, BoxFuture};

/// How much the debug exporter prints.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    /// One summary line per batch.
    #[default]
    Basic,
    /// Same as basic (kept for otelcol compatibility).
    Normal,
    /// The whole batch as OTLP/JSON.
    Detailed,
}

/// `exporters.debug`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DebugExporterConfig {
    /// What to print.
    pub verbosity: Verbosity,
    /// The queue in front of it.
    pub sending_queue: QueueSettings,
}

/// Prints batches to stderr.
pub struct DebugExporter {
    verbosity: Verbosity,
}

impl DebugExporter {
    /// A debug exporter from its config.
    pub fn new(config: &DebugExporterConfig) -> Self {
        DebugExporter {
            verbosity: config.verbosity,
        }
    }
}

impl Exporter for DebugExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let mut text = format!(
                "debug exporter: {} {} in {} bytes\n",
                batch.items,
                batch.signal.item_name(),
                batch.byte_len()
            )
            .into_bytes();
            if self.verbosity == Verbosity::Detailed {
                protobuf_to_json(batch.signal, &batch.to_bytes(), &mut text).map_err(|e| {
                    ExportError::Undecodable {
                        message: format!("batch does not decode as OTLP: {e}"),
                    }
                })?;
                text.push(b'\n');
            }
            let _ = std::io::stderr().lock().write_all(&text);
            Ok(Exported::default())
        })
    }
}
