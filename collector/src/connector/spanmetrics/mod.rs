//! Connector `spanmetrics`: RED metrics from spans, so request-rate, error-rate and latency dashboards and
//! alerts work from traces alone.
//!
//! Per service, span name, span kind, status code and any configured dimension it counts calls
//! (`traces.span.metrics.calls`, a monotonic sum → `traces_span_metrics_calls_total` in Prometheus) and records
//! durations (`traces.span.metrics.duration`, an explicit-bucket histogram in seconds by default →
//! `traces_span_metrics_duration_seconds`). Names and label values match otelcol's spanmetrics connector, so
//! its dashboards work unchanged. Errors are the calls with `status_code="STATUS_CODE_ERROR"`.
//!
//! Every `metrics_flush_interval` the cumulative totals of the series updated within `metrics_expiration` are
//! sent to the metrics pipelines that list the connector as a receiver. `max_series` caps memory: spans of new
//! series beyond it are counted in one series labelled `otel_metric_overflow="true"`.
//!
//! With `exemplars.enabled` (the default), each series keeps the trace and span id of the latest span per
//! duration bucket (and for its calls), sent as OTLP exemplars: the `prometheus` exporter writes them in
//! OpenMetrics, so a latency panel's point opens the very trace. Ids are copied into fixed arrays.
//!
//! It is on the default pipeline, so it is built for speed: spans are read in place from the encoded request
//! with the shared wire reader ([`vigil_proto::otlp::fields`]), series are found by the hash of their borrowed
//! dimensions (randomly keyed, as span names come from clients), and only a new series allocates (its key).
//! The tests keep a `prost`-based reference beside it and a differential property test that holds the two to
//! the same counts.

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

// Series are found per span: foldhash, seeded per process, hashes a span's short keys several times faster than
// std's SipHash; the series cap bounds what colliding keys could cost.
use foldhash::fast::{FoldHasher, RandomState};

/// The hasher of a series' dimensions.
type SeriesHasher = FoldHasher<'static>;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use tokio::sync::watch;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use vigil_proto::otlp::fields::{AttributeValue, ResourceFields, SpanFields, for_each_span};
use vigil_proto::otlp::metrics::v1::{
    AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::otlp::trace::v1::{span, status};
use vigil_proto::otlp::wire::{WireError, same_bytes};
use vigil_proto::otlp::{Signal, string_attribute};

use super::Connector;
use crate::component::Checker;
use crate::exporter::{ExportError, Exported, QueueSettings};
use crate::pipeline::{Batch, BoxFuture, SharedConsumer};
use crate::prometheus::store::value_text;
use crate::telemetry::{Counter, Registry};

/// A dimension beyond the four defaults: a span (or resource) attribute, with a value for spans without it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// The attribute key, e.g. `http.request.method`.
    pub name: String,
    /// Used when the span has no such attribute; without it the label is left out.
    #[serde(default)]
    pub default: Option<String>,
}

/// The unit of the duration histogram.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum DurationUnit {
    /// Seconds, Prometheus' base unit (the default; `promtool` accepts it).
    #[default]
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds, otelcol's default.
    #[serde(rename = "ms")]
    Milliseconds,
}

/// A bucket boundary: a duration (`250ms`) or a number in the histogram's unit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Bound {
    /// A number in the histogram's unit.
    Number(f64),
    /// A duration such as `250ms` or `2s`.
    Duration(String),
}

/// `histogram.explicit`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExplicitBuckets {
    /// Upper bounds, ascending.
    pub buckets: Vec<Bound>,
}

/// `histogram`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistogramSettings {
    /// `s` or `ms`.
    pub unit: DurationUnit,
    /// Bucket bounds; otelcol's defaults (2 ms … 15 s) when absent.
    pub explicit: Option<ExplicitBuckets>,
}

impl Default for HistogramSettings {
    fn default() -> Self {
        HistogramSettings {
            unit: DurationUnit::Seconds,
            explicit: None,
        }
    }
}

