//! The recent samples of every series the alerting connector has seen, for rules to read: just enough history
//! for the longest range (plus the 5-minute lookback and any offset) a rule uses, bounded by a series cap.
//!
//! Memory: a series costs its label strings plus about 120 bytes of bookkeeping, and 16 bytes per sample
//! kept (a millisecond timestamp and an `f64`). With a 15 s push interval and a 10-minute window that is
//! 40 samples, about 640 bytes per series. Ingestion adds, for each counter or gauge series, its attributes as
//! sent and a handle (about 40 bytes per attribute plus 60; see [`super::numbers`]).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// A label set, sorted by name, with the metric name as `__name__`.
pub type Labels = Vec<(String, String)>;

/// Prometheus' stale marker (a NaN with this bit pattern): the series ended; selectors see nothing from it.
pub const STALE: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// Whether `value` is the stale marker.
pub fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE.to_bits()
}

/// The label holding the metric name.
pub const NAME: &str = "__name__";

/// The value of `name` in `labels`.
pub fn label<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(k, _)| k.as_str().cmp(name))
        .ok()
        .map(|i| labels[i].1.as_str())
}

/// `labels` sorted, as every [`Labels`] must be.
pub fn sorted(mut labels: Labels) -> Labels {
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    labels
}

/// A series and its samples, oldest first.
pub type SeriesRef<'a> = (&'a Labels, &'a VecDeque<(i64, f64)>);

struct Stored {
    labels: Labels,
    samples: VecDeque<(i64, f64)>,
}

/// What one append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored.
    Stored,
    /// A new series, but the cap was reached: dropped.
    OverCap,
}

/// A series found once by its labels, for appending to it again without building and hashing its labels: valid
/// until a compaction forgets a series (series move then), after which [`Tsdb::append_to`] refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesHandle {
    index: usize,
    generation: u64,
}

/// Samples by series.
pub struct Tsdb {
    series: Vec<Stored>,
    by_labels: HashMap<Labels, usize>,
    by_name: HashMap<String, Vec<usize>>,
    retention_ms: i64,
    max_series: usize,
    /// Bumped whenever series move (a compaction forgot some), so older handles are refused.
    generation: u64,
}

impl Tsdb {
    /// Keeps `retention` of samples for at most `max_series` series.
    pub fn new(retention: Duration, max_series: usize) -> Self {
        Tsdb {
            series: Vec::new(),
            by_labels: HashMap::new(),
            by_name: HashMap::new(),
            retention_ms: retention.as_millis() as i64,
            max_series,
            generation: 0,
        }
    }

    /// Series kept.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether no series is kept.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Adds the sample `(t_ms, value)` to the series `labels` (sorted). A sample older than the series' newest
    /// is ignored (pushes can arrive out of order); one at the same time replaces it.
    pub fn append(&mut self, labels: Labels, t_ms: i64, value: f64) -> Appended {
        match self.append_indexed(labels, t_ms, value) {
            Some(_) => Appended::Stored,
            None => Appended::OverCap,
        }
    }

    /// [`append`](Tsdb::append), returning a handle to the series for [`append_to`](Tsdb::append_to), or
    /// `None` when the series is new and the cap is reached (the sample is dropped).
    pub fn append_indexed(
        &mut self,
        labels: Labels,
        t_ms: i64,
        value: f64,
    ) -> Option<SeriesHandle> {
        let index = match self.by_labels.get(&labels) {
            Some(&index) => index,
            None => {
                if self.series.len() >= self.max_series {
                    return None;
                }
                let index = self.series.len();
                let name = label(&labels, NAME).unwrap_or("").to_string();
                self.by_name.entry(name).or_default().push(index);
                self.by_labels.insert(labels.clone(), index);
                self.series.push(Stored {
                    labels,
                    samples: VecDeque::new(),
                });
                index
            }
        };
        self.push_sample(index, t_ms, value);
        Some(SeriesHandle {
            index,
            generation: self.generation,
        })
    }

    /// Adds a sample to the series `handle` stands for, as [`append`](Tsdb::append) would; `false` (and
    /// nothing stored) when the handle is older than the last compaction that moved series.
    pub fn append_to(&mut self, handle: SeriesHandle, t_ms: i64, value: f64) -> bool {
        if handle.generation != self.generation || handle.index >= self.series.len() {
            return false;
        }
        self.push_sample(handle.index, t_ms, value);
        true
    }

