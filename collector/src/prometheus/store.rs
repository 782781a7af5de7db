//! The series both Prometheus exporters keep: OTLP data points translated to Prometheus families and label
//! sets, delta temporality accumulated into cumulative values, series that stop being updated expired, and the
//! number of series capped.
//!
//! Families live in 16 shards by name, each family behind its own lock. Ingestion and scrapes share a shard's
//! read lock (only a new family takes it for writing), and a scrape holds a family's lock only while copying
//! it, so it never holds ingestion up for longer than one family takes to copy.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use vigil_proto::otlp::metrics::v1::{
    AggregationTemporality, Exemplar as OtlpExemplar, ExponentialHistogramDataPoint,
    HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint, exemplar,
    exponential_histogram_data_point, metric, number_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;

use super::naming::{self, Kind};

/// Where the store reads the time, so expiry can be tested without waiting.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock tests move by hand.
#[cfg(test)]
pub struct ManualClock(pub Mutex<Instant>);

#[cfg(test)]
impl ManualClock {
    /// A clock at the current time, shared.
    pub fn shared() -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(Instant::now())))
    }

    /// Moves it forward.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Which resource attributes become labels on every series (besides `job` and `instance`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PromotedResource {
    /// None: they are in `target_info` only (the specification's default).
    #[default]
    None,
    /// Every one (otelcol's `resource_to_telemetry_conversion`).
    All,
    /// These keys.
    Keys(Vec<String>),
}

/// How OTLP becomes Prometheus series.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// Prefix of every metric name.
    pub namespace: String,
    /// Add unit and type suffixes to names.
    pub suffixes: bool,
    /// Resource attributes copied onto every series.
    pub promoted_resource: PromotedResource,
    /// Keep one `target_info` series per job/instance with the resource attributes.
    pub target_info: bool,
    /// Add `otel_scope_name`, `otel_scope_version`… labels.
    pub scope_labels: bool,
    /// Labels added to every series.
    pub const_labels: Vec<(String, String)>,
    /// A series not updated for this long disappears.
    pub metric_expiration: Duration,
    /// Most series kept; points of new series beyond it are dropped and counted.
    pub max_series: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            namespace: String::new(),
            suffixes: true,
            promoted_resource: PromotedResource::None,
            target_info: true,
            scope_labels: true,
            const_labels: Vec::new(),
            metric_expiration: Duration::from_secs(300),
            max_series: 100_000,
        }
    }
}

/// A label set, sorted by name, without duplicate names or empty values.
pub type Labels = Box<[(String, String)]>;

/// An explicit-bounds histogram (bucket counts not cumulative; `bounds.len() + 1` counts).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending; the last bucket is `+Inf`.
    pub bounds: Vec<f64>,
    /// Count per bucket.
    pub counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// One side of an exponential histogram: counts of consecutive bucket indexes starting at `offset`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpBuckets {
    /// Index of `counts[0]`.
    pub offset: i32,
    /// Count per bucket.
    pub counts: Vec<u64>,
}

/// An exponential histogram, kept in its own form so deltas at different scales can be merged.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpHistogram {
    /// Resolution: bucket boundaries are powers of `2^(2^-scale)`.
    pub scale: i32,
    /// Observations within `±zero_threshold`.
    pub zero_count: u64,
    /// Width of the zero bucket.
    pub zero_threshold: f64,
    /// Positive observations.
    pub positive: ExpBuckets,
    /// Negative observations (by absolute value).
    pub negative: ExpBuckets,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// A summary's quantiles.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// `(quantile, value)` pairs.
    pub quantiles: Vec<(f64, f64)>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// The current value of a series.
#[derive(Clone, Debug, PartialEq)]
pub enum SeriesValue {
    /// Counter or gauge.
    Number(f64),
    /// Explicit-bounds histogram.
    Histogram(Histogram),
    /// Exponential histogram (rendered as classic buckets).
    Exponential(ExpHistogram),
    /// Summary.
    Summary(Summary),
}

/// One series.
#[derive(Clone, Debug)]
pub struct Series {
    /// Its value.
    pub value: SeriesValue,
    /// When a data point last updated it (the store's clock).
    pub updated: Instant,
    /// The last data point's time, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The labels as exposition text (`a="x",b="y"`, escaped), built once so a scrape only copies it.
    pub label_text: Arc<str>,
    /// The latest exemplar per bucket (histograms) or of the counter; none for gauges and summaries.
    pub exemplars: Vec<StoredExemplar>,
    /// Start of the cumulative period, nanoseconds since the Unix epoch.
    pub start_time_unix_nano: u64,
}