/// otelcol's default bounds, in milliseconds.
const DEFAULT_BOUNDS_MS: [f64; 16] = [
    2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0,
    10000.0, 15000.0,
];

/// `connectors.spanmetrics`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Prefix of the metric names.
    pub namespace: String,
    /// Dimensions beyond service, span name, kind and status code.
    pub dimensions: Vec<Dimension>,
    /// The duration histogram.
    pub histogram: HistogramSettings,
    /// How often totals are sent on.
    #[serde(with = "crate::component::duration")]
    pub metrics_flush_interval: Duration,
    /// A series without spans for this long is no longer sent; `0s` keeps every series forever.
    #[serde(with = "crate::component::duration")]
    pub metrics_expiration: Duration,
    /// Most series kept; spans of further series go to one overflow series.
    pub max_series: usize,
    /// Exemplars (trace and span ids) on the series.
    pub exemplars: ExemplarsConfig,
    /// The queue in front of it.
    pub sending_queue: QueueSettings,
}

/// `exemplars`, as in otelcol's spanmetrics connector.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ExemplarsConfig {
    /// Keep the latest span's ids per duration bucket and send them as exemplars (default on).
    pub enabled: bool,
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig { enabled: true }
    }
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            namespace: "traces.span.metrics".into(),
            dimensions: Vec::new(),
            histogram: HistogramSettings::default(),
            metrics_flush_interval: Duration::from_secs(15),
            metrics_expiration: Duration::from_secs(300),
            max_series: 10_000,
            exemplars: ExemplarsConfig::default(),
            sending_queue: QueueSettings::default(),
        }
    }
}

impl SpanMetricsConfig {
    /// Checks values serde cannot.
    pub fn validate(&self, check: &mut Checker<'_>, path: &str) {
        if self.metrics_flush_interval.is_zero() {
            check.error(
                &format!("{path}.metrics_flush_interval"),
                "must be longer than 0s",
            );
        }
        if self.max_series == 0 {
            check.error(&format!("{path}.max_series"), "must be at least 1");
        }
        match self.bounds() {
            Ok(bounds) => {
                if bounds.windows(2).any(|w| w[0] >= w[1]) {
                    check.error(
                        &format!("{path}.histogram.explicit.buckets"),
                        "bounds must be strictly ascending",
                    );
                }
            }
            Err(message) => check.error(&format!("{path}.histogram.explicit.buckets"), message),
        }
        for (i, dimension) in self.dimensions.iter().enumerate() {
            if ["service.name", "span.name", "span.kind", "status.code"]
                .contains(&dimension.name.as_str())
            {
                check.error(
                    &format!("{path}.dimensions[{i}].name"),
                    format!("`{}` is always a dimension", dimension.name),
                );
            }
        }
    }

    /// Bucket bounds in the histogram's unit.
    pub fn bounds(&self) -> Result<Vec<f64>, String> {
        let per_second = match self.histogram.unit {
            DurationUnit::Seconds => 1.0,
            DurationUnit::Milliseconds => 1000.0,
        };
        match &self.histogram.explicit {
            None => Ok(DEFAULT_BOUNDS_MS
                .iter()
                .map(|ms| ms / 1000.0 * per_second)
                .collect()),
            Some(explicit) => explicit
                .buckets
                .iter()
                .map(|bound| match bound {
                    Bound::Number(n) => Ok(*n),
                    Bound::Duration(text) => humantime::parse_duration(text)
                        .map(|d| d.as_secs_f64() * per_second)
                        .map_err(|e| format!("`{text}` is not a duration (e.g. `250ms`): {e}")),
                })
                .collect(),
        }
    }
}

/// The dimensions of one series; `None` where a configured dimension has no value and no default.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    service: String,
    /// `service.namespace`, kept on the output resource so Prometheus' `job` (`namespace/name`) is the one the
    /// service's own metrics have.
    namespace: String,
    span_name: String,
    kind: i32,
    status: i32,
    extra: Vec<Option<String>>,
    overflow: bool,
}

