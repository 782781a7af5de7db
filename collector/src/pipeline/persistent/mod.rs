//! The persistent sending queue: an exporter's queue kept in write-ahead segment files, so that a `kill -9`,
//! an OOM kill or a power cut loses nothing a client was told was accepted.
//!
//! * **Writing.** One writer thread per queue appends records ([`record`]) to the active segment. It takes
//!   every batch waiting for it as one group, writes the group with one `write`, and with `fsync: always`
//!   syncs once for the whole group (group commit) before releasing the batches' receipts, which is when the
//!   receivers answer their clients (see [`crate::pipeline::receipt`]). With `fsync: interval(d)` receipts are
//!   released after the write and the data is synced at most `d` later; with `never`, the OS decides.
//! * **Recycling.** A segment every record of which is done is not deleted but kept as a spare (at most
//!   [`MAX_SPARES`]) and renamed to be the next segment the writer starts, which it overwrites from the
//!   start: the file's pages are still in the page cache, where a new file's must first be allocated (on a
//!   small VM that is most of what writing costs: 0.4–0.7 GB/s for a new file against 12 GB/s for cached
//!   pages), and `fdatasync` has no file size to update. PostgreSQL recycles its WAL segments for the same
//!   reasons. The old records left after the new ones are told apart by their sequence numbers, which are
//!   below the segment's first ([`next_entry`]).
//! * **Reading.** Consumers read records in order from the oldest segment, straight from the files, so a
//!   backlog of any size costs one batch of memory per consumer. Each record handed out is marked `started`
//!   in the segment's acknowledgement file, and `done` once the exporter has finished with it. A segment whose
//!   records are all done is deleted.
//! * **Restart.** Records not marked done are delivered again (at least once). Those marked `started` may have
//!   reached the backend before the crash: they are counted in `vigil_exporter_redelivered_items_total`.
//! * **Damage.** A torn tail, a flipped bit or a missing segment is detected by checksums and by the item
//!   count every record carries; the bad bytes are moved to `quarantine/`, the exact number of items lost is
//!   logged and counted (`vigil_exporter_dropped_items_total{reason="queue_corrupted"}`), and delivery goes on.
//! * **Full.** Past `max_size_mib` of undelivered records, admission refuses (the receiver answers
//!   "retry later"), and so does a stage behind admission for the batches whose clients still wait
//!   ([`crate::pipeline::fanout`]); a failed write (disk full) fails the batches' receipts, so their clients
//!   retry.

pub mod check;
pub mod record;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use tokio::sync::{Notify, watch};

use self::record::{AckKind, FORMAT_VERSION, HEADER_LEN, Header};
use super::{Batch, DEFAULT_RETRY_AFTER, Refusal};
use crate::telemetry::{Counter, Problems, Registry};

/// `sending_queue.storage`: keep the queue on disk.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Where queues live; each exporter gets a subdirectory named after its id.
    pub directory: PathBuf,
    /// When written records are synced to disk.
    #[serde(default)]
    pub fsync: Fsync,
    /// Most mebibytes of undelivered records; past it, receivers refuse new data with a retryable error.
    #[serde(default = "default_max_size_mib")]
    pub max_size_mib: u64,
}

fn default_max_size_mib() -> u64 {
    1024
}

/// `fsync`: when the queue syncs what it wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// Before a client is answered (one sync per group of concurrent writes).
    #[default]
    Always,
    /// At most this long after a write; a power cut may lose that window, a process crash loses nothing.
    Interval(Duration),
    /// When the operating system decides; a process crash loses nothing, a power cut may lose more.
    Never,
}

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Fsync::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Fsync {
    /// Parses `always`, `never` or `interval(<duration>)`.
    pub fn parse(text: &str) -> Result<Fsync, String> {
        let text = text.trim();
        match text {
            "always" => return Ok(Fsync::Always),
            "never" => return Ok(Fsync::Never),
            _ => {}
        }
        let inner = text
            .strip_prefix("interval(")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(|| {
                format!("`{text}` is not a fsync policy; use `always`, `never` or `interval(1s)`")
            })?;
        let interval = humantime::parse_duration(inner.trim())
            .map_err(|e| format!("`{inner}` in `{text}` is not a duration ({e})"))?;
        if interval.is_zero() {
            return Err("`interval(0s)` would sync on every write: use `always`".into());
        }
        Ok(Fsync::Interval(interval))
    }
}

