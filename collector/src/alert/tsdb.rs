//! The recent samples of every series the alerting connector has seen, for rules to read: just enough history
//! for the longest range (plus the 5-minute lookback and any offset) a rule uses, bounded by a series cap.
//!
//! Memory: a series costs its label strings plus about 120 bytes of bookkeeping, and 16 bytes per sample
//! kept (a millisecond timestamp and an `f64`). With a 15 s push interval and a 10-minute window that is
//! 40 samples, about 640 bytes per series.

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

/// Samples by series.
pub struct Tsdb {
    series: Vec<Stored>,
    by_labels: HashMap<Labels, usize>,
    by_name: HashMap<String, Vec<usize>>,
    retention_ms: i64,
    max_series: usize,
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
        let index = match self.by_labels.get(&labels) {
            Some(&index) => index,
            None => {
                if self.series.len() >= self.max_series {
                    return Appended::OverCap;
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
        let samples = &mut self.series[index].samples;
        match samples.back_mut() {
            Some(last) if last.0 == t_ms => last.1 = value,
            Some(last) if last.0 > t_ms => {}
            _ => samples.push_back((t_ms, value)),
        }
        let oldest = t_ms - self.retention_ms;
        while samples.front().is_some_and(|s| s.0 < oldest) {
            samples.pop_front();
        }
        Appended::Stored
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
}