/// A series' dimensions as read from a request, borrowed where the request holds them as strings: looking a
/// series up allocates nothing; only a new series copies its key.
#[derive(Debug)]
struct KeyRef<'a> {
    service: &'a str,
    namespace: &'a str,
    span_name: &'a str,
    kind: i32,
    status: i32,
    extra: &'a [Option<Cow<'a, str>>],
}

impl KeyRef<'_> {
    /// The key's hash, given its resource's hasher ([`resource_hasher`] of its service and namespace).
    fn hash(&self, resource: &SeriesHasher) -> u64 {
        span_hash(
            resource,
            self.span_name,
            (self.kind, self.status),
            self.extra.iter().map(|value| value.as_deref()),
        )
    }

    fn matches(&self, key: &Key) -> bool {
        !key.overflow
            && same(&key.service, self.service)
            && same(&key.namespace, self.namespace)
            && same(&key.span_name, self.span_name)
            && key.kind == self.kind
            && key.status == self.status
            && key.extra.len() == self.extra.len()
            && key
                .extra
                .iter()
                .zip(self.extra)
                .all(|(owned, read)| owned.as_deref() == read.as_deref())
    }

    fn to_key(&self) -> Key {
        Key {
            service: self.service.to_string(),
            namespace: self.namespace.to_string(),
            span_name: self.span_name.to_string(),
            kind: self.kind,
            status: self.status,
            extra: self
                .extra
                .iter()
                .map(|value| value.as_deref().map(str::to_string))
                .collect(),
            overflow: false,
        }
    }
}

/// String equality without a call into `memcmp` ([`same_bytes`]): keys are compared for every span.
#[inline]
fn same(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// The series beyond `max_series`.
fn overflow_key() -> Key {
    Key {
        service: String::new(),
        namespace: String::new(),
        span_name: String::new(),
        kind: 0,
        status: 0,
        extra: Vec::new(),
        overflow: true,
    }
}

/// Live series, found by the hash of their borrowed dimensions.
type Series = hashbrown::HashTable<(Key, Aggregate)>;

/// The hashing of a series' resource part (service, namespace): done once per resource, and carried on, cloned,
/// into each of its spans' hashes ([`span_hash`]).
fn resource_hasher(state: &RandomState, service: &str, namespace: &str) -> SeriesHasher {
    let mut hasher = state.build_hasher();
    service.hash(&mut hasher);
    namespace.hash(&mut hasher);
    hasher
}

/// The hash of a series' dimensions from its resource's hasher: the same for its owned [`Key`] and for a
/// borrowed [`KeyRef`].
fn span_hash<'a>(
    resource: &SeriesHasher,
    span_name: &str,
    (kind, status): (i32, i32),
    extra: impl Iterator<Item = Option<&'a str>>,
) -> u64 {
    let mut hasher = resource.clone();
    (span_name, kind, status).hash(&mut hasher);
    for value in extra {
        value.hash(&mut hasher);
    }
    hasher.finish()
}

/// The hash a stored series is kept under (the table asks again when it grows).
fn stored_hash(state: &RandomState, key: &Key) -> u64 {
    match key.overflow {
        true => OVERFLOW_HASH,
        false => span_hash(
            &resource_hasher(state, &key.service, &key.namespace),
            &key.span_name,
            (key.kind, key.status),
            key.extra.iter().map(Option::as_deref),
        ),
    }
}

/// Where the overflow series is kept: any fixed value (one series; a collision only costs a comparison).
const OVERFLOW_HASH: u64 = 0;

/// One span, read from a request and not yet counted.
struct Observation<'b> {
    /// Index into the resources read with it.
    resource: usize,
    span_name: &'b str,
    kind: i32,
    status: i32,
    extra: Vec<Option<Cow<'b, str>>>,
    duration: f64,
    exemplar: Option<SpanExemplar>,
}