/// Why a persistent queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A file or directory could not be created, read or locked.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Another process holds the directory.
    #[error("{0} is in use by another collector (its LOCK file is locked)")]
    Locked(PathBuf),
    /// The directory holds a queue in a format version this build does not read.
    #[error(
        "{path} holds `{found}`: a persistent queue in a format this build does not read (it reads `vigil-queue \
         {version}`). Nothing in it was changed: deliver it with the build that wrote it, or move the \
         directory aside to start an empty queue",
        version = FORMAT_VERSION
    )]
    UnknownFormat {
        /// The `FORMAT` file.
        path: PathBuf,
        /// What it holds (its first line, at most 64 characters).
        found: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Identifies a record handed to a consumer, to be given back to [`PersistentQueue::done`].
#[derive(Debug)]
pub struct Ticket {
    segment: u64,
    seq: u64,
    items: u64,
    bytes: u64,
}

struct Segment {
    wal_path: PathBuf,
    ack_path: PathBuf,
    file: Arc<File>,
    ack: File,
    /// Bytes of whole records readers may read.
    written: u64,
    /// Bytes on disk in the two files.
    disk_bytes: u64,
    /// Written by this run's writer (never by a repair), so it may be recycled once finished.
    recyclable: bool,
    /// No more records will be appended.
    sealed: bool,
    /// The reader has passed its end.
    read_through: bool,
    /// Records the reader handed out or skipped as already done.
    claimed: u64,
    /// Of those, the ones finished.
    done: u64,
    /// From before a restart: records already done (skipped) and records handed out but not done.
    recovered_done: HashSet<u64>,
    recovered_started: HashSet<u64>,
}

impl Segment {
    fn finished(&self) -> bool {
        self.sealed && self.read_through && self.done == self.claimed
    }
}

#[derive(Default)]
struct Cursor {
    segment: u64,
    offset: u64,
    /// `items_before` the next record should have; `None` until the first record is read.
    expected_items_before: Option<u64>,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    /// Finished segment files kept for the writer to reuse, with their lengths.
    spares: Vec<(PathBuf, u64)>,
    cursor: Cursor,
    pending_items: u64,
    pending_bytes: u64,
    in_flight: BTreeMap<u64, u64>,
}

struct Accounts {
    written: Counter,
    redelivered: Counter,
    corrupted: Counter,
    corrupt_bytes: Counter,
    write_errors: Counter,
}

/// How the queue's appends and syncs reach the disk: the operating system, or in tests a layer that fails on
/// demand (a full disk, a torn write, a failed sync), so that what clients are told and what stays on disk
/// can be checked for each.
pub(crate) trait SegmentIo: Send + Sync {
    /// Writes `parts`, end to end, into segment `file` at `offset` (a recycled segment is overwritten in
    /// place).
    fn write_at(&self, file: &File, parts: &[IoSlice<'_>], offset: u64) -> io::Result<()>;
    /// Appends `bytes` to acknowledgement `file`.
    fn append(&self, file: &File, bytes: &[u8]) -> io::Result<()>;
    /// Makes what was written to `file` durable.
    fn sync(&self, file: &File) -> io::Result<()>;
}

/// The operating system.
struct Os;

impl SegmentIo for Os {
    fn write_at(&self, file: &File, parts: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        write_all_vectored_at(file, parts, offset)
    }

    fn append(&self, mut file: &File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// Writes `parts` end to end at `offset` with `pwritev`, so a group's chunks go to the file without first being
/// copied into one buffer (std has no positional vectored write).
fn write_all_vectored_at(file: &File, parts: &[IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// Most slices one call takes (Linux' `IOV_MAX`).
    const IOV_MAX: usize = 1024;
    let mut owned: Vec<IoSlice<'_>> = parts.to_vec();
    let mut rest: &mut [IoSlice<'_>] = &mut owned;
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let count = rest.len().min(IOV_MAX);
        let Ok(at) = libc::off_t::try_from(offset) else {
            return Err(io::Error::other("segment offset out of range"));
        };
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; the `count` slices are valid
        // for reads for the duration of the call, and the descriptor is open for writing.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                rest.as_ptr().cast::<libc::iovec>(),
                count as libc::c_int,
                at,
            )
        };
        if written < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += written as u64;
        IoSlice::advance_slices(&mut rest, written as usize);
    }
    Ok(())
}

struct Shared {
    id: String,
    io: Arc<dyn SegmentIo>,
    /// The name the queue's own problems (a failed write or sync) are reported under on `/readyz`:
    /// `queue/<exporter id>`, apart from the exporter's, so a good write does not clear a backend problem.
    problem_key: String,
    dir: PathBuf,
    state: Mutex<State>,
    readable: Notify,
    room: Notify,
    /// Bytes handed to the writer and not yet written.
    queued_bytes: AtomicU64,
    max_bytes: u64,
    closed: AtomicBool,
    accounts: Accounts,
    problems: Problems,
    disk_bytes: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

enum Job {
    Write(Batch),
    Close,
}

/// An exporter's persistent sending queue.
pub struct PersistentQueue {
    shared: Arc<Shared>,
    writer: Mutex<Option<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>>,
    _lock: File,
}

/// The directory of exporter `id`'s queue under `directory`.
pub fn queue_dir(directory: &Path, id: &str) -> PathBuf {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    directory.join(name)
}

fn segment_paths(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("seg-{id:020}.wal")),
        dir.join(format!("seg-{id:020}.ack")),
    )
}

/// Finished segment files kept for reuse, at most: enough for a writer to always find one while the readers
/// keep up, little enough disk (four segments) when they do not.
pub const MAX_SPARES: usize = 4;

/// Where finished segment `id` waits to be reused.
fn spare_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("spare-{id:020}.wal"))
}

/// Deletes the spare segment files a previous run left: their old records are not worth reasoning about
/// across runs (a repair may have written them), and the next run makes its own.
fn remove_spares(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("spare-") && n.ends_with(".wal"))
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The ids of the segment files in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_prefix("seg-")
            .and_then(|rest| rest.strip_suffix(".wal"))
            .and_then(|digits| digits.parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The size a segment grows to before a new one is started: small enough that delivered data is freed
/// soon, large enough that files stay few.
fn segment_limit(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(1 << 20, 64 << 20)
}

/// One step through a segment file.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// A record whose header is intact.
    Record {
        /// Where it starts.
        offset: u64,
        /// Its header.
        header: Header,
    },
    /// Bytes that are no valid record; a valid record follows unless `to_end`.
    Damaged {
        /// Where they start.
        offset: u64,
        /// How many.
        len: u64,
        /// Whether they run to `end` (a torn tail, when this is the last segment written).
        to_end: bool,
    },
}

/// Reads the entry at `offset` of segment `first_seq` (its id: the sequence number of its first record), whose
/// valid part ends at `end` at most; `None` at the end of its records.
///
/// The writer ends every group of records with an end marker, which the next group overwrites: a marker is
/// where the records end. A recycled segment file still holds records of its earlier use after the new ones;
/// those have sequence numbers below `first_seq` (sequence numbers only grow, and the writer writes no
/// tombstones) and are not read. Anything else that is no record of this segment is damage: in the middle
/// when one of its records follows (a hole a power cut left), else a torn tail, which ends where old records
/// begin.
pub fn next_entry(file: &File, offset: u64, end: u64, first_seq: u64) -> io::Result<Option<Entry>> {
    // A repair's tombstone for items lost before the segment's first record carries the sequence number
    // just before it.
    let belongs = |header: &Header| {
        header.seq >= first_seq || (header.tombstone && header.seq.saturating_add(1) >= first_seq)
    };
    if offset >= end {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_LEN];
    let mut old_here = false;
    if end - offset >= HEADER_LEN as u64 {
        file.read_exact_at(&mut header, offset)?;
        if let Some(header) = record::decode_header(&header) {
            if header.end && belongs(&header) {
                return Ok(None);
            }
            if belongs(&header) {
                if offset + header.record_len() <= end {
                    return Ok(Some(Entry::Record { offset, header }));
                }
                return Ok(Some(Entry::Damaged {
                    offset,
                    len: end - offset,
                    to_end: true,
                }));
            }
            old_here = true;
        }
    }
    // Not a record of this segment: look for the next one in the rest of it (segments are small), byte by
    // byte, since a hole may end inside what an old record header claims; note where old records begin.
    let mut rest = vec![0u8; (end - offset) as usize];
    file.read_exact_at(&mut rest, offset)?;
    let mut old_from = old_here.then_some(0);
    let mut from = 1;
    while let Some((at, header)) = record::find_next_header(&rest, from) {
        if belongs(&header) {
            return Ok(Some(Entry::Damaged {
                offset,
                len: at as u64,
                to_end: false,
            }));
        }
        old_from.get_or_insert(at);
        from = at + 1;
    }
    Ok(match old_from {
        // Old records from here on: the segment's records ended.
        Some(0) => None,
        Some(at) => Some(Entry::Damaged {
            offset,
            len: at as u64,
            to_end: true,
        }),
        None => Some(Entry::Damaged {
            offset,
            len: end - offset,
            to_end: true,
        }),
    })
}

/// Whether the payload of the record at `offset` matches its header.
fn payload_intact(file: &File, offset: u64, header: &Header) -> bool {
    let mut payload = vec![0u8; header.payload_len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)
        .is_ok_and(|()| record::decode_payload(header, payload.into()).is_ok())
}

/// Copies `len` bytes at `offset` of segment `id` to `quarantine/` beside it, for a post-mortem.
fn quarantine(dir: &Path, id: u64, file: &File, offset: u64, len: u64) -> io::Result<PathBuf> {
    let quarantine = dir.join("quarantine");
    fs::create_dir_all(&quarantine)?;
    let path = quarantine.join(format!("seg-{id:020}-at-{offset}.bad"));
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, offset)?;
    fs::write(&path, bytes)?;
    Ok(path)
}

