//! Alert state that survives a restart (`state_directory`): every alert instance (pending ones keep their
//! active-since time, firing ones stay firing), what each channel group was told, and the notifications handed
//! to channels but not yet delivered. One JSON file, replaced atomically (written aside, synced, renamed), and
//! only when it changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::notify::{DispatchState, Outbox};
use super::state::Alert;

/// The alerts of one rule.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedRule {
    /// Its group.
    pub group: String,
    /// The alert name.
    pub rule: String,
    /// Its instances.
    pub alerts: Vec<Alert>,
}

/// Everything saved.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Alert instances by rule.
    pub rules: Vec<SavedRule>,
    /// What the dispatcher notified.
    pub dispatch: DispatchState,
    /// Notifications not yet delivered.
    pub outbox: Outbox,
}

/// The state file and what was last written to it.
pub struct StateFile {
    path: PathBuf,
    /// The rules and dispatch parts as of the last evaluation, and the outbox (shared with the channels).
    parts: Mutex<(Vec<SavedRule>, DispatchState)>,
    outbox: Arc<Mutex<Outbox>>,
    last_written: Mutex<Vec<u8>>,
}

impl StateFile {
    /// Opens `dir/alerting-state.json` (creating `dir`), and returns what it held, if anything.
    pub fn open(dir: &Path) -> Result<(Arc<StateFile>, Option<Snapshot>), String> {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the alert state directory `{}`: {e}",
                dir.display()
            )
        })?;
        let path = dir.join("alerting-state.json");
        let snapshot = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Snapshot>(&bytes) {
                Ok(snapshot) => Some(snapshot),
                Err(e) => {
                    // Keep the unreadable file for a person to look at; start afresh.
                    let aside = dir.join("alerting-state.json.unreadable");
                    let _ = std::fs::rename(&path, &aside);
                    tracing::error!(file = %path.display(), error = %e, moved_to = %aside.display(),
                        "alert state file is unreadable; starting without the saved state");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        let mut snapshot = snapshot;
        let outbox = snapshot
            .as_mut()
            .map(|s| std::mem::take(&mut s.outbox))
            .unwrap_or_default()
            .resumed();
        let outbox = Arc::new(Mutex::new(outbox));
        Ok((
            Arc::new(StateFile {
                path,
                parts: Mutex::new((Vec::new(), DispatchState::default())),
                outbox,
                last_written: Mutex::new(Vec::new()),
            }),
            snapshot,
        ))
    }

    /// The outbox the channels share.
    pub fn outbox(&self) -> Arc<Mutex<Outbox>> {
        self.outbox.clone()
    }

    /// Replaces the rules and dispatch parts (after an evaluation), then saves.
    pub fn update(&self, rules: Vec<SavedRule>, dispatch: DispatchState) {
        *self.parts.lock().unwrap_or_else(|p| p.into_inner()) = (rules, dispatch);
        self.save();
    }

    /// Writes the state if it changed since the last write; a failure is logged, not fatal.
    pub fn save(&self) {
        let bytes = {
            let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            #[derive(Serialize)]
            struct View<'a> {
                rules: &'a [SavedRule],
                dispatch: &'a DispatchState,
                outbox: &'a Outbox,
            }
            match serde_json::to_vec(&View {
                rules: &parts.0,
                dispatch: &parts.1,
                outbox: &outbox,
            }) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialise the alert state");
                    return;
                }
            }
        };
        let mut last = self.last_written.lock().unwrap_or_else(|p| p.into_inner());
        if *last == bytes {
            return;
        }
        match write_atomically(&self.path, &bytes) {
            Ok(()) => *last = bytes,
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "cannot save the alert state")
            }
        }
    }
}

/// Writes `bytes` to `path` so that a reader (or a restart after a crash) sees the old or the new content,
/// never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let aside = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&aside)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&aside, path)?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_only_changes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (file, before) = StateFile::open(dir.path()).unwrap();
        assert!(before.is_none());
        file.update(
            vec![SavedRule {
                group: "g".into(),
                rule: "r".into(),
                alerts: Vec::new(),
            }],
            DispatchState::default(),
        );
        let path = dir.path().join("alerting-state.json");
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        file.save();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            written
        );
        let (_, after) = StateFile::open(dir.path()).unwrap();
        let after = after.unwrap();
        assert_eq!(after.rules[0].rule, "r");
    }

    #[test]
    fn an_unreadable_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alerting-state.json"), b"{not json").unwrap();
        let (_, snapshot) = StateFile::open(dir.path()).unwrap();
        assert!(snapshot.is_none());
        assert!(dir.path().join("alerting-state.json.unreadable").exists());
    }
}