/// The identity of a resource: what series are keyed on besides the span, and its part of their hash.
struct ResourceIdentity<'b> {
    service: Cow<'b, str>,
    namespace: Cow<'b, str>,
    hasher: SeriesHasher,
}

struct Aggregate {
    calls: u64,
    buckets: Vec<u64>,
    sum: f64,
    start_unix_nano: u64,
    updated: Instant,
    /// The latest sampled span per bucket (empty when exemplars are off).
    exemplars: Vec<Option<SpanExemplar>>,
}

impl Aggregate {
    fn add(&mut self, bounds: &[f64], duration: f64, exemplar: Option<SpanExemplar>, now: Instant) {
        let bucket = bounds.partition_point(|b| *b < duration);
        self.calls += 1;
        self.sum += duration;
        self.buckets[bucket] += 1;
        self.updated = now;
        if let Some(slot) = self.exemplars.get_mut(bucket)
            && let Some(exemplar) = exemplar
        {
            *slot = Some(exemplar);
        }
    }
}

/// One span's ids, duration and end time: an exemplar to be.
#[derive(Clone, Copy)]
struct SpanExemplar {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    value: f64,
    time_unix_nano: u64,
}

impl SpanExemplar {
    /// The span's exemplar, `None` when its ids are not the 16 and 8 bytes OTLP requires.
    fn of(trace_id: &[u8], span_id: &[u8], end_time_unix_nano: u64, value: f64) -> Option<Self> {
        Some(SpanExemplar {
            trace_id: trace_id.try_into().ok()?,
            span_id: span_id.try_into().ok()?,
            value,
            time_unix_nano: end_time_unix_nano,
        })
    }

    fn to_otlp(self) -> Exemplar {
        Exemplar {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            time_unix_nano: self.time_unix_nano,
            value: Some(exemplar::Value::AsDouble(self.value)),
            ..Default::default()
        }
    }
}

struct Outputs {
    pipelines: Vec<SharedConsumer>,
}

/// The running connector.
pub struct SpanMetrics {
    config: SpanMetricsConfig,
    bounds: Vec<f64>,
    series: Mutex<Series>,
    /// Randomly seeded foldhash: span names come from clients, so colliding keys must not be predictable.
    hasher: RandomState,
    outputs: OnceLock<Outputs>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: Counter,
    overflowed: Counter,
}

impl SpanMetrics {
    /// A connector from its (validated) config.
    pub fn new(config: &SpanMetricsConfig, id: &str, registry: &Registry) -> Self {
        let (stop, _) = watch::channel(false);
        SpanMetrics {
            config: config.clone(),
            bounds: config.bounds().unwrap_or_default(),
            series: Mutex::new(Series::new()),
            hasher: RandomState::default(),
            outputs: OnceLock::new(),
            stop,
            task: Mutex::new(None),
            dropped: registry.counter(
                "vigil_connector_dropped_items_total",
                "Data points a connector produced but could not hand on (the collector was shutting down).",
                &[("connector", id)],
            ),
            overflowed: registry.counter(
                "vigil_connector_overflow_items_total",
                "Spans a connector counted in its overflow series because max_series was reached.",
                &[("connector", id)],
            ),
        }
    }

    /// Adds the spans of one encoded `ExportTraceServiceRequest`, read in place; nothing is counted when it
    /// cannot be read.
    pub fn add(&self, request: &[u8]) -> Result<(), WireError> {
        let mut resources = Vec::new();
        let mut observations = Vec::new();
        self.read(request, &mut resources, &mut observations)?;
        self.count(&resources, &observations);
        Ok(())
    }

