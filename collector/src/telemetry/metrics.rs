//! The collector's own metrics: lock-free counters on the hot path, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::prometheus::naming::Kind;
use crate::prometheus::render::{self, Format, Snapshot};
use crate::prometheus::store::{Histogram as StoreHistogram, SeriesValue};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed upper bounds.
#[derive(Debug)]
struct HistogramCore {
    bounds: Vec<f64>,
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_bits: AtomicU64,
}

/// A shared histogram handle.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCore>);

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram(Arc::new(HistogramCore {
            bounds: bounds.to_vec(),
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let core = &self.0;
        if let Some(i) = core.bounds.iter().position(|b| value <= *b) {
            core.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        core.count.fetch_add(1, Ordering::Relaxed);
        let _ = core
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

type GaugeFn = Box<dyn Fn() -> f64 + Send + Sync>;
/// Label sets read at render time, each an owned `(name, value)` list.
type InfoFn = Box<dyn Fn() -> Vec<Vec<(&'static str, String)>> + Send + Sync>;

enum Series {
    Counter(Counter),
    Gauge(GaugeFn),
    Histogram(Histogram),
    /// An info family: one series of value 1 per label set `read` returns when rendered.
    Info(InfoFn),
}

struct Family {
    help: &'static str,
    kind: Kind,
    series: BTreeMap<String, Series>,
}

/// All self-metrics of one collector process, and the problems its components report.
#[derive(Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
    problems: Problems,
}

/// Problems components report that only a person can fix (a refused credential, a wrong endpoint): shown on
/// `/readyz` until the component works again.
#[derive(Clone, Debug, Default)]
pub struct Problems(Arc<Mutex<BTreeMap<String, String>>>);

impl Problems {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `component` (`exporter/loki`) has `problem`; a later report replaces it.
    pub fn report(&self, component: &str, problem: &str) {
        self.lock()
            .insert(component.to_string(), problem.to_string());
    }

    /// `component` works again.
    pub fn clear(&self, component: &str) {
        self.lock().remove(component);
    }

    /// Every open problem, by component.
    pub fn list(&self) -> BTreeMap<String, String> {
        self.lock().clone()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

/// Labels as exposition text, the key of a series in its family.
fn label_text(labels: &[(&str, &str)]) -> String {
    render::label_pairs_text(labels.iter().copied())
}

impl Registry {
    /// The problems components report, shown on `/readyz`.
    pub fn problems(&self) -> &Problems {
        &self.problems
    }

    fn with_family<T>(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        f: impl FnOnce(&mut Family) -> T,
    ) -> T {
        let mut families = self
            .families
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        f(family)
    }

    /// The counter `name{labels}`, created on first use. `name` should end in `_total`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Counter {
        let key = label_text(labels);
        self.with_family(name, help, Kind::Counter, |family| {
            match family
                .series
                .entry(key)
                .or_insert_with(|| Series::Counter(Counter::default()))
            {
                Series::Counter(counter) => counter.clone(),
                _ => Counter::default(),
            }
        })
    }

    /// A gauge whose value is read from `read` at render time.
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        read: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        let key = label_text(labels);
        self.with_family(name, help, Kind::Gauge, |family| {
            family.series.insert(key, Series::Gauge(Box::new(read)));
        });
    }

    /// An info gauge (`name{labels, <set>} 1`) with one series per label set `read` returns at render time, for
    /// things that come and go (the MLflow runs an exporter writes to). The sets' label names must differ from
    /// `labels`'.
    pub fn info_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        read: impl Fn() -> Vec<Vec<(&'static str, String)>> + Send + Sync + 'static,
    ) {
        let key = label_text(labels);
        self.with_family(name, help, Kind::Gauge, |family| {
            family.series.insert(key, Series::Info(Box::new(read)));
        });
    }

    /// `vigil_exporter_dropped_items_total{exporter, reason}`: the one counter every place that gives up on
    /// exported items (the exporter's consumers, its persistent queue) counts into.
    pub fn exporter_dropped(&self, exporter: &str, reason: &'static str) -> Counter {
        self.counter(
            "vigil_exporter_dropped_items_total",
            "Items an exporter gave up on, by reason.",
            &[("exporter", exporter), ("reason", reason)],
        )
    }

    /// A counter whose value is read from `read` at render time (for counts another component keeps).
    pub fn counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let key = label_text(labels);
        self.with_family(name, help, Kind::Counter, |family| {
            family
                .series
                .insert(key, Series::Gauge(Box::new(move || read() as f64)));
        });
    }

    /// The histogram `name{labels}` with the given bucket upper bounds, created on first use.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Histogram {
        let key = label_text(labels);
        self.with_family(name, help, Kind::Histogram, |family| {
            match family
                .series
                .entry(key)
                .or_insert_with(|| Series::Histogram(Histogram::new(bounds)))
            {
                Series::Histogram(h) => h.clone(),
                _ => Histogram::new(bounds),
            }
        })
    }

    /// Every series of counter `name` with its labels as written in the exposition format and its value.
    pub fn counter_series(&self, name: &str) -> Vec<(String, u64)> {
        let families = self
            .families
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(family) = families.get(name) else {
            return Vec::new();
        };
        family
            .series
            .iter()
            .filter_map(|(labels, series)| match series {
                Series::Counter(c) => Some((labels.clone(), c.get())),
                Series::Gauge(read) if family.kind == Kind::Counter => {
                    Some((labels.clone(), read() as u64))
                }
                _ => None,
            })
            .collect()
    }

    /// The sum of every series of counter `name` whose labels include all of `labels`.
    pub fn counter_sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let wanted: Vec<String> = labels.iter().map(|l| label_text(&[*l])).collect();
        let families = self
            .families
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(family) = families.get(name) else {
            return 0;
        };
        family
            .series
            .iter()
            .filter(|(key, _)| wanted.iter().all(|w| key.split(',').any(|part| part == w)))
            .map(|(_, series)| match series {
                Series::Counter(c) => c.get(),
                Series::Gauge(read) if family.kind == Kind::Counter => read() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Renders every family in the Prometheus text exposition format 0.0.4, with the renderer the
    /// `prometheus` exporter uses ([`crate::prometheus::render`]).
    pub fn render(&self) -> String {
        let snapshots: Vec<Snapshot> = {
            let families = self
                .families
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            families
                .iter()
                .map(|(name, family)| family.snapshot(name))
                .collect()
        };
        // The renderer only adds ASCII to UTF-8 text.
        String::from_utf8(render::render_snapshots(&snapshots, Format::Text)).unwrap_or_default()
    }
}

impl Family {
    /// The family's current values, read now.
    fn snapshot(&self, name: &str) -> Snapshot {
        let mut rows = Vec::with_capacity(self.series.len());
        for (labels, series) in &self.series {
            let row = |labels: &str, value| (Arc::from(labels), value, Vec::new());
            match series {
                Series::Counter(c) => rows.push(row(labels, SeriesValue::Number(c.get() as f64))),
                Series::Gauge(read) => rows.push(row(labels, SeriesValue::Number(read()))),
                Series::Info(read) => {
                    for set in read() {
                        let extra = label_text(
                            &set.iter()
                                .map(|(k, v)| (*k, v.as_str()))
                                .collect::<Vec<_>>(),
                        );
                        let all = match (labels.is_empty(), extra.is_empty()) {
                            (true, _) => extra,
                            (false, true) => labels.clone(),
                            (false, false) => format!("{labels},{extra}"),
                        };
                        rows.push(row(&all, SeriesValue::Number(1.0)));
                    }
                }
                Series::Histogram(h) => {
                    let core = &h.0;
                    let value = StoreHistogram {
                        bounds: core.bounds.clone(),
                        counts: core
                            .buckets
                            .iter()
                            .map(|b| b.load(Ordering::Relaxed))
                            .collect(),
                        sum: f64::from_bits(core.sum_bits.load(Ordering::Relaxed)),
                        count: core.count.load(Ordering::Relaxed),
                    };
                    rows.push(row(labels, SeriesValue::Histogram(value)));
                }
            }
        }
        Snapshot {
            name: name.to_string(),
            kind: self.kind,
            info: matches!(self.series.values().next(), Some(Series::Info(_))),
            help: self.help.to_string(),
            rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let registry = Registry::default();
        let c = registry.counter("x_items_total", "Items.", &[("signal", "traces")]);
        c.add(5);
        registry
            .counter("x_items_total", "Items.", &[("signal", "traces")])
            .add(1);
        registry.gauge_fn("x_queue_size", "Queue.", &[], || 3.0);
        let h = registry.histogram("x_batch_size", "Sizes.", &[("p", "a\"b")], &[10.0, 100.0]);
        h.observe(5.0);
        h.observe(50.0);
        h.observe(500.0);
        let text = registry.render();
        assert!(
            text.contains("# TYPE x_items_total counter\nx_items_total{signal=\"traces\"} 6.0\n"),
            "{text}"
        );
        assert!(text.contains("x_queue_size 3.0\n"), "{text}");
        assert!(
            text.contains("x_batch_size_bucket{p=\"a\\\"b\",le=\"100\"} 2.0\n"),
            "{text}"
        );
        assert!(
            text.contains("x_batch_size_bucket{p=\"a\\\"b\",le=\"+Inf\"} 3.0\n"),
            "{text}"
        );
        assert!(
            text.contains("x_batch_size_sum{p=\"a\\\"b\"} 555.0\n"),
            "{text}"
        );
        assert_eq!(
            registry.counter_sum("x_items_total", &[("signal", "traces")]),
            6
        );
    }

    #[test]
    fn info_families_render_one_series_per_label_set_read_now() {
        let registry = Registry::default();
        let sets = Arc::new(Mutex::new(vec![vec![("run_id", "a\"1".to_string())]]));
        let read = sets.clone();
        registry.info_fn("x_run_info", "Runs.", &[("exporter", "m")], move || {
            read.lock().map(|s| s.clone()).unwrap_or_default()
        });
        let text = registry.render();
        assert!(
            text.contains(
                "# TYPE x_run_info gauge\nx_run_info{exporter=\"m\",run_id=\"a\\\"1\"} 1.0\n"
            ),
            "{text}"
        );
        sets.lock().unwrap().push(vec![("run_id", "b".to_string())]);
        let text = registry.render();
        assert!(
            text.contains("x_run_info{exporter=\"m\",run_id=\"b\"} 1.0\n"),
            "{text}"
        );
        sets.lock().unwrap().clear();
        assert!(!registry.render().contains("x_run_info{"));
    }
}
