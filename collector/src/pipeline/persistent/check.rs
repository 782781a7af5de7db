//! `vigil-collector queue check DIR`: inspects a persistent queue offline and, with `--repair`, removes the
//! damaged parts (to `quarantine/`) so that what remains is clean.

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record;
use super::{
    Entry, OpenError, check_format, io_error, list_segments, lock_dir, next_entry, quarantine,
    segment_paths,
};

/// Damaged bytes found in a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub segment: PathBuf,
    /// Where the damage starts.
    pub offset: u64,
    /// Bytes damaged.
    pub len: u64,
    /// Whether it runs to the end of the file (a torn tail when it is the last segment).
    pub to_end: bool,
}

/// What a queue directory holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The queue directory.
    pub dir: PathBuf,
    /// Segment files.
    pub segments: usize,
    /// Intact records.
    pub records: u64,
    /// Intact records not yet delivered.
    pub pending_records: u64,
    /// Items in those.
    pub pending_items: u64,
    /// Undelivered records that were handed to the exporter and not confirmed: being sent, or being sent when
    /// the collector stopped or crashed. The backend may already have them; they are sent again.
    pub in_flight_records: u64,
    /// Items in those: after the process crashed (a kill, the OOM killer), the most a restart delivers twice.
    /// After a power cut more may come again: acknowledgements are written without fsync.
    pub in_flight_items: u64,
    /// Records whose payload fails its checksum (their items are lost).
    pub bad_payloads: u64,
    /// Items known to be lost: in bad payloads, and in gaps between intact records (damage, a missing
    /// segment).
    pub lost_items: u64,
    /// Damaged byte ranges.
    pub damage: Vec<Damage>,
    /// Whether damage was moved to `quarantine/`.
    pub repaired: bool,
}

impl Report {
    /// Whether nothing is damaged or missing.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.bad_payloads == 0 && self.lost_items == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:", self.dir.display())?;
        writeln!(
            f,
            "  {} segments, {} records, {} undelivered records holding {} items",
            self.segments, self.records, self.pending_records, self.pending_items
        )?;
        if self.in_flight_records > 0 {
            writeln!(
                f,
                "  {} of them ({} items) were handed to the exporter and not confirmed: they are sent \
                 again, and the backend may get them twice",
                self.in_flight_records, self.in_flight_items
            )?;
        }
        for damage in &self.damage {
            writeln!(
                f,
                "  damaged: {} bytes at offset {} of {}{}",
                damage.len,
                damage.offset,
                damage.segment.display(),
                if damage.to_end { " (to the end)" } else { "" }
            )?;
        }
        if self.bad_payloads > 0 {
            writeln!(f, "  {} records fail their checksum", self.bad_payloads)?;
        }
        if self.lost_items > 0 {
            writeln!(f, "  {} items lost", self.lost_items)?;
        }
        if self.is_clean() {
            writeln!(f, "  clean")?;
        } else if self.repaired {
            writeln!(
                f,
                "  repaired: damaged parts moved to {}",
                self.dir.join("quarantine").display()
            )?;
        } else {
            writeln!(
                f,
                "  run with --repair to move the damaged parts to quarantine/"
            )?;
        }
        Ok(())
    }
}

/// Checks every queue under `dir`: `dir` itself if it holds segments, else each subdirectory that does.
pub fn check_all(dir: &Path, repair: bool) -> Result<Vec<Report>, OpenError> {
    if !list_segments(dir).map_err(io_error(dir))?.is_empty() || dir.join("LOCK").exists() {
        return Ok(vec![check(dir, repair)?]);
    }
    let mut reports = Vec::new();
    let mut subdirs: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.join("LOCK").exists())
        .collect();
    subdirs.sort();
    for subdir in subdirs {
        reports.push(check(&subdir, repair)?);
    }
    Ok(reports)
}

