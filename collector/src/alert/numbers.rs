//! The connector's ingestion: every metric a rule may read, from the encoded request into the tsdb.
//!
//! Counters and gauges (gauges, and sums with cumulative temporality) take the fast way: their points are read
//! in place ([`vigil_proto::otlp::fields`]) and each point's attributes, as sent, find the tsdb series they
//! were translated to the first time; only a point with attributes not seen before is decoded and translated
//! by the shared Prometheus store. Equal bytes decode to equal attributes, so this is a memo of the
//! translation, never a second one. Histograms, summaries, deltas (which the store accumulates) and the rare
//! metric whose data or point attributes are split over several fields are decoded and go through the store's
//! general path ([`Store::ingest_metric_with`]). The unit test `fast_and_general_paths_store_the_same` holds
//! the fast way to the general path, which is the reference.
//!
//! A counter's or gauge's Prometheus family is claimed in the store each time the metric has points
//! ([`Store::claim_family`]), so that between two metrics of different types that map to one name the one that
//! keeps coming keeps it, as in the store's general path.
//!
//! What is cached is bounded: resources, contexts (one per resource, scope and metric) and point entries are
//! all dropped together once they take about [`MAX_BYTES`], or when a tsdb compaction moves series (their
//! handles are then stale). Each point entry holds its attributes as sent (a few hundred bytes for ten
//! attributes) and a tsdb handle. Lookups hash with foldhash, seeded per process: minimally resistant to
//! flooding with colliding keys, which the size bound limits in any case; hits are confirmed by comparing the
//! bytes.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use prost::Message;
use vigil_proto::otlp::common::v1::InstrumentationScope;
use vigil_proto::otlp::fields::{self, MetricData, MetricFields, MetricsItem, NumberPoint};
use vigil_proto::otlp::metrics::v1::{AggregationTemporality, Metric, NumberDataPoint};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::wire::WireError;

use super::filter::Wanted;
use super::tsdb::{self, Labels, NAME, SeriesHandle, Tsdb};
use crate::prometheus::naming::Kind;
use crate::prometheus::store::{Changed, ResourceTranslation, Store};

/// About the most memory (bytes) the caches take before everything is dropped and found again.
pub const MAX_BYTES: usize = 64 << 20;

/// What an entry of the caches costs besides the bytes it keeps (its struct, index slot and allocation).
const ENTRY_OVERHEAD: usize = 96;

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// The wire format is broken.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// A part does not decode.
    #[error("{0}")]
    Decode(#[from] prost::DecodeError),
}

/// Where ingested samples go, and what the ingest needs to know.
pub struct Target<'a> {
    /// The tsdb.
    pub db: &'a mut Tsdb,
    /// When the request is ingested (ms): the time of samples that have none.
    pub now: i64,
    /// While restored alerts wait for their sources: the `(job, instance)` of every sample stored goes here.
    pub reported: Option<&'a mut HashSet<(String, String)>>,
    /// Samples dropped because the tsdb's series cap was reached.
    pub over_cap: u64,
}

impl Target<'_> {
    fn append_to(&mut self, handle: SeriesHandle, t: i64, value: f64) -> bool {
        self.db.append_to(handle, t, value)
    }

    fn note_source(&mut self, resource: &ResourceTranslation) {
        if let Some(reported) = self.reported.as_deref_mut() {
            reported.insert((resource.job().to_string(), resource.instance().to_string()));
        }
    }
}

/// The caches of the fast way (see the module documentation).
pub struct NumberSeries {
    state: RandomState,
    resources: Vec<ResourceEntry>,
    resource_index: HashTable<(u64, usize)>,
    contexts: Vec<Context>,
    context_index: HashTable<(u64, usize)>,
    /// About what the caches take (see [`MAX_BYTES`]), and the most they may.
    bytes: usize,
    max_bytes: usize,
    /// The tsdb generation the handles were issued in.
    generation: u64,
}

/// A resource as sent, and how it is translated.
struct ResourceEntry {
    bytes: Box<[u8]>,
    translation: ResourceTranslation,
    /// Whether a rule reads `target_info`.
    keeps_target_info: bool,
    /// Its `target_info` series, once stored.
    target_info: Option<SeriesHandle>,
}