    /// Reads what counting the spans of `request` needs, without counting anything yet.
    fn read<'b>(
        &'b self,
        request: &'b [u8],
        resources: &mut Vec<ResourceIdentity<'b>>,
        observations: &mut Vec<Observation<'b>>,
    ) -> Result<(), WireError> {
        let per_second = self.per_second();
        // The entry whose identity was read last: entries without spans are never read.
        let mut current = None;
        for_each_span(
            request,
            |resource: &ResourceFields<'b>, span: SpanFields<'b>| {
                if current != Some(resource.entry) {
                    current = Some(resource.entry);
                    let text = |key| -> Result<Cow<'b, str>, WireError> {
                        Ok(match resource.attributes.get(key)? {
                            Some(value) => attribute_text(value)?,
                            None => Cow::Borrowed(""),
                        })
                    };
                    let (service, namespace) = (text("service.name")?, text("service.namespace")?);
                    resources.push(ResourceIdentity {
                        hasher: resource_hasher(&self.hasher, &service, &namespace),
                        service,
                        namespace,
                    });
                }
                let index = resources.len() - 1;
                let mut extra = Vec::with_capacity(self.config.dimensions.len());
                for dimension in &self.config.dimensions {
                    let value = match span.attributes.get(&dimension.name)? {
                        Some(value) => Some(value),
                        None => resource.attributes.get(&dimension.name)?,
                    };
                    extra.push(match value {
                        Some(value) => Some(attribute_text(value)?),
                        None => dimension.default.as_deref().map(Cow::Borrowed),
                    });
                }
                let duration =
                    span.end_time_unix_nano
                        .saturating_sub(span.start_time_unix_nano) as f64
                        / 1e9
                        * per_second;
                observations.push(Observation {
                    resource: index,
                    span_name: span.name,
                    kind: span.kind,
                    status: span.status_code,
                    extra,
                    duration,
                    exemplar: SpanExemplar::of(
                        span.trace_id,
                        span.span_id,
                        span.end_time_unix_nano,
                        duration,
                    ),
                });
                Ok(())
            },
        )
    }

    fn per_second(&self) -> f64 {
        match self.config.histogram.unit {
            DurationUnit::Seconds => 1.0,
            DurationUnit::Milliseconds => 1000.0,
        }
    }

    /// Counts spans read by [`SpanMetrics::read`].
    fn count(&self, resources: &[ResourceIdentity<'_>], observations: &[Observation<'_>]) {
        let now = Instant::now();
        let now_unix_nano = unix_nano();
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for observation in observations {
            let identity = &resources[observation.resource];
            let key = KeyRef {
                service: &identity.service,
                namespace: &identity.namespace,
                span_name: observation.span_name,
                kind: observation.kind,
                status: observation.status,
                extra: &observation.extra,
            };
            let hash = key.hash(&identity.hasher);
            self.record(
                &mut series,
                &key,
                hash,
                observation.duration,
                observation.exemplar,
                (now, now_unix_nano),
            );
        }
    }

    /// Adds one span to its series (or to the overflow series, when it would be a new series past
    /// `max_series`).
    fn record(
        &self,
        series: &mut Series,
        key: &KeyRef<'_>,
        hash: u64,
        duration: f64,
        exemplar: Option<SpanExemplar>,
        (now, now_unix_nano): (Instant, u64),
    ) {
        if let Some((_, aggregate)) = series.find_mut(hash, |(owned, _)| key.matches(owned)) {
            aggregate.add(&self.bounds, duration, exemplar, now);
            return;
        }
        // A new series: allocated once, here.
        let (hash, key) = if series.len() >= self.config.max_series {
            self.overflowed.add(1);
            if let Some((_, aggregate)) = series.find_mut(OVERFLOW_HASH, |(k, _)| k.overflow) {
                aggregate.add(&self.bounds, duration, exemplar, now);
                return;
            }
            (OVERFLOW_HASH, overflow_key())
        } else {
            (hash, key.to_key())
        };
        let exemplar_slots = match self.config.exemplars.enabled {
            true => self.bounds.len() + 1,
            false => 0,
        };
        let aggregate = Aggregate {
            calls: 0,
            buckets: vec![0; self.bounds.len() + 1],
            sum: 0.0,
            start_unix_nano: now_unix_nano,
            updated: now,
            exemplars: vec![None; exemplar_slots],
        };
        let (_, aggregate) = series
            .insert_unique(hash, (key, aggregate), |(stored, _)| {
                stored_hash(&self.hasher, stored)
            })
            .into_mut();
        aggregate.add(&self.bounds, duration, exemplar, now);
    }

    /// The cumulative totals of live series, one `ResourceMetrics` per service; drops expired series.
    pub fn snapshot(&self) -> Option<(ExportMetricsServiceRequest, u64)> {
        let now = Instant::now();
        let time = unix_nano();
        let expiration = self.config.metrics_expiration;
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if !expiration.is_zero() {
            series.retain(|(_, a)| now.saturating_duration_since(a.updated) < expiration);
        }
        if series.is_empty() {
            return None;
        }
        // By (service.namespace, service.name): one output resource each.
        let mut by_service: HashMap<
            (String, String),
            (Vec<NumberDataPoint>, Vec<HistogramDataPoint>),
        > = HashMap::new();
        for (key, aggregate) in series.iter() {
            let attributes = self.attributes(key);
            let (calls, durations) = by_service
                .entry((key.namespace.clone(), key.service.clone()))
                .or_default();
            let exemplars: Vec<SpanExemplar> =
                aggregate.exemplars.iter().flatten().copied().collect();
            // The calls counter carries the latest span of all, its value the count (OpenMetrics: one per line).
            let latest = exemplars
                .iter()
                .max_by_key(|e| e.time_unix_nano)
                .map(|e| Exemplar {
                    value: Some(exemplar::Value::AsDouble(1.0)),
                    ..e.to_otlp()
                });
            calls.push(NumberDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: aggregate.start_unix_nano,
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsInt(aggregate.calls as i64)),
                exemplars: latest.into_iter().collect(),
                ..Default::default()
            });
            durations.push(HistogramDataPoint {
                attributes,
                start_time_unix_nano: aggregate.start_unix_nano,
                time_unix_nano: time,
                count: aggregate.calls,
                sum: Some(aggregate.sum),
                bucket_counts: aggregate.buckets.clone(),
                explicit_bounds: self.bounds.clone(),
                exemplars: exemplars.into_iter().map(SpanExemplar::to_otlp).collect(),
                ..Default::default()
            });
        }
        let points = 2 * series.len() as u64;
        drop(series);
        let namespace = &self.config.namespace;
        let name = |suffix: &str| {
            if namespace.is_empty() {
                suffix.to_string()
            } else {
                format!("{namespace}.{suffix}")
            }
        };
        let unit = match self.config.histogram.unit {
            DurationUnit::Seconds => "s",
            DurationUnit::Milliseconds => "ms",
        };
        let mut services: Vec<_> = by_service.into_iter().collect();
        services.sort_by(|a, b| a.0.cmp(&b.0));
        let resource_metrics =
            services
                .into_iter()
                .map(
                    |((namespace, service), (calls, durations))| ResourceMetrics {
                        resource: Some(Resource {
                            attributes: [
                                ("service.name", &service),
                                ("service.namespace", &namespace),
                            ]
                            .into_iter()
                            .filter(|(_, value)| !value.is_empty())
                            .map(|(key, value)| string_attribute(key, value))
                            .collect(),
                            ..Default::default()
                        }),
                        scope_metrics: vec![ScopeMetrics {
                            scope: Some(InstrumentationScope {
                                name: "vigil.connector.spanmetrics".into(),
                                version: env!("CARGO_PKG_VERSION").into(),
                                ..Default::default()
                            }),
                            metrics: vec![
                        Metric {
                            name: name("calls"),
                            description:
                                "Spans ended, by service, span name, kind and status code.".into(),
                            unit: "{call}".into(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: calls,
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: name("duration"),
                            description:
                                "Span durations, by service, span name, kind and status code."
                                    .into(),
                            unit: unit.into(),
                            data: Some(metric::Data::Histogram(Histogram {
                                data_points: durations,
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            })),
                            ..Default::default()
                        },
                    ],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )
                .collect();
        Some((ExportMetricsServiceRequest { resource_metrics }, points))
    }

    fn attributes(&self, key: &Key) -> Vec<KeyValue> {
        if key.overflow {
            return vec![KeyValue {
                key: "otel.metric.overflow".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::BoolValue(true)),
                }),
                ..Default::default()
            }];
        }
        let mut attributes = vec![
            string_attribute("service.name", &key.service),
            string_attribute("span.name", &key.span_name),
            string_attribute("span.kind", kind_name(key.kind)),
            string_attribute("status.code", status_name(key.status)),
        ];
        for (dimension, value) in self.config.dimensions.iter().zip(&key.extra) {
            if let Some(value) = value {
                attributes.push(string_attribute(&dimension.name, value));
            }
        }
        attributes
    }

    /// Sends the current totals to every output pipeline, waiting for room.
    async fn flush(&self) {
        let Some(outputs) = self.outputs.get() else {
            return;
        };
        let Some((request, points)) = self.snapshot() else {
            return;
        };
        let batch = Batch::new(
            Signal::Metrics,
            Bytes::from(request.encode_to_vec()),
            points,
        );
        for output in &outputs.pipelines {
            if output.consume(batch.clone()).await.is_err() {
                self.dropped.add(points);
                tracing::warn!(
                    points,
                    "spanmetrics: a metrics pipeline is shut down; these totals were not handed on"
                );
            }
        }
    }
}

