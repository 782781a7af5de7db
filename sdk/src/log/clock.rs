//! Time as the file handler sees it, injectable so tests of daily rotation and retention never sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, as a duration since the Unix epoch.
    fn now(&self) -> Duration;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A clock that only moves when told to (for tests).
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `unix_seconds`.
    pub fn at(unix_seconds: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(unix_seconds * 1_000_000_000)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst).max(0) as u64)
    }
}

/// Days since the Unix epoch of a time, in UTC or shifted by a fixed offset (seconds east of UTC).
pub fn day_number(now: Duration, utc_offset_seconds: i64) -> i64 {
    (now.as_secs() as i64 + utc_offset_seconds).div_euclid(86_400)
}

/// `YYYY-MM-DD` of a day number (proleptic Gregorian, as `date` prints it).
pub fn civil_date(day: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 UTC timestamp with microseconds, written into `out` (`2026-11-22T11:19:26.123456Z`).
///
/// Lines come many to a second: each thread keeps the date and time of the last second it wrote and writes
/// only the microseconds again (the calendar arithmetic was a tenth of a JSON line's cost).
pub fn write_rfc3339(now: Duration, out: &mut Vec<u8>) {
    thread_local! {
        /// The last whole second written on this thread, and its `YYYY-MM-DDTHH:MM:SS.` text.
        static LAST_SECOND: std::cell::Cell<(Option<u64>, [u8; 20])> =
            const { std::cell::Cell::new((None, [0; 20])) };
    }
    let secs = now.as_secs();
    let prefix = LAST_SECOND.with(|last| {
        let (cached_secs, cached) = last.get();
        if cached_secs == Some(secs) {
            return cached;
        }
        let mut full = Vec::with_capacity(27);
        write_rfc3339_uncached(Duration::from_secs(secs), &mut full);
        let mut prefix = [0u8; 20];
        prefix.copy_from_slice(&full[..20]);
        last.set((Some(secs), prefix));
        prefix
    });
    let mut buf = [0u8; 27];
    buf[..20].copy_from_slice(&prefix);
    let mut micros = now.subsec_micros();
    for slot in buf[20..26].iter_mut().rev() {
        *slot = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    buf[26] = b'Z';
    out.extend_from_slice(&buf);
}

/// [`write_rfc3339`] computed from scratch: the reference the cached form is tested against.
fn write_rfc3339_uncached(now: Duration, out: &mut Vec<u8>) {
    let secs = now.as_secs() as i64;
    let (y, m, d) = civil_date(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (rem / 3600, (rem / 60) % 60, rem % 60);
    let micros = now.subsec_micros();
    let mut buf = [0u8; 27];
    let digits = |buf: &mut [u8], mut value: u64| {
        for slot in buf.iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    digits(&mut buf[0..4], y as u64);
    buf[4] = b'-';
    digits(&mut buf[5..7], u64::from(m));
    buf[7] = b'-';
    digits(&mut buf[8..10], u64::from(d));
    buf[10] = b'T';
    digits(&mut buf[11..13], hh as u64);
    buf[13] = b':';
    digits(&mut buf[14..16], mm as u64);
    buf[16] = b':';
    digits(&mut buf[17..19], ss as u64);
    buf[19] = b'.';
    digits(&mut buf[20..26], u64::from(micros));
    buf[26] = b'Z';
    out.extend_from_slice(&buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-thread cache of the last second writes what the full computation writes, in order, out of
    /// order, within a second and across second, day, month and year boundaries.
    #[test]
    fn the_cached_second_writes_what_the_full_computation_writes() {
        let starts = [
            1_795_346_366u64,
            1_798_761_599,
            951_782_399,
            0,
            4_102_444_799,
        ];
        let mut instants = Vec::new();
        for start in starts {
            for step in 0..2_000u64 {
                instants.push(Duration::new(
                    start + step / 700,
                    (step * 499_979 % 1_000_000_000) as u32,
                ));
            }
        }
        // Out of order too: a clock stepped back, or two clocks on one thread.
        let mut shuffled = instants.clone();
        shuffled.reverse();
        instants.extend(shuffled);
        for now in instants {
            let (mut cached, mut full) = (Vec::new(), Vec::new());
            write_rfc3339(now, &mut cached);
            write_rfc3339_uncached(now, &mut full);
            assert_eq!(cached, full, "{now:?}");
        }
    }

    #[test]
    fn formats_like_date_does() {
        let mut out = Vec::new();
        write_rfc3339(Duration::new(1_795_346_366, 123_456_789), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-22T11:19:26.123456Z"
        );
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(
            civil_date(day_number(Duration::from_secs(951_782_400), 0)),
            (2000, 2, 29)
        );
    }
}