    /// The generation handles are issued in; it changes when a compaction moves series.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn push_sample(&mut self, index: usize, t_ms: i64, value: f64) {
        let samples = &mut self.series[index].samples;
        match samples.back_mut() {
            Some(last) => match last.0.cmp(&t_ms) {
                std::cmp::Ordering::Equal => last.1 = value,
                std::cmp::Ordering::Greater => {}
                std::cmp::Ordering::Less => samples.push_back((t_ms, value)),
            },
            None => samples.push_back((t_ms, value)),
        }
        let oldest = t_ms - self.retention_ms;
        while samples.front().is_some_and(|s| s.0 < oldest) {
            samples.pop_front();
        }
    }

    /// Every series named `name` (every series when `None`) with its samples, oldest first.
    pub fn select<'a>(
        &'a self,
        name: Option<&str>,
    ) -> Box<dyn Iterator<Item = SeriesRef<'a>> + 'a> {
        match name {
            Some(name) => Box::new(
                self.by_name
                    .get(name)
                    .into_iter()
                    .flatten()
                    .map(|&i| (&self.series[i].labels, &self.series[i].samples)),
            ),
            None => Box::new(self.series.iter().map(|s| (&s.labels, &s.samples))),
        }
    }

    /// Forgets samples older than the retention before `now_ms`, and series left without samples.
    pub fn compact(&mut self, now_ms: i64) {
        let oldest = now_ms - self.retention_ms;
        let before = self.series.len();
        for stored in &mut self.series {
            while stored.samples.front().is_some_and(|s| s.0 < oldest) {
                stored.samples.pop_front();
            }
        }
        self.series.retain(|s| !s.samples.is_empty());
        if self.series.len() != before {
            self.generation += 1;
            self.by_labels.clear();
            self.by_name.clear();
            for (index, stored) in self.series.iter().enumerate() {
                self.by_labels.insert(stored.labels.clone(), index);
                let name = label(&stored.labels, NAME).unwrap_or("").to_string();
                self.by_name.entry(name).or_default().push(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, extra: &[(&str, &str)]) -> Labels {
        let mut labels = vec![(NAME.to_string(), name.to_string())];
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        sorted(labels)
    }

    #[test]
    fn keeps_the_window_and_the_cap() {
        let mut db = Tsdb::new(Duration::from_secs(60), 2);
        let a = series("up", &[("job", "a")]);
        assert_eq!(db.append(a.clone(), 0, 1.0), Appended::Stored);
        assert_eq!(db.append(a.clone(), 30_000, 2.0), Appended::Stored);
        assert_eq!(db.append(a.clone(), 30_000, 3.0), Appended::Stored);
        assert_eq!(db.append(a.clone(), 10_000, 9.0), Appended::Stored);
        assert_eq!(db.append(a.clone(), 70_000, 4.0), Appended::Stored);
        let samples: Vec<_> = db.select(Some("up")).flat_map(|(_, s)| s.clone()).collect();
        assert_eq!(samples, [(30_000, 3.0), (70_000, 4.0)]);
        assert_eq!(
            db.append(series("up", &[("job", "b")]), 0, 1.0),
            Appended::Stored
        );
        assert_eq!(db.append(series("other", &[]), 0, 1.0), Appended::OverCap);
        assert_eq!(db.len(), 2);
        db.compact(100_000);
        assert_eq!(db.len(), 1, "job=b had only an old sample");
        assert_eq!(db.select(Some("up")).count(), 1);
        assert_eq!(db.select(None).count(), 1);
        assert_eq!(label(&a, "job"), Some("a"));
        assert_eq!(label(&a, "nope"), None);
    }

    #[test]
    fn a_handle_appends_like_labels_do_until_series_move() {
        let mut db = Tsdb::new(Duration::from_secs(60), 3);
        let (a, b) = (series("up", &[("job", "a")]), series("up", &[("job", "b")]));
        db.append(a.clone(), 0, 1.0);
        let b_handle = db.append_indexed(b.clone(), 50_000, 1.0).expect("room");
        assert_eq!(db.append_indexed(b.clone(), 50_000, 1.0), Some(b_handle));
        // Same rules as by labels: newer appended, same time replaced, older ignored, window kept.
        assert!(db.append_to(b_handle, 60_000, 2.0));
        assert!(db.append_to(b_handle, 60_000, 3.0));
        assert!(db.append_to(b_handle, 55_000, 9.0));
        assert!(db.append_to(b_handle, 120_000, 4.0));
        let b_samples = |db: &Tsdb| -> Vec<(i64, f64)> {
            db.select(Some("up"))
                .filter(|(labels, _)| label(labels, "job") == Some("b"))
                .flat_map(|(_, s)| s.clone())
                .collect()
        };
        assert_eq!(b_samples(&db), [(60_000, 3.0), (120_000, 4.0)]);
        // Compaction forgets `a` and moves `b` and `c`: the old handles are refused and store nothing, also
        // where the old index still exists (it is `c`'s now).
        let c = series("up", &[("job", "c")]);
        let c_handle = db.append_indexed(c.clone(), 120_000, 1.0).expect("room");
        let generation = db.generation();
        db.compact(120_000);
        assert_ne!(db.generation(), generation);
        assert!(!db.append_to(b_handle, 130_000, 5.0));
        assert!(!db.append_to(c_handle, 130_000, 5.0));
        assert_eq!(b_samples(&db), [(60_000, 3.0), (120_000, 4.0)]);
        let c_now = db.append_indexed(c.clone(), 120_000, 1.0).expect("kept");
        assert_eq!(db.len(), 2);
        let moved = db.append_indexed(b.clone(), 130_000, 5.0).expect("kept");
        assert!(db.append_to(moved, 140_000, 6.0));
        assert_eq!(
            b_samples(&db),
            [(120_000, 4.0), (130_000, 5.0), (140_000, 6.0)]
        );
        // A compaction that forgets nothing keeps handles valid; a full store issues none.
        db.compact(140_000);
        assert!(db.append_to(moved, 150_000, 7.0));
        assert!(db.append_to(c_now, 150_000, 2.0));
        db.append(series("x", &[]), 150_000, 1.0);
        assert_eq!(db.append_indexed(series("z", &[]), 150_000, 1.0), None);
    }
}
