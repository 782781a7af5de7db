//! The rotating log file: rotation by size and by day (whichever comes first), gzip of rotated files and
//! retention by age and count on a background thread, restrictive permissions, and a restart that appends to
//! the current file instead of clobbering it.
//!
//! Writes are whole lines: a buffer handed to [`RotatingFile::write_lines`] is split only between lines, so no
//! line is ever cut across a rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::clock::{Clock, civil_date, day_number};

/// Default size at which a file is rotated: 50 MB.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1000 * 1000;
/// Default age after which rotated files are deleted: 30 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// How the file rotates and what is kept.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// The active file, e.g. `logs/app.jsonl`; rotated files sit beside it.
    pub path: PathBuf,
    /// Rotate once the file would grow past this many bytes; 0 turns size rotation off.
    pub max_bytes: u64,
    /// Rotate when the day changes.
    pub daily: bool,
    /// Offset from UTC in seconds that defines "day" for daily rotation (0 = UTC); ignored with `local_time`.
    pub utc_offset_seconds: i64,
    /// Days follow the machine's local time zone (daylight saving included) instead of `utc_offset_seconds`.
    pub local_time: bool,
    /// Gzip rotated files (on a background thread).
    pub compress: bool,
    /// Delete rotated files older than this; `None` keeps them regardless of age.
    pub max_age: Option<Duration>,
    /// Keep at most this many rotated files; `None` keeps any number.
    pub max_files: Option<usize>,
    /// Unix permission bits of created files.
    pub mode: u32,
}

impl FileOptions {
    /// Defaults: 50 MB, daily in UTC, gzip, 30 days, permissions 0640.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileOptions {
            path: path.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            daily: true,
            utc_offset_seconds: 0,
            local_time: false,
            compress: true,
            max_age: Some(DEFAULT_MAX_AGE),
            max_files: None,
            mode: 0o640,
        }
    }
}

enum Housekeeping {
    Rotated(PathBuf),
    Sync(mpsc::Sender<()>),
}

/// A log file that rotates itself.
pub struct RotatingFile {
    options: FileOptions,
    clock: Arc<dyn Clock>,
    file: Option<File>,
    size: u64,
    day: i64,
    housekeeper: Option<(mpsc::Sender<Housekeeping>, JoinHandle<()>)>,
}

impl std::fmt::Debug for RotatingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingFile")
            .field("path", &self.options.path)
            .field("size", &self.size)
            .finish()
    }
}