/// Takes the queue directory's `LOCK` file, so that one process at a time writes the queue.
fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let lock_path = dir.join("LOCK");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(OpenError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(io_error(&lock_path)(e)),
    }
}

/// Checks that `dir` holds a queue in this build's format, naming the format in a `FORMAT` file when `write`
/// allows and the directory has none yet (a new queue, or one an earlier build wrote in version 1).
fn check_format(dir: &Path, write: bool) -> Result<(), OpenError> {
    let path = dir.join(record::FORMAT_FILE);
    match fs::read(&path) {
        Ok(contents) => match record::decode_format(&contents) {
            Some(record::FORMAT_VERSION) => Ok(()),
            _ => Err(OpenError::UnknownFormat {
                found: String::from_utf8_lossy(&contents)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(64)
                    .collect(),
                path,
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A missing file means version 1, which this build reads: failing to write it (a full disk) must
            // not keep the queue from opening and draining the backlog that would free the space.
            if write && let Err(e) = write_format(dir, &path) {
                tracing::warn!(
                    directory = %dir.display(), error = %e,
                    "persistent queue: could not write its FORMAT file; it is written at the next start"
                );
            }
            Ok(())
        }
        Err(e) => Err(io_error(&path)(e)),
    }
}

/// Writes `FORMAT` whole or not at all (a torn one would make the queue unreadable), leaving no staged file
/// behind when it cannot.
fn write_format(dir: &Path, path: &Path) -> io::Result<()> {
    let staged = dir.join(format!("{}.tmp", record::FORMAT_FILE));
    let written = File::create(&staged)
        .and_then(|mut file| {
            file.write_all(record::encode_format().as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&staged, path))
        .and_then(|()| sync_dir(dir));
    if written.is_err() {
        let _ = fs::remove_file(&staged);
    }
    written
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What the writer continues from.
struct Resume {
    next_seq: u64,
    items_before: u64,
}

impl PersistentQueue {
    /// Opens (or creates) exporter `id`'s queue under `settings.directory`, recovering what a previous run left.
    pub fn open(
        id: &str,
        settings: &StorageSettings,
        registry: &Registry,
    ) -> Result<Arc<PersistentQueue>, OpenError> {
        Self::open_with(id, settings, registry, Arc::new(Os))
    }

    /// [`PersistentQueue::open`] with the appends and syncs going through `io`.
    pub(crate) fn open_with(
        id: &str,
        settings: &StorageSettings,
        registry: &Registry,
        io: Arc<dyn SegmentIo>,
    ) -> Result<Arc<PersistentQueue>, OpenError> {
        let dir = queue_dir(&settings.directory, id);
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock = lock_dir(&dir)?;
        check_format(&dir, true)?;
        let labels = [("exporter", id)];
        let dropped = |reason: &'static str| registry.exporter_dropped(id, reason);
        let accounts = Accounts {
            written: registry.counter(
                "vigil_exporter_queue_written_items_total",
                "Items written to an exporter's persistent queue.",
                &labels,
            ),
            redelivered: registry.counter(
                "vigil_exporter_redelivered_items_total",
                "Items delivered again after a restart because the previous run may have sent them.",
                &labels,
            ),
            corrupted: dropped("queue_corrupted"),
            corrupt_bytes: registry.counter(
                "vigil_exporter_queue_corrupt_bytes_total",
                "Damaged bytes found in a persistent queue and moved to its quarantine directory.",
                &labels,
            ),
            write_errors: registry.counter(
                "vigil_exporter_queue_write_errors_total",
                "Failed writes to a persistent queue; their clients were told to retry.",
                &labels,
            ),
        };
        let max_bytes = settings.max_size_mib.saturating_mul(1 << 20);
        let (state, resume, disk_bytes) = recover(&dir, id, &accounts)?;
        let shared = Arc::new(Shared {
            id: id.to_string(),
            io,
            problem_key: format!("queue/{id}"),
            dir: dir.clone(),
            state: Mutex::new(state),
            readable: Notify::new(),
            room: Notify::new(),
            queued_bytes: AtomicU64::new(0),
            max_bytes,
            closed: AtomicBool::new(false),
            accounts,
            problems: registry.problems().clone(),
            disk_bytes: AtomicU64::new(disk_bytes),
        });
        publish_gauges(&shared, registry, id);
        let (jobs, received) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            fsync: settings.fsync,
            segment_limit: segment_limit(max_bytes),
            active: None,
            next_seq: resume.next_seq,
            items_before: resume.items_before,
            syncer: match settings.fsync {
                Fsync::Interval(interval) => Some(Syncer::start(shared.clone(), interval)),
                Fsync::Always | Fsync::Never => None,
            },
        };
        let thread = std::thread::Builder::new()
            .name(format!("queue-{id}"))
            .spawn(move || writer.run(received))
            .map_err(io_error(&dir))?;
        Ok(Arc::new(PersistentQueue {
            shared,
            writer: Mutex::new(Some((jobs, thread))),
            _lock: lock,
        }))
    }

    /// Undelivered items (written and not yet done).
    pub fn pending_items(&self) -> u64 {
        self.shared.lock().pending_items
    }

    fn room_error(&self) -> Option<Refusal> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Some(Refusal::ShuttingDown);
        }
        let used =
            self.shared.lock().pending_bytes + self.shared.queued_bytes.load(Ordering::Acquire);
        (used >= self.shared.max_bytes).then_some(Refusal::Full {
            retry_after: DEFAULT_RETRY_AFTER,
        })
    }

    /// Admission: refuses when the queue is at `max_size_mib` or closed.
    pub fn try_reserve(&self) -> Result<(), Refusal> {
        match self.room_error() {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Waits for room below `max_size_mib`.
    pub async fn reserve(&self) -> Result<(), Refusal> {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.room_error() {
                None => return Ok(()),
                Some(Refusal::Full { .. }) => room.await,
                Some(refusal) => return Err(refusal),
            }
        }
    }

    /// Hands `batch` to the writer; its receipts are released once it is written with the queue's durability.
    pub fn write(&self, mut batch: Batch) {
        let guard = lock(&self.writer);
        let Some((jobs, _)) = guard.as_ref() else {
            batch.fail_receipts(&Refusal::ShuttingDown);
            return;
        };
        let bytes = batch.byte_len() as u64;
        self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if let Err(mpsc::SendError(job)) = jobs.send(Job::Write(batch)) {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            if let Job::Write(mut batch) = job {
                batch.fail_receipts(&Refusal::ShuttingDown);
            }
        }
    }

    /// The next record to export, read from disk; `None` once `closing` is raised.
    pub async fn take(&self, closing: &mut watch::Receiver<bool>) -> Option<(Batch, Ticket)> {
        loop {
            let readable = self.shared.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            if *closing.borrow() {
                return None;
            }
            let claimed = claim(&self.shared);
            let Some((file, offset, header, segment)) = claimed else {
                tokio::select! {
                    _ = readable => continue,
                    _ = crate::pipeline::raised(closing) => return None,
                }
            };
            let read = tokio::task::spawn_blocking(move || {
                let mut payload = vec![0u8; header.payload_len as usize];
                file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)
                    .map(|()| payload)
            })
            .await;
            let ticket = Ticket {
                segment,
                seq: header.seq,
                items: header.items,
                bytes: header.record_len(),
            };
            let payload = match read.unwrap_or_else(|e| Err(io::Error::other(e))) {
                Ok(payload) => payload,
                Err(e) => {
                    self.lose(ticket, &format!("could not be read: {e}"));
                    continue;
                }
            };
            match record::decode_payload(&header, Bytes::from(payload)) {
                Ok(batch) => return Some((batch, ticket)),
                Err(e) => {
                    self.shared.accounts.corrupt_bytes.add(header.record_len());
                    self.lose(ticket, &e.to_string());
                }
            }
        }
    }

    /// A record that cannot be delivered: counted as lost to corruption, logged, and finished.
    fn lose(&self, ticket: Ticket, why: &str) {
        self.shared.accounts.corrupted.add(ticket.items);
        tracing::error!(
            exporter = %self.shared.id, seq = ticket.seq, items = ticket.items, problem = why,
            "persistent queue record is damaged; its items are lost"
        );
        self.done(ticket);
    }

    /// The exporter has finished with a record (delivered it, or dropped and counted it).
    pub fn done(&self, ticket: Ticket) {
        let mut state = self.shared.lock();
        state.pending_items = state.pending_items.saturating_sub(ticket.items);
        state.pending_bytes = state.pending_bytes.saturating_sub(ticket.bytes);
        state.in_flight.remove(&ticket.seq);
        if let Some(segment) = state.segments.get_mut(&ticket.segment) {
            segment.done += 1;
            // A lost acknowledgement only means the record is delivered again after a restart.
            let _ = self
                .shared
                .io
                .append(&segment.ack, &record::encode_ack(ticket.seq, AckKind::Done));
        }
        retire_finished(&self.shared, &mut state);
        drop(state);
        self.shared.room.notify_waiters();
    }

    /// Stops admission and waits for the writer to write (and sync) what it was given.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let writer = lock(&self.writer).take();
        if let Some((jobs, thread)) = writer {
            let _ = jobs.send(Job::Close);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.shared.readable.notify_waiters();
        self.shared.room.notify_waiters();
        let pending = self.pending_items();
        if pending > 0 {
            tracing::info!(
                exporter = %self.shared.id, items = pending, dir = %self.shared.dir.display(),
                "items remain in the persistent queue; they are delivered after the next start"
            );
        }
    }
}

/// Deletes segments every record of which is done.
fn retire_finished(shared: &Shared, state: &mut State) {
    let finished: Vec<u64> = state
        .segments
        .iter()
        .filter(|(_, segment)| segment.finished())
        .map(|(id, _)| *id)
        .collect();
    for id in finished {
        if let Some(segment) = state.segments.remove(&id) {
            shared
                .disk_bytes
                .fetch_sub(segment.disk_bytes, Ordering::AcqRel);
            // The records go first, then their acknowledgements: a crash between the two leaves
            // acknowledgements of nothing, never records without theirs.
            let spare = spare_path(&shared.dir, id);
            let len = segment.file.metadata().map(|m| m.len());
            let kept = segment.recyclable
                && state.spares.len() < MAX_SPARES
                && len.is_ok()
                && fs::rename(&segment.wal_path, &spare).is_ok();
            if kept {
                let len = len.unwrap_or(0);
                shared.disk_bytes.fetch_add(len, Ordering::AcqRel);
                state.spares.push((spare, len));
            } else {
                let _ = fs::remove_file(&segment.wal_path);
            }
            let _ = fs::remove_file(&segment.ack_path);
        }
    }
}

/// Finds the next record to hand out and marks it started; `None` when the reader has caught up.
fn claim(shared: &Shared) -> Option<(Arc<File>, u64, Header, u64)> {
    let mut guard = shared.lock();
    let state = &mut *guard;
    loop {
        let id = state.cursor.segment;
        let Some(segment) = state.segments.get_mut(&id) else {
            // The cursor's segment is gone (finished): move to the next one, if any.
            let next = state.segments.range(id..).next().map(|(id, _)| *id)?;
            state.cursor.segment = next;
            state.cursor.offset = 0;
            continue;
        };
        let entry = next_entry(&segment.file, state.cursor.offset, segment.written, id)
            .unwrap_or_else(|e| {
                tracing::error!(
                    exporter = %shared.id, segment = %segment.wal_path.display(), error = %e,
                    "persistent queue segment could not be read; skipping the rest of it"
                );
                Some(Entry::Damaged {
                    offset: state.cursor.offset,
                    len: segment.written.saturating_sub(state.cursor.offset),
                    to_end: true,
                })
            });
        match entry {
            None if segment.sealed => {
                segment.read_through = true;
                let next = state.segments.range(id + 1..).next().map(|(id, _)| *id);
                retire_finished(shared, state);
                state.cursor.segment = next?;
                state.cursor.offset = 0;
            }
            None => return None,
            Some(Entry::Damaged { offset, len, .. }) => {
                let moved = quarantine(&shared.dir, id, &segment.file, offset, len);
                tracing::error!(
                    exporter = %shared.id, segment = %segment.wal_path.display(), offset, bytes = len,
                    quarantined = %moved.as_ref().map_or_else(|e| format!("failed: {e}"), |p| p.display().to_string()),
                    "persistent queue segment is damaged; the items lost are counted at the next intact record"
                );
                shared.accounts.corrupt_bytes.add(len);
                state.pending_bytes = state.pending_bytes.saturating_sub(len);
                state.cursor.offset = offset + len;
            }
            Some(Entry::Record { offset, header }) => {
                segment.claimed += 1;
                let already_done = segment.recovered_done.remove(&header.seq) || header.tombstone;
                let redelivery = segment.recovered_started.remove(&header.seq);
                if !already_done {
                    let _ = shared.io.append(
                        &segment.ack,
                        &record::encode_ack(header.seq, AckKind::Started),
                    );
                }
                let file = segment.file.clone();
                if already_done {
                    segment.done += 1;
                }
                state.cursor.offset = offset + header.record_len();
                if let Some(expected) = state.cursor.expected_items_before
                    && header.items_before > expected
                {
                    let lost = header.items_before - expected;
                    shared.accounts.corrupted.add(lost);
                    state.pending_items = state.pending_items.saturating_sub(lost);
                    tracing::error!(
                        exporter = %shared.id, items = lost, before_seq = header.seq,
                        "persistent queue lost items to damage or a missing segment"
                    );
                }
                state.cursor.expected_items_before = Some(header.items_before + header.items);
                if already_done {
                    continue;
                }
                if redelivery {
                    shared.accounts.redelivered.add(header.items);
                }
                state.in_flight.insert(header.seq, header.enqueued_unix_ms);
                return Some((file, offset, header, id));
            }
        }
    }
}

/// Reads what a previous run left: segments, their acknowledgements, the position to continue writing from.
fn recover(dir: &Path, id: &str, accounts: &Accounts) -> Result<(State, Resume, u64), OpenError> {
    remove_spares(dir).map_err(io_error(dir))?;
    let mut state = State {
        segments: BTreeMap::new(),
        spares: Vec::new(),
        cursor: Cursor::default(),
        pending_items: 0,
        pending_bytes: 0,
        in_flight: BTreeMap::new(),
    };
    let mut resume = Resume {
        next_seq: 0,
        items_before: 0,
    };
    let mut disk_bytes = 0;
    let ids = list_segments(dir).map_err(io_error(dir))?;
    let last = ids.last().copied();
    for segment_id in ids {
        let (wal_path, ack_path) = segment_paths(dir, segment_id);
        let file = File::open(&wal_path).map_err(io_error(&wal_path))?;
        let mut len = file.metadata().map_err(io_error(&wal_path))?.len();
        let acks = match fs::read(&ack_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&ack_path)(e)),
        };
        let (done, started) = record::ack_state(&acks);
        // Count what is undelivered, and find where the valid part of the segment ends.
        let mut offset = 0;
        let mut written = 0;
        let mut seen_done = 0;
        let mut records = 0;
        let mut damaged_within = false;
        let mut last_record = None;
        while let Some(entry) =
            next_entry(&file, offset, len, segment_id).map_err(io_error(&wal_path))?
        {
            match entry {
                Entry::Record { offset: at, header } => {
                    records += 1;
                    offset = at + header.record_len();
                    written = offset;
                    if done.contains(&header.seq) || header.tombstone {
                        seen_done += 1;
                    } else {
                        state.pending_items += header.items;
                        state.pending_bytes += header.record_len();
                    }
                    if header.seq + 1 > resume.next_seq {
                        resume.next_seq = header.seq + 1;
                        resume.items_before = header.items_before + header.items;
                    }
                    last_record = Some((at, header));
                }
                Entry::Damaged {
                    offset: at,
                    len: bad,
                    to_end,
                } => {
                    offset = at + bad;
                    if to_end {
                        // A torn tail (a write cut short) or garbage to the end: nothing after it to read.
                        accounts.corrupt_bytes.add(bad);
                        let moved = quarantine(dir, segment_id, &file, at, bad);
                        tracing::error!(
                            exporter = id, segment = %wal_path.display(), offset = at, bytes = bad,
                            last_segment = Some(segment_id) == last,
                            quarantined = %moved.as_ref().map_or_else(|e| format!("failed: {e}"), |p| p.display().to_string()),
                            "persistent queue segment ends in an incomplete or damaged record; \
                             with `fsync: always` it was never acknowledged to a client"
                        );
                    } else {
                        damaged_within = true;
                        written = offset;
                    }
                }
            }
        }
        // A write cut short in a recycled file leaves a whole header over old bytes that make its record look
        // complete. The last record written is checked in full: one that does not check out is the torn tail
        // it is (never acknowledged with `fsync: always`), not items lost.
        if Some(segment_id) == last
            && let Some((at, header)) = last_record
            && !header.tombstone
            && written == at + header.record_len()
            && !payload_intact(&file, at, &header)
        {
            accounts.corrupt_bytes.add(header.record_len());
            let moved = quarantine(dir, segment_id, &file, at, header.record_len());
            tracing::error!(
                exporter = id, segment = %wal_path.display(), offset = at, bytes = header.record_len(),
                quarantined = %moved.as_ref().map_or_else(|e| format!("failed: {e}"), |p| p.display().to_string()),
                "persistent queue segment ends in a record cut short; \
                 with `fsync: always` it was never acknowledged to a client"
            );
            // Cut off for good: once later segments exist this one is no longer the last written.
            let cut = OpenOptions::new()
                .write(true)
                .open(&wal_path)
                .and_then(|f| f.set_len(at).and_then(|()| f.sync_all()));
            if let Err(e) = cut {
                return Err(io_error(&wal_path)(e));
            }
            len = at;
            records -= 1;
            written = at;
            if done.contains(&header.seq) {
                seen_done -= 1;
            } else {
                state.pending_items -= header.items;
                state.pending_bytes -= header.record_len();
            }
            resume.next_seq = header.seq;
            resume.items_before = header.items_before;
        }
        // Damage inside it is left for the reader, which counts the items lost there.
        let finished_before = records > 0 && seen_done == records && !damaged_within;
        if finished_before || (records == 0 && written == 0) {
            // Everything in it was delivered (or it holds nothing): it is not needed.
            let _ = fs::remove_file(&wal_path);
            let _ = fs::remove_file(&ack_path);
            continue;
        }
        let ack = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ack_path)
            .map_err(io_error(&ack_path))?;
        let segment_disk = len + acks.len() as u64;
        disk_bytes += segment_disk;
        if state.segments.is_empty() {
            state.cursor.segment = segment_id;
        }
        if !started.is_empty() {
            tracing::warn!(
                exporter = id, records = started.len(), segment = %wal_path.display(),
                "records were being exported when the collector stopped; they are delivered again"
            );
        }
        state.segments.insert(
            segment_id,
            Segment {
                wal_path,
                ack_path,
                file: Arc::new(file),
                ack,
                written,
                disk_bytes: segment_disk,
                recyclable: false,
                sealed: true,
                read_through: false,
                claimed: 0,
                done: 0,
                recovered_done: done,
                recovered_started: started,
            },
        );
    }
    if let Some(last_id) = last {
        resume.next_seq = resume.next_seq.max(last_id);
    }
    if state.pending_items > 0 {
        tracing::info!(
            exporter = id,
            items = state.pending_items,
            bytes = state.pending_bytes,
            "persistent queue holds undelivered items from a previous run; delivering them"
        );
    }
    Ok((state, resume, disk_bytes))
}