/// How a metric's data is taken: which kind of Prometheus family it makes, or the general path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Shape {
    /// Points appended as they are, to a family of this kind.
    Number(Kind),
    /// Decoded and translated by the store.
    General,
}

impl Shape {
    fn of(data: &MetricData<'_>) -> Shape {
        const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
        match data {
            MetricData::Gauge(_) => Shape::Number(Kind::Gauge),
            MetricData::Sum {
                temporality: CUMULATIVE,
                monotonic,
                ..
            } => Shape::Number(if *monotonic {
                Kind::Counter
            } else {
                Kind::Gauge
            }),
            _ => Shape::General,
        }
    }
}

/// One metric of one resource and scope.
struct Context {
    resource: usize,
    scope: Box<[u8]>,
    name: Box<str>,
    unit: Box<str>,
    shape: Shape,
    /// Whether a rule may read it; nothing else is kept for a metric no rule reads.
    wanted: bool,
    scope_labels: Vec<(String, String)>,
    /// The Prometheus family name of a counter or gauge (empty for the general path).
    family: String,
    /// The attribute sets seen, found by their hash in `point_index`.
    points: Vec<PointEntry>,
    point_index: HashTable<usize>,
    /// The entry of each point position in the last request: SDKs send their series in the same order every
    /// time, so the point at the same place is expected to have the same attributes (one comparison, no walk of
    /// its attributes and no hashing).
    by_position: Vec<usize>,
}

impl Context {
    /// Point positions remembered (a longer metric is looked up by hash past this).
    const POSITIONS: usize = 4096;

    /// The attributes of the entry last seen at `position`, which the point there probably has again.
    fn expected(&self, position: usize) -> Option<&[u8]> {
        let entry = *self.by_position.get(position)?;
        self.points.get(entry).map(|p| &*p.attributes)
    }

    /// The entry of `point`, the point at `position`, and the hash of its attributes when it was computed.
    fn find(
        &self,
        state: &RandomState,
        position: usize,
        point: &NumberPoint<'_>,
    ) -> (Option<usize>, Option<u64>) {
        if point.as_expected {
            // The reader matched them against `expected(position)`.
            return (self.by_position.get(position).copied(), None);
        }
        let attributes = point.attributes;
        let hash = state.hash_one(attributes);
        let found = self
            .point_index
            .find(hash, |&e| *self.points[e].attributes == *attributes)
            .copied();
        (found, Some(hash))
    }

    /// Notes that the point at `position` has `entry`'s attributes; returns the bytes this took.
    fn remember(&mut self, position: usize, entry: usize) -> usize {
        if position >= Self::POSITIONS {
            return 0;
        }
        let before = self.by_position.len();
        if before <= position {
            self.by_position.resize(position + 1, usize::MAX);
        }
        self.by_position[position] = entry;
        (self.by_position.len() - before) * std::mem::size_of::<usize>()
    }
}

/// A point's attributes as sent, and the tsdb series they were translated to.
struct PointEntry {
    hash: u64,
    attributes: Box<[u8]>,
    handle: SeriesHandle,
}

/// Where the walk is in the request.
struct Position<'b> {
    resource: usize,
    scope: Cow<'b, [u8]>,
    scope_hash: u64,
    /// Points of the current metric, reused.
    points: Vec<NumberPoint<'b>>,
}

impl Default for NumberSeries {
    fn default() -> Self {
        NumberSeries {
            state: RandomState::default(),
            resources: Vec::new(),
            resource_index: HashTable::new(),
            contexts: Vec::new(),
            context_index: HashTable::new(),
            bytes: 0,
            max_bytes: MAX_BYTES,
            generation: 0,
        }
    }
}