fn open(path: &Path, mode: u32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

impl RotatingFile {
    /// Opens (or continues) the file; the directory is created if missing. Errors name the path.
    pub fn open(options: FileOptions, clock: Arc<dyn Clock>) -> io::Result<Self> {
        let with_path = |e: io::Error, what: &str, path: &Path| {
            io::Error::new(e.kind(), format!("{what} `{}`: {e}", path.display()))
        };
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| with_path(e, "cannot create log directory", dir))?;
        }
        let file = open(&options.path, options.mode)
            .map_err(|e| with_path(e, "cannot open log file", &options.path))?;
        let metadata = file.metadata()?;
        // A file left by a previous run belongs to the day it was last written.
        let modified = metadata
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .filter(|_| metadata.len() > 0)
            .unwrap_or_else(|| clock.now());
        let (sender, receiver) = mpsc::channel();
        let keeper_options = options.clone();
        let keeper_clock = clock.clone();
        let handle = std::thread::Builder::new()
            .name("vigil-log-housekeeper".into())
            .spawn(move || housekeeper(keeper_options, keeper_clock, receiver))?;
        Ok(RotatingFile {
            day: day_number(modified, offset_at(&options, modified)),
            size: metadata.len(),
            file: Some(file),
            options,
            clock,
            housekeeper: Some((sender, handle)),
        })
    }

    /// Appends whole lines, rotating between lines when the size or the day says so.
    pub fn write_lines(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            if self.options.daily
                && day_number(self.clock.now(), offset_at(&self.options, self.clock.now()))
                    != self.day
            {
                self.rotate()?;
            }
            let room = match self.options.max_bytes {
                0 => u64::MAX,
                max => max.saturating_sub(self.size),
            };
            let take = if (buf.len() as u64) <= room {
                buf.len()
            } else {
                // The longest prefix of whole lines that fits.
                match buf[..room as usize].iter().rposition(|b| *b == b'\n') {
                    Some(end) => end + 1,
                    None if self.size == 0 => {
                        // One line longer than the limit: it goes alone into a file rather than being cut.
                        buf.iter()
                            .position(|b| *b == b'\n')
                            .map_or(buf.len(), |end| end + 1)
                    }
                    None => {
                        self.rotate()?;
                        continue;
                    }
                }
            };
            let file = match self.file.as_mut() {
                Some(file) => file,
                None => {
                    self.file = Some(open(&self.options.path, self.options.mode)?);
                    self.file
                        .as_mut()
                        .ok_or_else(|| io::Error::other("log file unavailable"))?
                }
            };
            file.write_all(&buf[..take])?;
            self.size += take as u64;
            buf = &buf[take..];
            if !buf.is_empty() {
                self.rotate()?;
            }
        }
        Ok(())
    }

    /// Flushes file contents to the operating system.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }

    /// Waits until rotated files are compressed and retention has run (for tests and shutdown).
    pub fn sync(&self) {
        if let Some((sender, _)) = &self.housekeeper {
            let (done, wait) = mpsc::channel();
            if sender.send(Housekeeping::Sync(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut file) = self.file.take() {
            file.flush()?;
        }
        let today = day_number(self.clock.now(), offset_at(&self.options, self.clock.now()));
        if self.size > 0 {
            let rotated = self.rotated_name(self.day);
            std::fs::rename(&self.options.path, &rotated)?;
            if let Some((sender, _)) = &self.housekeeper {
                let _ = sender.send(Housekeeping::Rotated(rotated));
            }
        }
        self.file = Some(open(&self.options.path, self.options.mode)?);
        self.size = 0;
        self.day = today;
        Ok(())
    }

    /// `<stem>.<YYYY-MM-DD>.<n><.ext>`, with `n` the first number not taken (compressed or not).
    fn rotated_name(&self, day: i64) -> PathBuf {
        let (y, m, d) = civil_date(day);
        let (stem, ext) = split_name(&self.options.path);
        let dir = self.options.path.parent().unwrap_or(Path::new(""));
        (1u32..)
            .map(|n| dir.join(format!("{stem}.{y:04}-{m:02}-{d:02}.{n}{ext}")))
            .find(|p| !p.exists() && !gz_name(p).exists())
            .unwrap_or_else(|| dir.join(format!("{stem}.rotated{ext}")))
    }
}

impl Drop for RotatingFile {
    fn drop(&mut self) {
        let _ = self.flush();
        if let Some((sender, handle)) = self.housekeeper.take() {
            drop(sender);
            let _ = handle.join();
        }
    }
}

/// The UTC offset that defines the day at `instant`: the local zone's (from the system time zone database, so
/// daylight saving moves it) or the configured fixed one.
fn offset_at(options: &FileOptions, instant: Duration) -> i64 {
    if !options.local_time {
        return options.utc_offset_seconds;
    }
    use chrono::{Local, Offset, TimeZone};
    match Local.timestamp_opt(instant.as_secs() as i64, 0) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            i64::from(t.offset().fix().local_minus_utc())
        }
        chrono::LocalResult::None => options.utc_offset_seconds,
    }
}

fn split_name(path: &Path) -> (String, String) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("log");
    match name.rfind('.') {
        Some(dot) if dot > 0 => (name[..dot].to_string(), name[dot..].to_string()),
        _ => (name.to_string(), String::new()),
    }
}

fn gz_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

fn housekeeper(options: FileOptions, clock: Arc<dyn Clock>, jobs: mpsc::Receiver<Housekeeping>) {
    for job in jobs {
        match job {
            Housekeeping::Rotated(path) => {
                if options.compress
                    && let Err(e) = compress(&path, options.mode)
                {
                    eprintln!(
                        "vigil: could not compress rotated log `{}`: {e}",
                        path.display()
                    );
                }
                if let Err(e) = retain(&options, clock.now()) {
                    eprintln!(
                        "vigil: log retention failed in `{}`: {e}",
                        options.path.display()
                    );
                }
            }
            Housekeeping::Sync(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn compress(path: &Path, mode: u32) -> io::Result<()> {
    let target = gz_name(path);
    let mut input = File::open(path)?;
    let output = open(&target, mode)?;
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    std::fs::remove_file(path)
}

/// Rotated files of this log, oldest first.
pub fn rotated_files(options: &FileOptions) -> io::Result<Vec<PathBuf>> {
    let (stem, ext) = split_name(&options.path);
    let dir = options
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{stem}.");
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return false;
            };
            let core = name.strip_suffix(".gz").unwrap_or(name);
            core.starts_with(&prefix)
                && core.ends_with(&ext)
                && core.len() > prefix.len() + ext.len()
                && core[prefix.len()..core.len() - ext.len()]
                    .split('.')
                    .count()
                    == 2
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

fn retain(options: &FileOptions, now: Duration) -> io::Result<()> {
    let files = rotated_files(options)?;
    let mut keep = Vec::new();
    for path in files {
        let age = std::fs::metadata(&path)?
            .modified()?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|m| now.saturating_sub(m))
            .unwrap_or_default();
        if options.max_age.is_some_and(|max| age > max) {
            std::fs::remove_file(&path)?;
        } else {
            keep.push(path);
        }
    }
    if let Some(max) = options.max_files {
        let excess = keep.len().saturating_sub(max);
        for path in &keep[..excess] {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}
