//! Asynchronous line writing: callers append formatted lines to a shared, bounded buffer; one writer thread
//! swaps the buffer out and writes it to the sink. Appending costs a short uncontended lock and a copy, with no
//! allocation; the thread does the I/O.
//!
//! When the buffer is full the policy decides: [`FullPolicy::Block`] waits for the writer, [`FullPolicy::Drop`]
//! discards the line and counts it. Drops are never silent: the count is available as [`AsyncWriter::dropped`]
//! and, once the writer catches up, a marker line (`… N records dropped …`) is written into the log itself.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::clock::{Clock, write_rfc3339};

/// Buffered bytes that wake the writer thread before its next scheduled write.
const WAKE_BYTES: usize = 64 * 1024;
/// Longest time a line waits in the buffer before the writer thread writes it.
const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// Where the writer thread puts lines.
pub trait LineSink: Send + 'static {
    /// Writes a buffer of whole lines.
    fn write_lines(&mut self, lines: &[u8]) -> io::Result<()>;
    /// Flushes to the operating system.
    fn flush(&mut self) -> io::Result<()>;
}

impl LineSink for super::file::RotatingFile {
    fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        super::file::RotatingFile::write_lines(self, lines)
    }
    fn flush(&mut self) -> io::Result<()> {
        super::file::RotatingFile::flush(self)
    }
}

/// Any `io::Write` (stderr, a `Vec<u8>` in tests) as a sink.
#[derive(Debug)]
pub struct WriteSink<W>(pub W);

impl<W: io::Write + Send + 'static> LineSink for WriteSink<W> {
    fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        self.0.write_all(lines)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// What to do when the buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FullPolicy {
    /// Wait for the writer (no loss; the caller slows down).
    #[default]
    Block,
    /// Discard the line and count it.
    Drop,
}

struct State {
    buffer: Vec<u8>,
    dropped_since_marker: u64,
    writing: bool,
    closed: bool,
    /// The writer thread sleeps until woken (it had nothing to write).
    parked: bool,
}

struct Shared {
    state: Mutex<State>,
    data: Condvar,
    room: Condvar,
    idle: Condvar,
    capacity: usize,
    policy: FullPolicy,
    dropped_total: AtomicU64,
    /// Lines that arrived after shutdown (the guard was dropped): not written, said once on stderr.
    late_total: AtomicU64,
}