impl NumberSeries {
    /// Point entries cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.contexts.iter().map(|c| c.points.len()).sum()
    }

    /// About what the caches take (bytes).
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Sets the most the caches may take before they are dropped.
    #[cfg(test)]
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    fn clear(&mut self) {
        self.resources.clear();
        self.resource_index.clear();
        self.contexts.clear();
        self.context_index.clear();
        self.bytes = 0;
    }

    /// Stores the samples `request` (an encoded `ExportMetricsServiceRequest`) holds of metrics `wanted` names.
    /// Stops at the first part that does not read; what was read before it is kept.
    pub fn ingest(
        &mut self,
        request: &[u8],
        store: &Store,
        wanted: &Wanted,
        target: &mut Target<'_>,
    ) -> Result<(), Unreadable> {
        if target.db.generation() != self.generation || self.bytes >= self.max_bytes {
            self.clear();
            self.generation = target.db.generation();
        }
        let mut at = Position {
            resource: 0,
            scope: Cow::Borrowed(&[]),
            scope_hash: 0,
            points: Vec::new(),
        };
        fields::for_each_metric(request, |item| {
            match item {
                MetricsItem::Entry { resource, .. } => {
                    at.resource = self.resource(&resource, store, wanted)?;
                    self.append_target_info(at.resource, target);
                }
                MetricsItem::Scope { scope } => {
                    at.scope_hash = self.state.hash_one(scope.as_ref());
                    at.scope = scope;
                }
                MetricsItem::Metric(metric) => {
                    self.metric(&metric, &mut at, store, wanted, target)?;
                }
            }
            Ok::<_, Unreadable>(())
        })
    }

    /// The index of the resource sent as `bytes`, translated the first time it is seen.
    fn resource(
        &mut self,
        bytes: &[u8],
        store: &Store,
        wanted: &Wanted,
    ) -> Result<usize, Unreadable> {
        let hash = self.state.hash_one(bytes);
        let resources = &self.resources;
        if let Some(&(_, index)) = self
            .resource_index
            .find(hash, |&(_, i)| *resources[i].bytes == *bytes)
        {
            return Ok(index);
        }
        let decoded = Resource::decode(bytes)?;
        self.bytes += bytes.len() + 2 * ENTRY_OVERHEAD;
        let index = self.resources.len();
        self.resources.push(ResourceEntry {
            bytes: bytes.into(),
            translation: store.resource_translation(Some(&decoded)),
            keeps_target_info: wanted.wants("target_info", ""),
            target_info: None,
        });
        self.resource_index
            .insert_unique(hash, (hash, index), |&(h, _)| h);
        Ok(index)
    }

    /// Stores the resource's `target_info` sample when a rule reads it, as the store's general path does once per
    /// entry.
    fn append_target_info(&mut self, resource: usize, target: &mut Target<'_>) {
        let entry = &mut self.resources[resource];
        let Some(labels) = entry
            .translation
            .target_info()
            .filter(|_| entry.keeps_target_info)
        else {
            return;
        };
        target.note_source(&entry.translation);
        if let Some(handle) = entry.target_info
            && target.append_to(handle, target.now, 1.0)
        {
            return;
        }
        let mut labels: Labels = labels.to_vec();
        labels.push((NAME.into(), "target_info".into()));
        match target
            .db
            .append_indexed(tsdb::sorted(labels), target.now, 1.0)
        {
            Some(handle) => entry.target_info = Some(handle),
            None => target.over_cap += 1,
        }
    }

    /// The context of `metric` at the current resource and scope, made the first time it is seen.
    fn context(
        &mut self,
        metric: &MetricFields<'_>,
        at: &Position<'_>,
        store: &Store,
        wanted: &Wanted,
    ) -> Result<usize, Unreadable> {
        let shape = Shape::of(&metric.data);
        let hash =
            self.state
                .hash_one((at.resource, at.scope_hash, metric.name, metric.unit, shape));
        let contexts = &self.contexts;
        if let Some(&(_, index)) = self.context_index.find(hash, |&(_, i)| {
            let c = &contexts[i];
            c.resource == at.resource
                && c.shape == shape
                && *c.name == *metric.name
                && *c.unit == *metric.unit
                && *c.scope == *at.scope
        }) {
            return Ok(index);
        }
        let wanted = wanted.wants(metric.name, metric.unit);
        let (scope_labels, family) = if wanted {
            let scope = InstrumentationScope::decode(at.scope.as_ref())?;
            let family = match shape {
                Shape::Number(kind) => store.family_name(metric.name, metric.unit, kind),
                Shape::General => String::new(),
            };
            (store.scope_translation(Some(&scope)), family)
        } else {
            (Vec::new(), String::new())
        };
        self.bytes += at.scope.len()
            + metric.name.len()
            + metric.unit.len()
            + family.len()
            + 2 * ENTRY_OVERHEAD;
        let index = self.contexts.len();
        self.contexts.push(Context {
            resource: at.resource,
            scope: at.scope.as_ref().into(),
            name: metric.name.into(),
            unit: metric.unit.into(),
            shape,
            wanted,
            scope_labels,
            family,
            points: Vec::new(),
            point_index: HashTable::new(),
            by_position: Vec::new(),
        });
        self.context_index
            .insert_unique(hash, (hash, index), |&(h, _)| h);
        Ok(index)
    }

    fn metric<'b>(
        &mut self,
        metric: &MetricFields<'b>,
        at: &mut Position<'b>,
        store: &Store,
        wanted: &Wanted,
        target: &mut Target<'_>,
    ) -> Result<(), Unreadable> {
        let context = self.context(metric, at, store, wanted)?;
        if !self.contexts[context].wanted {
            return Ok(());
        }
        at.points.clear();
        let read_in_place = match (&self.contexts[context].shape, &metric.data) {
            (Shape::Number(_), MetricData::Gauge(body) | MetricData::Sum { body, .. }) => {
                let context = &self.contexts[context];
                fields::number_points(body, &mut at.points, |i| context.expected(i))?
            }
            _ => false,
        };
        if !read_in_place {
            let decoded = Metric::decode(metric.message)?;
            let context = &self.contexts[context];
            let resource = &self.resources[context.resource].translation;
            let mut reported = false;
            store.ingest_metric_with(&decoded, resource, &context.scope_labels, &mut |changed| {
                reported |= !changed.ended;
                append_changed(&changed, target);
            });
            if reported {
                target.note_source(resource);
            }
            return Ok(());
        }
        // Claimed each time, as the store's general path checks the family's type at each metric.
        let claimed = match self.contexts[context].shape {
            Shape::Number(kind) => store.claim_family(&self.contexts[context].family, kind),
            Shape::General => false,
        };
        if !claimed {
            return Ok(());
        }
        const NO_RECORDED_VALUE: u32 = 1;
        let mut reported = false;
        for (position, point) in at.points.iter().enumerate() {
            if point.flags & NO_RECORDED_VALUE != 0 {
                // The series ended: the tsdb's staleness takes care of it.
                continue;
            }
            reported = true;
            let timestamp_ms = (point.time_unix_nano / 1_000_000) as i64;
            let t = if timestamp_ms > 0 {
                timestamp_ms
            } else {
                target.now
            };
            if !self.append_point(context, position, point, t, store, target)? {
                target.over_cap += 1;
            }
        }
        if reported {
            let resource = self.contexts[context].resource;
            target.note_source(&self.resources[resource].translation);
        }
        Ok(())
    }

    /// Appends the sample of the point at `position` of its metric; `false` when it was dropped at the series
    /// cap.
    fn append_point(
        &mut self,
        context: usize,
        position: usize,
        point: &NumberPoint<'_>,
        t: i64,
        store: &Store,
        target: &mut Target<'_>,
    ) -> Result<bool, Unreadable> {
        let state = &self.state;
        let context = &mut self.contexts[context];
        let (found, hash) = context.find(state, position, point);
        if let Some(entry) = found {
            self.bytes += context.remember(position, entry);
            if target.append_to(context.points[entry].handle, t, point.value) {
                return Ok(true);
            }
        }
        // Not seen before, or its handle went stale: translate the attributes.
        let attributes = NumberDataPoint::decode(point.attributes)?.attributes;
        let translation = &self.resources[context.resource].translation;
        let mut labels: Labels = store
            .number_labels(&attributes, translation, &context.scope_labels)
            .into_vec();
        labels.push((NAME.into(), context.family.clone()));
        let Some(handle) = target
            .db
            .append_indexed(tsdb::sorted(labels), t, point.value)
        else {
            return Ok(false);
        };
        match found {
            Some(entry) => context.points[entry].handle = handle,
            None => {
                let hash = hash.unwrap_or_else(|| state.hash_one(point.attributes));
                let entry = context.points.len();
                context.points.push(PointEntry {
                    hash,
                    attributes: point.attributes.into(),
                    handle,
                });
                let points = &context.points;
                context
                    .point_index
                    .insert_unique(hash, entry, |&e| points[e].hash);
                self.bytes +=
                    context.remember(position, entry) + point.attributes.len() + ENTRY_OVERHEAD;
            }
        }
        Ok(true)
    }
}