impl Connector for SpanMetrics {
    fn consume<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, Result<Exported, ExportError>> {
        Box::pin(async move {
            // Each request of the batch is read whole, then counted: a request that cannot be read is
            // dropped on its own (counted as undecodable) and never counted in part. Counting a request
            // right after reading it keeps what was read in cache.
            let mut outcome = Exported::default();
            let mut resources = Vec::new();
            let mut observations = Vec::new();
            for chunk in &batch.chunks {
                resources.clear();
                observations.clear();
                match self.read(&chunk.bytes, &mut resources, &mut observations) {
                    Ok(()) => self.count(&resources, &observations),
                    Err(e) => {
                        outcome.undecodable += chunk.items;
                        outcome.message = format!("a request does not read as OTLP traces: {e}");
                    }
                }
            }
            Ok(outcome)
        })
    }

    fn start(self: Arc<Self>, outputs: Vec<SharedConsumer>) {
        if self.outputs.set(Outputs { pipelines: outputs }).is_err() {
            return;
        }
        let mut stopped = self.stop.subscribe();
        let connector = self.clone();
        let task = tokio::spawn(async move {
            let period = connector.config.metrics_flush_interval;
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = crate::pipeline::raised(&mut stopped) => return,
                    _ = ticks.tick() => connector.flush().await,
                }
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(task) = task {
                let _ = task.await;
            }
            self.flush().await;
        })
    }
}

fn unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The text of an attribute value as a label value (see [`value_text`]), borrowed when it is a string.
fn attribute_text(value: AttributeValue<'_>) -> Result<Cow<'_, str>, WireError> {
    value.text_with(|value| value_text(Some(value)))
}

/// otelcol's spelling of span kinds (`SPAN_KIND_SERVER`…).
fn kind_name(kind: i32) -> &'static str {
    span::SpanKind::try_from(kind)
        .map(|k| k.as_str_name())
        .unwrap_or("SPAN_KIND_UNSPECIFIED")
}

/// otelcol's spelling of status codes (`STATUS_CODE_ERROR`…).
fn status_name(code: i32) -> &'static str {
    status::StatusCode::try_from(code)
        .map(|c| c.as_str_name())
        .unwrap_or("STATUS_CODE_UNSET")
}