/// The latest exemplar of a counter, or of one histogram bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredExemplar {
    /// The bucket it belongs to (its index in the bounds; 0 for a counter).
    pub bucket: usize,
    /// `trace_id`, `span_id` and the exemplar's filtered attributes, sanitised; at most 128 characters in all,
    /// as OpenMetrics requires.
    pub labels: Vec<(String, String)>,
    /// The observed value.
    pub value: f64,
    /// When it was observed, nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
}

/// A metric family: one name, one type, many series.
#[derive(Debug)]
pub struct Family {
    /// Prometheus type.
    pub kind: Kind,
    /// HELP text (the OTel description).
    pub help: String,
    /// The OTel unit.
    pub unit: String,
    /// `target_info`: an info metric, a gauge in the 0.0.4 text format.
    pub info: bool,
    /// Series by label set.
    pub series: HashMap<Labels, Series>,
    /// Taken out of the store (it had no series left): an ingest that still holds it must look again.
    removed: bool,
    /// When a caller that keeps the series itself last claimed the family ([`Store::claim_family`]): it stays,
    /// even without series, until `metric_expiration` has passed since.
    claimed: Option<Instant>,
}

/// What one ingest did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Data points stored.
    pub points: u64,
    /// Data points dropped because the series cap was reached.
    pub overflow: u64,
    /// Data points dropped because they cannot be expressed (type conflict, unspecified temporality, NaN-free
    /// exponential histogram without a sum…).
    pub invalid: u64,
}

/// A series that changed, as handed to an ingest observer.
pub struct Changed<'a> {
    /// Family name.
    pub name: &'a str,
    /// The family.
    pub kind: Kind,
    /// Its labels.
    pub labels: &'a Labels,
    /// Its new state.
    pub series: &'a Series,
    /// The family's HELP text.
    pub help: &'a str,
    /// The family's OTel unit.
    pub unit: &'a str,
    /// The series ended (expired, or a data point flagged "no recorded value"): remote write sends a stale
    /// marker.
    pub ended: bool,
}

const SHARDS: usize = 16;

/// The series of one exporter.
pub struct Store {
    settings: StoreSettings,
    shards: Vec<RwLock<HashMap<String, SharedFamily>>>,
    hasher: std::collections::hash_map::RandomState,
    clock: Arc<dyn Clock>,
    series: AtomicUsize,
    overflow_total: AtomicU64,
    last_overflow_log: Mutex<Option<Instant>>,
    last_sweep: Mutex<Instant>,
}

/// A family shared between the shard map and whoever is updating or copying it.
type SharedFamily = Arc<Mutex<Family>>;

/// Per-resource labels, computed once per `ResourceMetrics`.
struct ResourceLabels {
    job: String,
    instance: String,
    promoted: Vec<(String, String)>,
}

/// What a resource gives every series of its metrics, for a caller that keeps its own series of counters and
/// gauges read from encoded requests (the alerting connector) and asks the store only how to name them:
/// `job`, `instance`, promoted attributes, and the labels of its `target_info` series.
pub struct ResourceTranslation {
    labels: ResourceLabels,
    target_info: Option<Labels>,
}

impl ResourceTranslation {
    /// The `job` label (empty when the resource has no `service.name`).
    pub fn job(&self) -> &str {
        &self.labels.job
    }

    /// The `instance` label (empty when the resource has no `service.instance.id`).
    pub fn instance(&self) -> &str {
        &self.labels.instance
    }

    /// The labels of the resource's `target_info` series, when the store keeps one for it.
    pub fn target_info(&self) -> Option<&Labels> {
        self.target_info.as_ref()
    }
}