fn publish_gauges(shared: &Arc<Shared>, registry: &Registry, id: &str) {
    let labels = [("exporter", id)];
    let reader = shared.clone();
    registry.gauge_fn(
        "vigil_exporter_queue_items",
        "Items in an exporter's persistent queue not yet delivered.",
        &labels,
        move || reader.lock().pending_items as f64,
    );
    let reader = shared.clone();
    registry.gauge_fn(
        "vigil_exporter_queue_bytes",
        "Bytes of records in an exporter's persistent queue not yet delivered.",
        &labels,
        move || reader.lock().pending_bytes as f64,
    );
    let reader = shared.clone();
    registry.gauge_fn(
        "vigil_exporter_queue_disk_bytes",
        "Bytes an exporter's persistent queue occupies on disk.",
        &labels,
        move || reader.disk_bytes.load(Ordering::Acquire) as f64,
    );
    let capacity = shared.max_bytes as f64;
    registry.gauge_fn(
        "vigil_exporter_queue_max_bytes",
        "Bytes of undelivered records past which a persistent queue refuses new data.",
        &labels,
        move || capacity,
    );
    let reader = shared.clone();
    registry.gauge_fn(
        "vigil_exporter_queue_oldest_item_age_seconds",
        "Age of the oldest undelivered item in an exporter's persistent queue (0 when empty).",
        &labels,
        move || {
            let oldest = oldest_unix_ms(&reader);
            oldest.map_or(0.0, |ms| now_unix_ms().saturating_sub(ms) as f64 / 1000.0)
        },
    );
}