/// Said once on stderr when a line arrives after its writer was shut down: nearly always a guard dropped at
/// once by `let _ = vigil::init(..)`, which turns every log output off.
pub const LATE_WARNING: &str = "vigil: WARNING log records arrive after the telemetry guard was dropped, so they are not written; \
keep the guard for the life of the program (`let _guard = vigil::init(..)?;` keeps it, `let _ = vigil::init(..)?;` drops it at once)";

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The producer side of the asynchronous writer; cheap to share across threads.
pub struct AsyncWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AsyncWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncWriter")
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl AsyncWriter {
    /// Starts the writer thread over `sink`, buffering at most `capacity` bytes.
    pub fn start(
        sink: impl LineSink,
        capacity: usize,
        policy: FullPolicy,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buffer: Vec::with_capacity(capacity.min(1 << 20)),
                dropped_since_marker: 0,
                writing: false,
                closed: false,
                parked: false,
            }),
            data: Condvar::new(),
            room: Condvar::new(),
            idle: Condvar::new(),
            capacity: capacity.max(1024),
            policy,
            dropped_total: AtomicU64::new(0),
            late_total: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vigil-log-writer".into())
            .spawn(move || run(thread_shared, sink, clock))?;
        Ok(AsyncWriter {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends one or more whole lines.
    pub fn write(&self, line: &[u8]) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.closed {
            drop(state);
            if shared.late_total.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("{LATE_WARNING}");
            }
            return;
        }
        while state.buffer.len() + line.len() > shared.capacity && !state.buffer.is_empty() {
            match shared.policy {
                FullPolicy::Drop => {
                    state.dropped_since_marker += 1;
                    shared.dropped_total.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                FullPolicy::Block => {
                    state = shared.room.wait(state).unwrap_or_else(|p| p.into_inner());
                    if state.closed {
                        return;
                    }
                }
            }
        }
        let before = state.buffer.len();
        state.buffer.extend_from_slice(line);
        // Waking the writer for every line would cost a futex call per line: it is woken when it sleeps with
        // nothing to do, or early when enough has piled up; otherwise it comes back every `WRITE_INTERVAL`.
        let wake = std::mem::take(&mut state.parked)
            || (before < WAKE_BYTES && state.buffer.len() >= WAKE_BYTES);
        drop(state);
        if wake {
            shared.data.notify_one();
        }
    }

    /// Lines that arrived after the writer was shut down (and were not written).
    pub fn late(&self) -> u64 {
        self.shared.late_total.load(Ordering::Relaxed)
    }

    /// Lines discarded because the buffer was full, since start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_total.load(Ordering::Relaxed)
    }

    /// Waits until everything appended so far is written to the sink (at most `timeout`); returns whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let shared = &*self.shared;
        let state = shared.lock();
        shared.data.notify_one();
        let (state, result) = shared
            .idle
            .wait_timeout_while(state, timeout, |s| {
                !s.buffer.is_empty() || s.writing || s.dropped_since_marker > 0
            })
            .unwrap_or_else(|p| p.into_inner());
        drop(state);
        !result.timed_out()
    }

    /// Writes what is buffered, stops the thread, and closes the sink (bounded by `timeout`).
    pub fn shutdown(&self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout);
        {
            let mut state = self.shared.lock();
            state.closed = true;
        }
        self.shared.data.notify_all();
        self.shared.room.notify_all();
        if let Some(handle) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // The thread exits as soon as it sees `closed` with an empty buffer.
            let _ = handle.join();
        }
        flushed
    }
}

impl Drop for AsyncWriter {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(5));
    }
}

fn drop_marker(count: u64, clock: &dyn Clock, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    write_rfc3339(clock.now(), out);
    out.extend_from_slice(b"\",\"level\":\"WARNING\",\"target\":\"vigil::log\",\"message\":\"");
    out.extend_from_slice(count.to_string().as_bytes());
    out.extend_from_slice(
        b" records dropped: the log writer could not keep up\",\"dropped_records\":",
    );
    out.extend_from_slice(count.to_string().as_bytes());
    out.extend_from_slice(b"}\n");
}

fn run(shared: Arc<Shared>, mut sink: impl LineSink, clock: Arc<dyn Clock>) {
    let mut spare = Vec::with_capacity(shared.capacity.min(1 << 20));
    let mut marker = Vec::new();
    loop {
        let dropped;
        {
            let mut state = shared.lock();
            while state.buffer.is_empty() && state.dropped_since_marker == 0 && !state.closed {
                state.parked = true;
                state = shared.data.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.parked = false;
            // Let lines accumulate for a moment so each write carries many of them.
            if state.buffer.len() < WAKE_BYTES && !state.closed {
                state = shared
                    .data
                    .wait_timeout(state, WRITE_INTERVAL)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if state.closed && state.buffer.is_empty() && state.dropped_since_marker == 0 {
                break;
            }
            std::mem::swap(&mut state.buffer, &mut spare);
            dropped = std::mem::take(&mut state.dropped_since_marker);
            state.writing = true;
        }
        shared.room.notify_all();
        let mut result = sink.write_lines(&spare);
        if dropped > 0 {
            marker.clear();
            drop_marker(dropped, &*clock, &mut marker);
            result = result.and_then(|()| sink.write_lines(&marker));
        }
        let result = result.and_then(|()| sink.flush());
        if let Err(e) = result {
            // The log itself cannot take the complaint; stderr is the last resort.
            eprintln!("vigil: writing the log failed: {e}");
        }
        spare.clear();
        let mut state = shared.lock();
        state.writing = false;
        if state.buffer.is_empty() && state.dropped_since_marker == 0 {
            shared.idle.notify_all();
        }
    }
    let _ = sink.flush();
    shared.idle.notify_all();
}