impl Store {
    /// An empty store on the system clock.
    pub fn new(settings: StoreSettings) -> Self {
        Store::with_clock(settings, Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock`.
    pub fn with_clock(settings: StoreSettings, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Store {
            settings,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: Default::default(),
            clock,
            series: AtomicUsize::new(0),
            overflow_total: AtomicU64::new(0),
            last_overflow_log: Mutex::new(None),
            last_sweep: Mutex::new(now),
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Series currently kept.
    pub fn series_count(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// Data points dropped so far because the series cap was reached.
    pub fn overflow_total(&self) -> u64 {
        self.overflow_total.load(Ordering::Relaxed)
    }

    fn shard_of(&self, name: &str) -> &RwLock<HashMap<String, SharedFamily>> {
        &self.shards[(self.hasher.hash_one(name) as usize) % SHARDS]
    }

    /// The family `name`, created by `make` if it does not exist, locked. Ingestion and scrapes share the
    /// shard's read lock; only a new family takes it for writing.
    fn family(&self, name: &str, make: impl Fn() -> Family) -> (SharedFamily, bool) {
        let shard = self.shard_of(name);
        let existing = shard
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        match existing {
            Some(family) => (family, false),
            None => {
                let mut families = shard.write().unwrap_or_else(|p| p.into_inner());
                let family = families
                    .entry(name.to_string())
                    .or_insert_with(|| Arc::new(Mutex::new(make())));
                (family.clone(), true)
            }
        }
    }

    /// Runs `update` on the locked family `name` (created by `make` if needed), looking again if an expiry
    /// sweep took the family out of the store in between.
    fn with_family<R>(
        &self,
        name: &str,
        make: impl Fn() -> Family,
        update: impl FnOnce(&mut Family) -> R,
    ) -> R {
        loop {
            let (shared, _) = self.family(name, &make);
            let mut family = shared.lock().unwrap_or_else(|p| p.into_inner());
            if !family.removed {
                return update(&mut family);
            }
        }
    }

    /// The families of one shard, taken under its read lock and released at once.
    fn families_of(shard: &RwLock<HashMap<String, SharedFamily>>) -> Vec<(String, SharedFamily)> {
        shard
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, family)| (name.clone(), family.clone()))
            .collect()
    }

    /// Copies each shard's families with `copy`, each family under its own lock only while it is copied, then
    /// hands the copies to `visit` with no lock held.
    pub fn for_each_shard_copied<T>(
        &self,
        copy: impl Fn(&str, &Family) -> T,
        mut visit: impl FnMut(Vec<T>),
    ) {
        for shard in &self.shards {
            let copied: Vec<T> = Self::families_of(shard)
                .iter()
                .map(|(name, family)| copy(name, &family.lock().unwrap_or_else(|p| p.into_inner())))
                .collect();
            visit(copied);
        }
    }

    /// Visits every family in turn, holding only that family's lock.
    pub fn for_each_family(&self, mut visit: impl FnMut(&str, &Family)) {
        for shard in &self.shards {
            for (name, family) in Self::families_of(shard) {
                visit(&name, &family.lock().unwrap_or_else(|p| p.into_inner()));
            }
        }
    }

    /// Adds one OTLP request; `changed` sees every series a data point updated, under its shard's lock.
    pub fn ingest(
        &self,
        request: &ExportMetricsServiceRequest,
        changed: &mut dyn FnMut(Changed<'_>),
    ) -> IngestReport {
        let now = self.clock.now();
        let mut report = IngestReport::default();
        for resource_metrics in &request.resource_metrics {
            let resource = self.resource_labels(resource_metrics.resource.as_ref());
            if self.settings.target_info {
                self.update_target_info(
                    resource_metrics.resource.as_ref(),
                    &resource,
                    now,
                    changed,
                );
            }
            for scope_metrics in &resource_metrics.scope_metrics {
                let scope = self.scope_labels(scope_metrics.scope.as_ref());
                for metric in &scope_metrics.metrics {
                    self.ingest_metric(metric, &resource, &scope, now, &mut report, changed);
                }
            }
        }
        self.note_overflow(&report, now);
        report
    }

    /// How a resource's series are labelled (see [`ResourceTranslation`]).
    pub fn resource_translation(&self, resource: Option<&Resource>) -> ResourceTranslation {
        let labels = self.resource_labels(resource);
        let target_info = resource
            .filter(|_| self.settings.target_info)
            .and_then(|resource| target_info_labels(resource, &labels));
        ResourceTranslation {
            labels,
            target_info,
        }
    }

    /// The labels a scope gives every series of its metrics (`otel_scope_name`…; none when they are off).
    pub fn scope_translation(&self, scope: Option<&InstrumentationScope>) -> Vec<(String, String)> {
        self.scope_labels(scope)
    }

    /// The Prometheus family name of a metric of `kind` named `metric` in `unit`.
    pub fn family_name(&self, metric: &str, unit: &str, kind: Kind) -> String {
        naming::metric_name(
            &self.settings.namespace,
            metric,
            unit,
            kind,
            self.settings.suffixes,
        )
    }

    /// Claims the family `name` for points of a counter or gauge (`kind`) whose series the caller keeps itself
    /// (the alerting connector): `true` when the name is free or of that type, `false` when it belongs to
    /// another type, whose points the store would drop as a type conflict (and always for `target_info` while
    /// the store keeps it). A claim holds the name as ingesting a point holds its series: a caller claims each
    /// time it has points, and the family stays, even without series, until `metric_expiration` has passed.
    pub fn claim_family(&self, name: &str, kind: Kind) -> bool {
        if self.settings.target_info && name == "target_info" {
            return false;
        }
        let now = self.clock.now();
        let make = || Family {
            kind,
            help: String::new(),
            unit: String::new(),
            info: false,
            series: HashMap::new(),
            removed: false,
            claimed: None,
        };
        self.with_family(name, make, |family| {
            let granted = family.kind == kind && !family.info;
            if granted {
                family.claimed = Some(now);
            }
            granted
        })
    }

    /// The labels of a data point with `attributes` (see [`Store::ingest`] for the rules), for a caller that
    /// keeps its own series.
    pub fn number_labels(
        &self,
        attributes: &[KeyValue],
        resource: &ResourceTranslation,
        scope: &[(String, String)],
    ) -> Labels {
        self.labels(attributes, &resource.labels, scope)
    }

    /// Adds one metric of a resource and scope already translated, as [`Store::ingest`] adds it (without the
    /// resource's `target_info`, which the caller keeps).
    pub fn ingest_metric_with(
        &self,
        metric: &Metric,
        resource: &ResourceTranslation,
        scope: &[(String, String)],
        changed: &mut dyn FnMut(Changed<'_>),
    ) -> IngestReport {
        let now = self.clock.now();
        let mut report = IngestReport::default();
        self.ingest_metric(metric, &resource.labels, scope, now, &mut report, changed);
        self.note_overflow(&report, now);
        report
    }

    /// Counts and (at most once a minute) logs the points an ingest dropped at the series cap.
    fn note_overflow(&self, report: &IngestReport, now: Instant) {
        if report.overflow > 0 {
            self.overflow_total
                .fetch_add(report.overflow, Ordering::Relaxed);
            let mut last = self
                .last_overflow_log
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
                *last = Some(now);
                tracing::warn!(
                    max_series = self.settings.max_series,
                    dropped_points = report.overflow,
                    "prometheus exporter: series limit reached; data points of new series are dropped \
                     (counted in vigil_prometheus_exporter_dropped_points_total)"
                );
            }
        }
    }

    /// Whether an [`expire`](Store::expire) sweep is due (every tenth of `metric_expiration`, at least 1s):
    /// callers sweep after ingesting so memory held by ended series is freed even when nobody scrapes.
    pub fn sweep_due(&self) -> bool {
        let now = self.clock.now();
        let every = (self.settings.metric_expiration / 10).max(Duration::from_secs(1));
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*last) >= every {
            *last = now;
            true
        } else {
            false
        }
    }

    /// Removes series not updated within `metric_expiration`; `removed` sees each one as it goes.
    pub fn expire(&self, removed: &mut dyn FnMut(Changed<'_>)) {
        let now = self.clock.now();
        let expiration = self.settings.metric_expiration;
        for shard in &self.shards {
            let mut emptied = Vec::new();
            for (name, shared) in Self::families_of(shard) {
                let mut family = shared.lock().unwrap_or_else(|p| p.into_inner());
                let family = &mut *family;
                let before = family.series.len();
                family.series.retain(|labels, series| {
                    let keep = now.saturating_duration_since(series.updated) < expiration;
                    if !keep {
                        removed(Changed {
                            name: &name,
                            kind: family.kind,
                            labels,
                            series,
                            help: &family.help,
                            unit: &family.unit,
                            ended: true,
                        });
                    }
                    keep
                });
                self.series
                    .fetch_sub(before - family.series.len(), Ordering::Relaxed);
                if family.series.is_empty() && !claim_holds(family, now, expiration) {
                    emptied.push(name);
                }
            }
            if emptied.is_empty() {
                continue;
            }
            // Take empty families out under the write lock, checking again under each family's lock: an ingest
            // may have added a series since; one that still holds a removed family looks again.
            let mut families = shard.write().unwrap_or_else(|p| p.into_inner());
            for name in emptied {
                let empty = families.get(&name).is_some_and(|shared| {
                    let mut family = shared.lock().unwrap_or_else(|p| p.into_inner());
                    family.removed =
                        family.series.is_empty() && !claim_holds(&family, now, expiration);
                    family.removed
                });
                if empty {
                    families.remove(&name);
                }
            }
        }
    }

    fn resource_labels(&self, resource: Option<&Resource>) -> ResourceLabels {
        let attributes = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let find = |key: &str| {
            attributes
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| value_text(kv.value.as_ref()))
        };
        let job = match (find("service.namespace"), find("service.name")) {
            (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
            (_, Some(name)) => name,
            _ => String::new(),
        };
        let instance = find("service.instance.id").unwrap_or_default();
        let promoted = match &self.settings.promoted_resource {
            PromotedResource::None => Vec::new(),
            PromotedResource::All => attributes
                .iter()
                .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
                .collect(),
            PromotedResource::Keys(keys) => attributes
                .iter()
                .filter(|kv| keys.contains(&kv.key))
                .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
                .collect(),
        };
        ResourceLabels {
            job,
            instance,
            promoted: sanitise(promoted),
        }
    }

    fn scope_labels(&self, scope: Option<&InstrumentationScope>) -> Vec<(String, String)> {
        let Some(scope) = scope.filter(|_| self.settings.scope_labels) else {
            return Vec::new();
        };
        let mut labels = vec![
            ("otel_scope_name".to_string(), scope.name.clone()),
            ("otel_scope_version".to_string(), scope.version.clone()),
        ];
        for kv in &scope.attributes {
            labels.push((
                format!("otel_scope_{}", naming::label_name(&kv.key)),
                value_text(kv.value.as_ref()),
            ));
        }
        labels
    }

    fn update_target_info(
        &self,
        resource: Option<&Resource>,
        labels: &ResourceLabels,
        now: Instant,
        changed: &mut dyn FnMut(Changed<'_>),
    ) {
        let Some(labels) = resource.and_then(|resource| target_info_labels(resource, labels))
        else {
            return;
        };
        let name = "target_info";
        let make = || Family {
            kind: Kind::Gauge,
            help: "Target metadata".into(),
            unit: String::new(),
            info: true,
            series: HashMap::new(),
            removed: false,
            claimed: None,
        };
        self.with_family(name, make, |family| {
            let series = Series {
                value: SeriesValue::Number(1.0),
                updated: now,
                timestamp_ms: 0,
                label_text: super::render::label_text(&labels),
                exemplars: Vec::new(),
                start_time_unix_nano: 0,
            };
            if let Some(existing) = family.series.get_mut(&labels) {
                existing.updated = now;
                changed(Changed {
                    name,
                    kind: Kind::Gauge,
                    labels: &labels,
                    series: existing,
                    help: &family.help,
                    unit: "",
                    ended: false,
                });
            } else if self.admit_series() {
                changed(Changed {
                    name,
                    kind: Kind::Gauge,
                    labels: &labels,
                    series: &series,
                    help: &family.help,
                    unit: "",
                    ended: false,
                });
                family.series.insert(labels, series);
            }
        });
    }

    fn admit_series(&self) -> bool {
        let max = self.settings.max_series;
        self.series
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn ingest_metric(
        &self,
        metric: &Metric,
        resource: &ResourceLabels,
        scope: &[(String, String)],
        now: Instant,
        report: &mut IngestReport,
        changed: &mut dyn FnMut(Changed<'_>),
    ) {
        let Some(data) = &metric.data else { return };
        let (kind, delta) = match data {
            metric::Data::Gauge(_) => (Kind::Gauge, false),
            metric::Data::Sum(sum) => {
                let Some(delta) = temporality_is_delta(sum.aggregation_temporality) else {
                    report.invalid += sum.data_points.len() as u64;
                    return;
                };
                (
                    if sum.is_monotonic {
                        Kind::Counter
                    } else {
                        Kind::Gauge
                    },
                    delta,
                )
            }
            metric::Data::Histogram(h) => {
                let Some(delta) = temporality_is_delta(h.aggregation_temporality) else {
                    report.invalid += h.data_points.len() as u64;
                    return;
                };
                (Kind::Histogram, delta)
            }
            metric::Data::ExponentialHistogram(h) => {
                let Some(delta) = temporality_is_delta(h.aggregation_temporality) else {
                    report.invalid += h.data_points.len() as u64;
                    return;
                };
                (Kind::Histogram, delta)
            }
            metric::Data::Summary(_) => (Kind::Summary, false),
        };
        let name = naming::metric_name(
            &self.settings.namespace,
            &metric.name,
            &metric.unit,
            kind,
            self.settings.suffixes,
        );
        let make = || Family {
            kind,
            help: String::new(),
            unit: metric.unit.clone(),
            info: false,
            series: HashMap::new(),
            removed: false,
            claimed: None,
        };
        self.with_family(&name, make, |family| {
        let points = point_count(data);
        if family.kind != kind || family.info {
            // Two OTel metrics that map to one Prometheus name with different types cannot both be exposed.
            report.invalid += points;
            tracing::debug!(metric = %metric.name, prometheus = %name, "type conflict; data points dropped");
            return;
        }
        if !metric.description.is_empty() && family.help != metric.description {
            family.help = metric.description.clone();
        }
        let mut upsert = |attributes: &[KeyValue],
                          time_unix_nano: u64,
                          start_time_unix_nano: u64,
                          flags: u32,
                          value: SeriesValue,
                          exemplars: Vec<StoredExemplar>| {
            let labels = self.labels(attributes, resource, scope);
            const NO_RECORDED_VALUE: u32 = 1;
            if flags & NO_RECORDED_VALUE != 0 {
                // The series ended: leave it out of scrapes (Prometheus marks it stale itself).
                if let Some(series) = family.series.remove(&labels) {
                    self.series.fetch_sub(1, Ordering::Relaxed);
                    changed(Changed {
                        name: &name,
                        kind,
                        labels: &labels,
                        series: &series,
                        help: &family.help,
                        unit: &family.unit,
                        ended: true,
                    });
                }
                report.points += 1;
                return;
            }
            let timestamp_ms = (time_unix_nano / 1_000_000) as i64;
            let series = match family.series.get_mut(&labels) {
                Some(series) => {
                    series.value = if delta {
                        accumulate(&series.value, value)
                    } else {
                        value
                    };
                    series.updated = now;
                    series.timestamp_ms = timestamp_ms;
                    for exemplar in exemplars {
                        match series.exemplars.iter_mut().find(|e| e.bucket == exemplar.bucket) {
                            Some(old) => *old = exemplar,
                            None => series.exemplars.push(exemplar),
                        }
                    }
                    if !delta {
                        series.start_time_unix_nano = start_time_unix_nano;
                    }
                    report.points += 1;
                    changed(Changed {
                        name: &name,
                        kind,
                        labels: &labels,
                        series,
                        help: &family.help,
                        unit: &family.unit,
                        ended: false,
                    });
                    return;
                }
                None if self.admit_series() => Series {
                    value,
                    updated: now,
                    timestamp_ms,
                    label_text: super::render::label_text(&labels),
                    exemplars,
                    start_time_unix_nano,
                },
                None => {
                    report.overflow += 1;
                    return;
                }
            };
            report.points += 1;
            changed(Changed {
                name: &name,
                kind,
                labels: &labels,
                series: &series,
                help: &family.help,
                unit: &family.unit,
                ended: false,
            });
            family.series.insert(labels, series);
        };
        match data {
            metric::Data::Gauge(g) => {
                for p in &g.data_points {
                    upsert(
                        &p.attributes,
                        p.time_unix_nano,
                        p.start_time_unix_nano,
                        p.flags,
                        SeriesValue::Number(number(p)),
                        Vec::new(),
                    );
                }
            }
            metric::Data::Sum(s) => {
                for p in &s.data_points {
                    // Exemplars on gauges are dropped (the compatibility rules); counters keep the latest.
                    let exemplars = if kind == Kind::Counter {
                        p.exemplars.last().map(|e| stored_exemplar(e, 0)).into_iter().collect()
                    } else {
                        Vec::new()
                    };
                    upsert(
                        &p.attributes,
                        p.time_unix_nano,
                        p.start_time_unix_nano,
                        p.flags,
                        SeriesValue::Number(number(p)),
                        exemplars,
                    );
                }
            }
            metric::Data::Histogram(h) => {
                for p in &h.data_points {
                    let exemplars = p
                        .exemplars
                        .iter()
                        .map(|e| {
                            let value = exemplar_value(e);
                            let bucket = p.explicit_bounds.partition_point(|b| *b < value);
                            stored_exemplar(e, bucket)
                        })
                        .collect();
                    match histogram(p) {
                        Some(value) => upsert(
                            &p.attributes,
                            p.time_unix_nano,
                            p.start_time_unix_nano,
                            p.flags,
                            value,
                            exemplars,
                        ),
                        None => report.invalid += 1,
                    }
                }
            }
            metric::Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    match exponential(p) {
                        Some(value) => upsert(
                            &p.attributes,
                            p.time_unix_nano,
                            p.start_time_unix_nano,
                            p.flags,
                            value,
                            Vec::new(),
                        ),
                        None => report.invalid += 1,
                    }
                }
            }
            metric::Data::Summary(s) => {
                for p in &s.data_points {
                    upsert(
                        &p.attributes,
                        p.time_unix_nano,
                        p.start_time_unix_nano,
                        p.flags,
                        summary(p),
                        Vec::new(),
                    );
                }
            }
        }
        });
    }

    /// The label set of a data point: its attributes, scope labels, promoted resource attributes and constant
    /// labels, then `job` and `instance`, which always win. `le` and `quantile` become `key_le` and
    /// `key_quantile`.
    fn labels(
        &self,
        attributes: &[KeyValue],
        resource: &ResourceLabels,
        scope: &[(String, String)],
    ) -> Labels {
        let mut all = sanitise(
            attributes
                .iter()
                .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
                .collect(),
        );
        let present = |all: &Vec<(String, String)>, name: &str| all.iter().any(|(n, _)| n == name);
        for (name, value) in scope
            .iter()
            .chain(&resource.promoted)
            .chain(&self.settings.const_labels)
        {
            if !present(&all, name) {
                all.push((name.clone(), value.clone()));
            }
        }
        all.retain(|(n, _)| n != "job" && n != "instance");
        // `le` and `quantile` belong to bucket and quantile samples; an attribute of that name would give a
        // sample two of them, which fails the whole scrape.
        for (name, _) in &mut all {
            if name == "le" || name == "quantile" {
                name.insert_str(0, "key_");
            }
        }
        all.push(("job".into(), resource.job.clone()));
        all.push(("instance".into(), resource.instance.clone()));
        finish(all)
    }
}

/// Whether a family is held by a claim made within `expiration` before `now` (see [`Store::claim_family`]).
fn claim_holds(family: &Family, now: Instant, expiration: Duration) -> bool {
    family
        .claimed
        .is_some_and(|at| now.saturating_duration_since(at) < expiration)
}

/// The labels of a resource's `target_info` series: its attributes other than those that make `job` and
/// `instance`, and those two; `None` when it has no other attribute.
fn target_info_labels(resource: &Resource, labels: &ResourceLabels) -> Option<Labels> {
    let skip = ["service.name", "service.namespace", "service.instance.id"];
    let attributes: Vec<(String, String)> = resource
        .attributes
        .iter()
        .filter(|kv| !skip.contains(&kv.key.as_str()))
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect();
    if attributes.is_empty() {
        return None;
    }
    let mut all = sanitise(attributes);
    all.push(("job".into(), labels.job.clone()));
    all.push(("instance".into(), labels.instance.clone()));
    Some(finish(all))
}

/// Sanitises label names; keys that collide after sanitising get their values joined with `;`, ordered by
/// the original key (the compatibility specification's rule).
fn sanitise(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let name = naming::label_name(&key);
        if let Some(existing) = out.iter_mut().find(|(n, _)| *n == name) {
            existing.1.push(';');
            existing.1.push_str(&value);
        } else {
            out.push((name, value));
        }
    }
    out
}

/// Sorts by name and drops empty values (Prometheus treats an empty label as absent).
fn finish(mut all: Vec<(String, String)>) -> Labels {
    all.retain(|(_, v)| !v.is_empty());
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|a, b| a.0 == b.0);
    all.into_boxed_slice()
}

fn temporality_is_delta(temporality: i32) -> Option<bool> {
    match AggregationTemporality::try_from(temporality) {
        Ok(AggregationTemporality::Delta) => Some(true),
        Ok(AggregationTemporality::Cumulative) => Some(false),
        _ => None,
    }
}

fn point_count(data: &metric::Data) -> u64 {
    (match data {
        metric::Data::Gauge(g) => g.data_points.len(),
        metric::Data::Sum(s) => s.data_points.len(),
        metric::Data::Histogram(h) => h.data_points.len(),
        metric::Data::ExponentialHistogram(h) => h.data_points.len(),
        metric::Data::Summary(s) => s.data_points.len(),
    }) as u64
}

fn exemplar_value(e: &OtlpExemplar) -> f64 {
    match e.value {
        Some(exemplar::Value::AsDouble(v)) => v,
        Some(exemplar::Value::AsInt(v)) => v as f64,
        None => 0.0,
    }
}

/// An OTLP exemplar as Prometheus keeps it: `trace_id` and `span_id` in hex, then filtered attributes while
/// the label set stays within OpenMetrics' 128 characters.
fn stored_exemplar(e: &OtlpExemplar, bucket: usize) -> StoredExemplar {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut labels = Vec::new();
    if !e.trace_id.is_empty() {
        labels.push(("trace_id".to_string(), hex(&e.trace_id)));
    }
    if !e.span_id.is_empty() {
        labels.push(("span_id".to_string(), hex(&e.span_id)));
    }
    let mut length: usize = labels
        .iter()
        .map(|(k, v)| k.chars().count() + v.chars().count())
        .sum();
    for kv in &e.filtered_attributes {
        let name = naming::label_name(&kv.key);
        let value = value_text(kv.value.as_ref());
        let added = name.chars().count() + value.chars().count();
        if labels.iter().any(|(n, _)| *n == name) || length + added > 128 {
            continue;
        }
        length += added;
        labels.push((name, value));
    }
    StoredExemplar {
        bucket,
        labels,
        value: exemplar_value(e),
        time_unix_nano: e.time_unix_nano,
    }
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => 0.0,
    }
}

fn histogram(p: &HistogramDataPoint) -> Option<SeriesValue> {
    let mut counts = p.bucket_counts.clone();
    if counts.is_empty() {
        counts = vec![p.count];
    }
    if counts.len() != p.explicit_bounds.len() + 1 {
        return None;
    }
    Some(SeriesValue::Histogram(Histogram {
        bounds: p.explicit_bounds.clone(),
        counts,
        sum: p.sum.unwrap_or(0.0),
        count: p.count,
    }))
}

fn exponential(p: &ExponentialHistogramDataPoint) -> Option<SeriesValue> {
    // Prometheus needs a sum; the compatibility rules drop points without one.
    let sum = p.sum?;
    let side = |b: Option<&exponential_histogram_data_point::Buckets>| {
        b.map(|b| ExpBuckets {
            offset: b.offset,
            counts: b.bucket_counts.clone(),
        })
        .unwrap_or_default()
    };
    Some(SeriesValue::Exponential(ExpHistogram {
        scale: p.scale,
        zero_count: p.zero_count,
        zero_threshold: p.zero_threshold,
        positive: side(p.positive.as_ref()),
        negative: side(p.negative.as_ref()),
        sum,
        count: p.count,
    }))
}

fn summary(p: &SummaryDataPoint) -> SeriesValue {
    SeriesValue::Summary(Summary {
        quantiles: p
            .quantile_values
            .iter()
            .map(|q| (q.quantile, q.value))
            .collect(),
        sum: p.sum,
        count: p.count,
    })
}

/// Adds a delta to the accumulated value; a delta of another shape (new bounds) starts over.
fn accumulate(old: &SeriesValue, delta: SeriesValue) -> SeriesValue {
    match (old, delta) {
        (SeriesValue::Number(a), SeriesValue::Number(b)) => SeriesValue::Number(a + b),
        (SeriesValue::Histogram(a), SeriesValue::Histogram(b)) if a.bounds == b.bounds => {
            SeriesValue::Histogram(Histogram {
                counts: a.counts.iter().zip(&b.counts).map(|(x, y)| x + y).collect(),
                sum: a.sum + b.sum,
                count: a.count + b.count,
                bounds: b.bounds,
            })
        }
        (SeriesValue::Exponential(a), SeriesValue::Exponential(b)) => {
            SeriesValue::Exponential(merge_exponential(a, &b))
        }
        (_, delta) => delta,
    }
}

fn merge_exponential(a: &ExpHistogram, b: &ExpHistogram) -> ExpHistogram {
    let scale = a.scale.min(b.scale);
    let side = |x: &ExpBuckets, xs: i32, y: &ExpBuckets, ys: i32| {
        add_buckets(
            &downscale(x, (xs - scale) as u32),
            &downscale(y, (ys - scale) as u32),
        )
    };
    ExpHistogram {
        scale,
        zero_count: a.zero_count + b.zero_count,
        zero_threshold: a.zero_threshold.max(b.zero_threshold),
        positive: side(&a.positive, a.scale, &b.positive, b.scale),
        negative: side(&a.negative, a.scale, &b.negative, b.scale),
        sum: a.sum + b.sum,
        count: a.count + b.count,
    }
}

/// The same buckets at a scale `by` lower: each new bucket covers `2^by` old ones.
pub fn downscale(buckets: &ExpBuckets, by: u32) -> ExpBuckets {
    if by == 0 || buckets.counts.is_empty() {
        return buckets.clone();
    }
    let by = by.min(31);
    let first = buckets.offset >> by;
    let last = (buckets.offset + buckets.counts.len() as i32 - 1) >> by;
    let mut counts = vec![0u64; (last - first + 1) as usize];
    for (i, count) in buckets.counts.iter().enumerate() {
        let index = (buckets.offset + i as i32) >> by;
        counts[(index - first) as usize] += count;
    }
    ExpBuckets {
        offset: first,
        counts,
    }
}

fn add_buckets(a: &ExpBuckets, b: &ExpBuckets) -> ExpBuckets {
    if a.counts.is_empty() {
        return b.clone();
    }
    if b.counts.is_empty() {
        return a.clone();
    }
    let first = a.offset.min(b.offset);
    let end = (a.offset + a.counts.len() as i32).max(b.offset + b.counts.len() as i32);
    let mut counts = vec![0u64; (end - first) as usize];
    for x in [a, b] {
        for (i, count) in x.counts.iter().enumerate() {
            counts[(x.offset - first) as usize + i] += count;
        }
    }
    ExpBuckets {
        offset: first,
        counts,
    }
}

/// The text of an attribute value as a label value: strings as they are, other values as OTLP/JSON would
/// spell them.
pub fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        // A profiles-only dictionary reference; it has no meaning outside its profile.
        Some(any_value::Value::StringValueStrindex(i)) => i.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<serde_json::Value> = a
                .values
                .iter()
                .map(|v| serde_json::Value::String(value_text(Some(v))))
                .collect();
            serde_json::Value::Array(items).to_string()
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let map: serde_json::Map<String, serde_json::Value> = kv
                .values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        serde_json::Value::String(value_text(kv.value.as_ref())),
                    )
                })
                .collect();
            serde_json::Value::Object(map).to_string()
        }
    }
}