/// When the oldest undelivered record was written: the oldest in flight, or the next one to read.
fn oldest_unix_ms(shared: &Shared) -> Option<u64> {
    let state = shared.lock();
    if let Some((_, ms)) = state.in_flight.first_key_value() {
        return Some(*ms);
    }
    let segment = state.segments.get(&state.cursor.segment)?;
    let mut offset = state.cursor.offset;
    // Skip records a previous run finished, as the reader will.
    loop {
        match next_entry(&segment.file, offset, segment.written, state.cursor.segment).ok()?? {
            Entry::Record { header, offset: at } => {
                if !segment.recovered_done.contains(&header.seq) && !header.tombstone {
                    return Some(header.enqueued_unix_ms);
                }
                offset = at + header.record_len();
            }
            Entry::Damaged {
                offset: at, len, ..
            } => offset = at + len,
        }
    }
}

struct Active {
    id: u64,
    file: Arc<File>,
    /// Bytes of whole records written.
    len: u64,
    /// The file's length (more than `len` in a recycled segment until the new records pass the old).
    file_len: u64,
}

/// With `fsync: interval(d)`, syncs every `d` the files written since its last round, on its own thread, so
/// the writer never stops writing to sync (and a steady stream of writes cannot postpone a sync).
struct Syncer {
    written: Arc<Mutex<Vec<Arc<File>>>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(shared: Arc<Shared>, interval: Duration) -> Syncer {
        let written: Arc<Mutex<Vec<Arc<File>>>> = Arc::default();
        let (stop, stopped) = mpsc::channel::<()>();
        let files = written.clone();
        let thread = std::thread::Builder::new()
            .name(format!("queue-sync-{}", shared.id))
            .spawn(move || {
                loop {
                    // Ends (after a last round) once the writer is gone.
                    let last = !matches!(
                        stopped.recv_timeout(interval),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    );
                    let round = std::mem::take(&mut *lock(&files));
                    for file in round {
                        if let Err(e) = shared.io.sync(&file) {
                            report_sync_failure(&shared, &e);
                        }
                    }
                    if last {
                        return;
                    }
                }
            })
            .ok();
        Syncer {
            written,
            stop: Some(stop),
            thread,
        }
    }

