//! Exporter `file`: OTLP/JSON lines (one export request per line, as `otelcol`'s file exporter writes them), one
//! file per signal (`traces.jsonl`, `metrics.jsonl`, `logs.jsonl` under `path`), rotated by size.
//!
//! A rotation renames the full file to `<signal>-<UTC timestamp>.jsonl` and keeps the newest `max_backups`.
//! Lines are written whole, so no line is split across files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use vigil_proto::otlp::Signal;
use vigil_proto::otlp::json::protobuf_to_json;

use super::{ExportError, Exported, Exporter, QueueSettings, RetrySettings};
use crate::component::Checker;
use crate::pipeline::{Batch, BoxFuture};

/// `rotation`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Rotation {
    /// Rotate a file once it is this large (MiB).
    pub max_megabytes: u64,
    /// Rotated files kept per signal; older ones are deleted.
    pub max_backups: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_megabytes: 100,
            max_backups: 10,
        }
    }
}

/// `exporters.file`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileExporterConfig {
    /// Directory holding one file per signal; created if missing.
    pub path: String,
    /// Size-based rotation.
    #[serde(default)]
    pub rotation: Rotation,
    /// The queue in front of it.
    #[serde(default)]
    pub sending_queue: QueueSettings,
    /// Retries of failed writes (disk full, permissions).
    #[serde(default)]
    pub retry_on_failure: RetrySettings,
}

impl FileExporterConfig {
    pub(super) fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.path.trim().is_empty() {
            check.error(&format!("{path}.path"), "must name a directory");
        }
        if self.rotation.max_megabytes == 0 {
            check.error(
                &format!("{path}.rotation.max_megabytes"),
                "must be at least 1",
            );
        }
    }
}

struct SignalFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
}

/// Writes OTLP/JSON lines.
pub struct FileExporter {
    directory: PathBuf,
    rotation: Rotation,
    files: Arc<[Mutex<SignalFile>; 3]>,
}

impl FileExporter {
    /// Creates the directory and checks it is writable, so a bad path fails at start.
    pub fn new(config: &FileExporterConfig) -> Result<Self, String> {
        let directory = PathBuf::from(&config.path);
        std::fs::create_dir_all(&directory)
            .map_err(|e| format!("cannot create directory `{}`: {e}", directory.display()))?;
        let probe = directory.join(".vigil-write-test");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| format!("directory `{}` is not writable: {e}", directory.display()))?;
        let file = |signal: Signal| {
            Mutex::new(SignalFile {
                path: directory.join(format!("{}.jsonl", signal.as_str())),
                file: None,
                size: 0,
            })
        };
        Ok(FileExporter {
            files: Arc::new(Signal::ALL.map(file)),
            directory,
            rotation: config.rotation.clone(),
        })
    }
}

fn write_line(
    slot: &mut SignalFile,
    line: &[u8],
    rotation: &Rotation,
    directory: &Path,
    signal: Signal,
) -> std::io::Result<()> {
    let limit = rotation.max_megabytes << 20;
    if slot.file.is_some() && slot.size > 0 && slot.size + line.len() as u64 > limit {
        slot.file = None;
        let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .replace(':', "-");
        let rotated = directory.join(format!("{}-{stamp}.jsonl", signal.as_str()));
        std::fs::rename(&slot.path, rotated)?;
        prune(directory, signal, rotation.max_backups)?;
    }
    if slot.file.is_none() {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.path)?;
        slot.size = file.metadata()?.len();
        slot.file = Some(file);
    }
    if let Some(file) = slot.file.as_mut() {
        file.write_all(line)?;
        slot.size += line.len() as u64;
    }
    Ok(())
}

fn prune(directory: &Path, signal: Signal, keep: usize) -> std::io::Result<()> {
    let prefix = format!("{}-", signal.as_str());
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(directory)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
        })
        .collect();
    // Timestamps in the names sort chronologically.
    rotated.sort();
    let excess = rotated.len().saturating_sub(keep);
    for old in &rotated[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

impl Exporter for FileExporter {
    fn export<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            let signal = batch.signal;
            let bytes = batch.to_bytes();
            let files = self.files.clone();
            let rotation = self.rotation.clone();
            let directory = self.directory.clone();
            let result = tokio::task::spawn_blocking(move || {
                let mut line = Vec::with_capacity(bytes.len() * 2);
                protobuf_to_json(signal, &bytes, &mut line).map_err(|e| {
                    ExportError::Undecodable {
                        message: format!("batch does not decode as OTLP: {e}"),
                    }
                })?;
                line.push(b'\n');
                let index = Signal::ALL.iter().position(|s| *s == signal).unwrap_or(0);
                let mut slot = files[index].lock().unwrap_or_else(|p| p.into_inner());
                write_line(&mut slot, &line, &rotation, &directory, signal).map_err(|e| {
                    // Reopen on the next attempt: the file may have been removed or the disk freed.
                    slot.file = None;
                    ExportError::Retryable {
                        message: format!("cannot write `{}`: {e}", slot.path.display()),
                        retry_after: None,
                    }
                })
            })
            .await
            .map_err(|e| ExportError::Permanent {
                message: format!("file writer task failed: {e}"),
            })?;
            result.map(|()| Exported::default())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for slot in self.files.iter() {
                let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(file) = slot.file.take() {
                    let _ = file.sync_all();
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