/// Checks one queue directory; with `repair`, rewrites damaged segments without their damage.
pub fn check(dir: &Path, repair: bool) -> Result<Report, OpenError> {
    // Only a repair writes: a check may look at a queue a running collector holds.
    let _lock = if repair { Some(lock_dir(dir)?) } else { None };
    // Records of another format would all look damaged, and a repair would quarantine them.
    check_format(dir, false)?;
    let mut report = Report {
        dir: dir.to_path_buf(),
        ..Report::default()
    };
    let mut expected_items_before: Option<u64> = None;
    let ids = list_segments(dir).map_err(io_error(dir))?;
    let last = ids.last().copied();
    for id in ids {
        report.segments += 1;
        let (wal_path, ack_path) = segment_paths(dir, id);
        let file = File::open(&wal_path).map_err(io_error(&wal_path))?;
        let len = file.metadata().map_err(io_error(&wal_path))?.len();
        let acks = fs::read(&ack_path).unwrap_or_default();
        let (done, started) = record::ack_state(&acks);
        let mut offset = 0;
        let mut keep: Vec<Keep> = Vec::new();
        let mut damaged = false;
        // The last record read, when its payload is bad: where its damage and its tombstone were noted.
        let mut bad_last: Option<(usize, usize, u64)> = None;
        while let Some(entry) = next_entry(&file, offset, len, id).map_err(io_error(&wal_path))? {
            match entry {
                Entry::Record { offset: at, header } => {
                    offset = at + header.record_len();
                    if let Some(expected) = expected_items_before
                        && header.items_before > expected
                    {
                        let gap = header.items_before - expected;
                        report.lost_items += gap;
                        damaged = true;
                        keep.push(Keep::Tombstone {
                            seq: header.seq.saturating_sub(1),
                            items: gap,
                            items_before: expected,
                        });
                    }
                    expected_items_before = Some(header.items_before + header.items);
                    if header.tombstone {
                        keep.push(Keep::Record(at, header.record_len()));
                        continue;
                    }
                    let mut payload = vec![0u8; header.payload_len as usize];
                    file.read_exact_at(&mut payload, at + record::HEADER_LEN as u64)
                        .map_err(io_error(&wal_path))?;
                    if record::decode_payload(&header, payload.into()).is_err() {
                        report.bad_payloads += 1;
                        report.lost_items += header.items;
                        report.damage.push(Damage {
                            segment: wal_path.clone(),
                            offset: at,
                            len: header.record_len(),
                            to_end: false,
                        });
                        damaged = true;
                        bad_last = Some((report.damage.len() - 1, keep.len(), header.items));
                        keep.push(Keep::Tombstone {
                            seq: header.seq,
                            items: header.items,
                            items_before: header.items_before,
                        });
                        continue;
                    }
                    bad_last = None;
                    report.records += 1;
                    keep.push(Keep::Record(at, header.record_len()));
                    if !done.contains(&header.seq) {
                        report.pending_records += 1;
                        report.pending_items += header.items;
                        if started.contains(&header.seq) {
                            report.in_flight_records += 1;
                            report.in_flight_items += header.items;
                        }
                    }
                }
                Entry::Damaged {
                    offset: at,
                    len: bad,
                    to_end,
                } => {
                    offset = at + bad;
                    damaged = true;
                    report.damage.push(Damage {
                        segment: wal_path.clone(),
                        offset: at,
                        len: bad,
                        to_end,
                    });
                }
            }
        }
        // As at start-up: the last record written, cut short over old bytes, is a torn tail (never
        // acknowledged with `fsync: always`), not items lost.
        if Some(id) == last
            && let Some((damage, tombstone, items)) = bad_last
        {
            report.bad_payloads -= 1;
            report.lost_items -= items;
            report.damage[damage].to_end = true;
            keep.truncate(tombstone);
        }
        if repair && damaged {
            // The records end where the walk stopped (an end marker, or a recycled file's old records,
            // which are neither kept nor quarantined).
            rewrite(dir, id, &file, offset, &keep).map_err(io_error(&wal_path))?;
            report.repaired = true;
        }
    }
    Ok(report)
}

/// What a repaired segment keeps, in order.
enum Keep {
    /// An intact record: offset and length in the old file.
    Record(u64, u64),
    /// A tombstone for items lost here, so the count stays continuous and they are not counted again.
    Tombstone {
        seq: u64,
        items: u64,
        items_before: u64,
    },
}

/// Replaces segment `id` with its intact records and tombstones for what was lost, after copying every
/// damaged range to `quarantine/`.
fn rewrite(dir: &Path, id: u64, file: &File, len: u64, keep: &[Keep]) -> std::io::Result<()> {
    let records = keep.iter().filter_map(|k| match k {
        Keep::Record(at, record_len) => Some((*at, *record_len)),
        Keep::Tombstone { .. } => None,
    });
    let mut position = 0;
    for (at, record_len) in records.chain(std::iter::once((len, 0))) {
        if at > position {
            quarantine(dir, id, file, position, at - position)?;
        }
        position = at + record_len;
    }
    let (wal_path, _) = segment_paths(dir, id);
    let repaired_path = wal_path.with_extension("wal.repaired");
    let mut repaired = File::create(&repaired_path)?;
    for kept in keep {
        let bytes = match kept {
            Keep::Record(at, record_len) => {
                let mut bytes = vec![0u8; *record_len as usize];
                file.read_exact_at(&mut bytes, *at)?;
                bytes
            }
            Keep::Tombstone {
                seq,
                items,
                items_before,
            } => {
                let mut bytes = Vec::new();
                record::encode_tombstone(&mut bytes, *seq, *items, *items_before);
                bytes
            }
        };
        repaired.write_all(&bytes)?;
    }
    repaired.sync_all()?;
    fs::rename(&repaired_path, &wal_path)?;
    File::open(dir)?.sync_all()
}