    /// Notes that `file` was written to: the next round syncs it.
    fn written(&self, file: &Arc<File>) {
        let mut files = lock(&self.written);
        if !files.iter().any(|known| Arc::ptr_eq(known, file)) {
            files.push(file.clone());
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn report_sync_failure(shared: &Shared, error: &io::Error) {
    tracing::error!(exporter = %shared.id, error = %error, "persistent queue fsync failed");
    shared.problems.report(
        &shared.problem_key,
        &format!("persistent queue fsync failed: {error}"),
    );
}

struct Writer {
    shared: Arc<Shared>,
    fsync: Fsync,
    segment_limit: u64,
    active: Option<Active>,
    next_seq: u64,
    items_before: u64,
    syncer: Option<Syncer>,
}

/// Most records one group write takes, so receipts are not held back by a huge group.
const GROUP_RECORDS: usize = 256;

impl Writer {
    /// Writes groups until told to close; with `interval`, the syncer's last round then syncs what is left.
    fn run(self, jobs: mpsc::Receiver<Job>) {
        let mut writer = self;
        let mut closing = false;
        while !closing {
            let mut group = Vec::new();
            match jobs.recv().unwrap_or(Job::Close) {
                Job::Write(batch) => group.push(batch),
                Job::Close => closing = true,
            }
            while !closing && group.len() < GROUP_RECORDS {
                match jobs.try_recv() {
                    Ok(Job::Write(batch)) => group.push(batch),
                    Ok(Job::Close) | Err(mpsc::TryRecvError::Disconnected) => closing = true,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            if !group.is_empty() {
                writer.write_group(group);
            }
        }
    }

    /// Starts a new segment, sealing the current one.
    fn rotate(&mut self) -> io::Result<()> {
        // The old segment needs no sync here: with `always` every write was synced, with `interval` the
        // syncer has it.
        if let Some(old) = self.active.take() {
            let mut state = self.shared.lock();
            if let Some(segment) = state.segments.get_mut(&old.id) {
                segment.sealed = true;
            }
            retire_finished(&self.shared, &mut state);
        }
        let id = self.next_seq;
        let (wal_path, ack_path) = segment_paths(&self.shared.dir, id);
        let (file, file_len) = self.reuse_spare(&wal_path)?;
        let recycled = file_len > 0;
        let opened = File::open(&wal_path).and_then(|reader| {
            let ack = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&ack_path)?;
            // A recycled file's new name is made durable whatever the policy: after a power cut its old name
            // must not come back holding new records.
            if self.fsync != Fsync::Never || recycled {
                sync_dir(&self.shared.dir)?;
            }
            Ok((reader, ack))
        });
        let (reader, ack) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // Leave no file that no segment accounts for.
                let _ = fs::remove_file(&wal_path);
                let _ = fs::remove_file(&ack_path);
                self.shared.disk_bytes.fetch_sub(file_len, Ordering::AcqRel);
                return Err(e);
            }
        };
        let mut state = self.shared.lock();
        if state.segments.is_empty() {
            state.cursor = Cursor {
                segment: id,
                offset: 0,
                expected_items_before: state.cursor.expected_items_before,
            };
        }
        state.segments.insert(
            id,
            Segment {
                wal_path,
                ack_path,
                file: Arc::new(reader),
                ack,
                written: 0,
                disk_bytes: file_len,
                recyclable: true,
                sealed: false,
                read_through: false,
                claimed: 0,
                done: 0,
                recovered_done: HashSet::new(),
                recovered_started: HashSet::new(),
            },
        );
        self.active = Some(Active {
            id,
            file: Arc::new(file),
            len: 0,
            file_len,
        });
        Ok(())
    }

    /// Opens the next segment at `wal_path` for writing: a spare renamed there when there is one (with its
    /// length; its old records stay until overwritten), else a new file.
    fn reuse_spare(&self, wal_path: &Path) -> io::Result<(File, u64)> {
        let spare = self.shared.lock().spares.pop();
        if let Some((spare, len)) = spare {
            // Its bytes move from the spares to the new segment's count.
            self.shared.disk_bytes.fetch_sub(len, Ordering::AcqRel);
            let reused = fs::rename(&spare, wal_path)
                .and_then(|()| OpenOptions::new().write(true).read(true).open(wal_path));
            match reused {
                Ok(file) => {
                    self.shared.disk_bytes.fetch_add(len, Ordering::AcqRel);
                    return Ok((file, len));
                }
                Err(e) => {
                    tracing::warn!(
                        exporter = %self.shared.id, spare = %spare.display(), error = %e,
                        "persistent queue could not reuse a spare segment; starting a new file"
                    );
                    let _ = fs::remove_file(&spare);
                    let _ = fs::remove_file(wal_path);
                }
            }
        }
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .read(true)
            .open(wal_path)?;
        Ok((file, 0))
    }

    fn write_group(&mut self, mut group: Vec<Batch>) {
        let queued: u64 = group.iter().map(|b| b.byte_len() as u64).sum();
        let result = self.append(&group);
        self.shared.queued_bytes.fetch_sub(queued, Ordering::AcqRel);
        match result {
            Ok(()) => {
                let items = group.iter().map(|b| b.items).sum();
                self.shared.accounts.written.add(items);
                self.shared.problems.clear(&self.shared.problem_key);
                // Dropping the batches releases their receipts: the receivers answer their clients now, with
                // the counters and `/readyz` already saying so.
                drop(group);
                self.shared.readable.notify_waiters();
            }
            Err(e) => {
                let items: u64 = group.iter().map(|b| b.items).sum();
                self.shared.accounts.write_errors.add(1);
                let message = format!("writing the persistent queue failed: {e}");
                tracing::error!(
                    exporter = %self.shared.id, items, error = %e,
                    "persistent queue write failed; the clients are told to retry"
                );
                self.shared
                    .problems
                    .report(&self.shared.problem_key, &message);
                let refusal = Refusal::Storage {
                    message,
                    retry_after: DEFAULT_RETRY_AFTER,
                };
                for batch in &mut group {
                    batch.fail_receipts(&refusal);
                }
                self.shared.room.notify_waiters();
            }
        }
    }

    /// Writes the group's records to the active segment (starting new segments as they fill), syncing as
    /// the policy says, then makes them readable.
    fn append(&mut self, group: &[Batch]) -> io::Result<()> {
        let mut pending = Pending::default();
        let enqueued = now_unix_ms();
        for batch in group {
            let full = self
                .active
                .as_ref()
                .is_none_or(|a| a.len > 0 && a.len + pending.len >= self.segment_limit);
            if full {
                self.flush(&mut pending)?;
                self.rotate()?;
            }
            pending.push(batch, self.next_seq, self.items_before, enqueued);
            self.next_seq += 1;
            self.items_before += batch.items;
        }
        self.flush(&mut pending)
    }

    /// Writes the `pending` records, and an end marker after them, to the active segment and publishes the
    /// records. On failure nothing of them stays in the file, and the sequence numbers and item counts they
    /// used are given back.
    fn flush(&mut self, pending: &mut Pending) -> io::Result<()> {
        if pending.records == 0 {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        // The end marker goes out with the records and is overwritten by the next group.
        let marker = pending.meta.len();
        record::encode_end(&mut pending.meta, self.next_seq, self.items_before);
        pending.parts.push(Part::Meta(marker..pending.meta.len()));
        let mut result = self
            .shared
            .io
            .write_at(&active.file, &pending.slices(), active.len);
        if result.is_ok() && self.fsync == Fsync::Always {
            result = self.shared.io.sync(&active.file);
        }
        if let Err(e) = result {
            // Leave no partial record behind: later records must follow the last whole one (this also drops
            // a recycled segment's old records, which a partial one may have cut in two).
            let _ = active.file.set_len(active.len);
            let dropped = active.file_len.saturating_sub(active.len);
            active.file_len = active.len;
            self.shared.disk_bytes.fetch_sub(dropped, Ordering::AcqRel);
            let mut state = self.shared.lock();
            if let Some(segment) = state.segments.get_mut(&active.id) {
                segment.disk_bytes = segment.disk_bytes.saturating_sub(dropped);
            }
            drop(state);
            self.next_seq -= pending.records;
            self.items_before -= pending.items;
            *pending = Pending::default();
            return Err(e);
        }
        if let Some(syncer) = &self.syncer {
            syncer.written(&active.file);
        }
        active.len += pending.len;
        let written = pending.len;
        // Disk grows only where the records (and the end marker) pass the file's old length.
        let grown = (active.len + HEADER_LEN as u64).saturating_sub(active.file_len);
        active.file_len += grown;
        let mut state = self.shared.lock();
        if let Some(segment) = state.segments.get_mut(&active.id) {
            segment.written = active.len;
            segment.disk_bytes += grown;
        }
        state.pending_items += pending.items;
        state.pending_bytes += written;
        drop(state);
        self.shared.disk_bytes.fetch_add(grown, Ordering::AcqRel);
        *pending = Pending::default();
        Ok(())
    }
}

/// Records encoded for one write, without copying their chunks: headers and chunk tables in `meta`, and the
/// parts to write in order.
#[derive(Default)]
struct Pending {
    meta: Vec<u8>,
    parts: Vec<Part>,
    /// Bytes of the records.
    len: u64,
    records: u64,
    items: u64,
}

/// A piece of a pending write.
enum Part {
    /// A range of [`Pending::meta`].
    Meta(std::ops::Range<usize>),
    /// A chunk's bytes (shared, not copied).
    Chunk(Bytes),
}

impl Pending {
    /// Adds the record of `batch`.
    fn push(&mut self, batch: &Batch, seq: u64, items_before: u64, enqueued_unix_ms: u64) {
        let start = self.meta.len();
        let header =
            record::encode_parts(&mut self.meta, batch, seq, items_before, enqueued_unix_ms);
        self.parts.push(Part::Meta(start..self.meta.len()));
        self.parts.extend(
            batch
                .chunks
                .iter()
                .filter(|c| !c.bytes.is_empty())
                .map(|c| Part::Chunk(c.bytes.clone())),
        );
        self.len += header.record_len();
        self.records += 1;
        self.items += batch.items;
    }

    /// The parts as slices for one vectored write.
    fn slices(&self) -> Vec<IoSlice<'_>> {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Meta(range) => IoSlice::new(&self.meta[range.clone()]),
                Part::Chunk(bytes) => IoSlice::new(bytes),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