/// Stores the samples of a series the store's general path updated.
fn append_changed(changed: &Changed<'_>, target: &mut Target<'_>) {
    if changed.ended {
        return;
    }
    let t = if changed.series.timestamp_ms > 0 {
        changed.series.timestamp_ms
    } else {
        target.now
    };
    for (name, value, extra) in super::samples_of(changed) {
        let mut labels: Labels = changed.labels.to_vec();
        labels.push((NAME.into(), name));
        if let Some((k, v)) = extra {
            labels.push((k.into(), v));
        }
        if target.db.append(tsdb::sorted(labels), t, value) == tsdb::Appended::OverCap {
            target.over_cap += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
    use vigil_proto::otlp::metrics::v1::{Gauge, ResourceMetrics, ScopeMetrics, number_data_point};
    use vigil_proto::otlp::string_attribute;

    use super::*;
    use crate::alert::promql;
    use crate::prometheus::store::StoreSettings;

    /// One gauge with a point per device.
    fn request(devices: &[&str]) -> Vec<u8> {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "gpu_usage".into(),
                        data: Some(vigil_proto::otlp::metrics::v1::metric::Data::Gauge(Gauge {
                            data_points: devices
                                .iter()
                                .map(|d| NumberDataPoint {
                                    attributes: vec![string_attribute("device", d)],
                                    value: Some(number_data_point::Value::AsDouble(0.5)),
                                    ..NumberDataPoint::default()
                                })
                                .collect(),
                        })),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn each_position_expects_the_attributes_it_had_last_time() {
        let rule = promql::parse("gpu_usage < 0.3").unwrap();
        let wanted = Wanted::new([&rule], "", true);
        let store = Store::new(StoreSettings::default());
        let mut db = Tsdb::new(Duration::from_secs(600), 100);
        let mut numbers = NumberSeries::default();
        let mut ingest = |numbers: &mut NumberSeries, request: &[u8], now: i64| {
            let mut target = Target {
                db: &mut db,
                now,
                reported: None,
                over_cap: 0,
            };
            numbers
                .ingest(request, &store, &wanted, &mut target)
                .unwrap();
        };
        ingest(&mut numbers, &request(&["a", "b", "c"]), 1_000);
        let device = |numbers: &NumberSeries, position| {
            numbers.contexts[0].expected(position).map(|bytes| {
                let attributes = NumberDataPoint::decode(bytes).unwrap().attributes;
                attributes[0].value.clone()
            })
        };
        let text = |d: &str| string_attribute("device", d).value;
        assert_eq!(device(&numbers, 0), Some(text("a")));
        assert_eq!(device(&numbers, 2), Some(text("c")));
        assert_eq!(device(&numbers, 3), None);
        // Seen again, nothing more is kept; a fourth point costs its attributes, its entry and its position.
        let size = numbers.size();
        ingest(&mut numbers, &request(&["a", "b", "c"]), 1_500);
        assert_eq!(numbers.size(), size);
        ingest(&mut numbers, &request(&["a", "b", "c", "d"]), 1_600);
        let d = string_attribute("device", "d").encoded_len() + 2;
        assert_eq!(
            numbers.size(),
            size + d + ENTRY_OVERHEAD + std::mem::size_of::<usize>()
        );
        // The series come in another order: each position now expects what it had this time.
        ingest(&mut numbers, &request(&["c", "a"]), 2_000);
        assert_eq!(device(&numbers, 0), Some(text("c")));
        assert_eq!(device(&numbers, 1), Some(text("a")));
        assert_eq!(numbers.len(), 4);
    }
}
