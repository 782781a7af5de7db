//! Exporter `nop`: accepts every batch and discards it. Its sent-items counter makes it the sink of benchmarks
//! and tests.

use serde::Deserialize;

use super::{ExportError, Exported, Exporter, QueueSettings};
use crate::pipeline::{Batch, BoxFuture};

/// `exporters.nop`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NopExporterConfig {
    /// The queue in front of it.
    pub sending_queue: QueueSettings,
}

/// Discards batches.
pub struct NopExporter;

impl Exporter for NopExporter {
    fn export<'a>(&'a self, _batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async { Ok(Exported::default()) })
    }
}
