//! One-line metrics over the OpenTelemetry meter provider that [`crate::init`] installs (exported over OTLP).
//!
//! ```no_run
//! use vigil::metrics;
//! metrics::increment("training.epochs", 1, &[("model_type", "lightgbm")]);
//! metrics::record("training.loss", 0.234, &[("model_type", "lightgbm")]);
//! metrics::gauge("queue.depth", 17.0, &[]);
//! metrics::add("jobs.running", 1, &[]);
//! ```
//!
//! Instruments are created on first use and cached by name, so a call costs a map lookup plus the OpenTelemetry
//! recording; for the hottest paths, keep the instrument from [`counter`] or [`histogram`] yourself.

pub mod app;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

/// The instrumentation scope of instruments created here.
pub const SCOPE: &str = "vigil";

#[derive(Default)]
struct Instruments {
    counters: HashMap<String, Counter<u64>>,
    up_down: HashMap<String, UpDownCounter<i64>>,
    histograms: HashMap<String, Histogram<f64>>,
    gauges: HashMap<String, Gauge<f64>>,
    durations: HashMap<String, Histogram<f64>>,
}

/// Bucket bounds for durations in seconds: 5 ms to 10 min.
const DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The view the SDK's meter provider applies: histograms of the one-line helpers ([`record`], [`histogram`])
/// get base-2 exponential buckets, which fit any range of values (a loss of 0.234 and a size of 5 GB alike)
/// without anyone choosing bounds; the duration helpers keep their explicit buckets in seconds. The collector
/// turns exponential histograms into classic `_bucket` series for Prometheus.
#[cfg(feature = "otlp")]
pub(crate) fn one_liner_view(
    instrument: &opentelemetry_sdk::metrics::Instrument,
) -> Option<opentelemetry_sdk::metrics::Stream> {
    use opentelemetry_sdk::metrics::{Aggregation, InstrumentKind, Stream};
    let ours = instrument.scope().name() == SCOPE;
    if !ours || instrument.kind() != InstrumentKind::Histogram || instrument.unit() == "s" {
        return None;
    }
    Stream::builder()
        .with_aggregation(Aggregation::Base2ExponentialHistogram {
            max_size: 160,
            max_scale: 20,
            record_min_max: true,
        })
        .build()
        .ok()
}

fn instruments() -> &'static Mutex<Instruments> {
    static INSTRUMENTS: OnceLock<Mutex<Instruments>> = OnceLock::new();
    INSTRUMENTS.get_or_init(Default::default)
}

fn meter() -> Meter {
    opentelemetry::global::meter(SCOPE)
}

/// The masker of the installed telemetry ([`crate::Builder::try_init`]): attribute values given to these
/// helpers are masked like log fields before they reach an instrument.
fn masker() -> &'static std::sync::RwLock<Option<crate::mask::Masker>> {
    static MASKER: std::sync::OnceLock<std::sync::RwLock<Option<crate::mask::Masker>>> =
        std::sync::OnceLock::new();
    MASKER.get_or_init(Default::default)
}

/// Installs (or removes) the masker the helpers apply.
pub(crate) fn set_masker(new: Option<crate::mask::Masker>) {
    *masker().write().unwrap_or_else(|p| p.into_inner()) = new;
}

fn attributes(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    let masker = masker().read().unwrap_or_else(|p| p.into_inner());
    pairs
        .iter()
        .filter_map(|(k, v)| {
            let value = match masker.as_ref().map(|m| m.attribute(k, v)) {
                None => v.to_string(),
                Some(crate::mask::Masked::Keep(value)) => value.into_owned(),
                Some(crate::mask::Masked::Drop) => return None,
            };
            Some(KeyValue::new(k.to_string(), value))
        })
        .collect()
}

fn cached<T: Clone>(map: &mut HashMap<String, T>, name: &str, make: impl FnOnce() -> T) -> T {
    if let Some(instrument) = map.get(name) {
        return instrument.clone();
    }
    let instrument = make();
    map.insert(name.to_string(), instrument.clone());
    instrument
}

/// The monotonic counter `name` (created once, then cached).
pub fn counter(name: &str) -> Counter<u64> {
    let mut all = instruments().lock().unwrap_or_else(|p| p.into_inner());
    cached(&mut all.counters, name, || {
        meter().u64_counter(name.to_string()).build()
    })
}

/// The histogram `name` (created once, then cached).
pub fn histogram(name: &str) -> Histogram<f64> {
    let mut all = instruments().lock().unwrap_or_else(|p| p.into_inner());
    cached(&mut all.histograms, name, || {
        meter().f64_histogram(name.to_string()).build()
    })
}

/// Adds `value` to the counter `name`.
pub fn increment(name: &str, value: u64, attrs: &[(&str, &str)]) {
    counter(name).add(value, &attributes(attrs));
}

/// Adds `delta` (which may be negative) to the up-down counter `name` (things in progress, queue lengths).
pub fn add(name: &str, delta: i64, attrs: &[(&str, &str)]) {
    let instrument = {
        let mut all = instruments().lock().unwrap_or_else(|p| p.into_inner());
        cached(&mut all.up_down, name, || {
            meter().i64_up_down_counter(name.to_string()).build()
        })
    };
    instrument.add(delta, &attributes(attrs));
}

/// Records `value` into the histogram `name` (durations, losses, sizes).
pub fn record(name: &str, value: f64, attrs: &[(&str, &str)]) {
    histogram(name).record(value, &attributes(attrs));
}

/// Records a duration into the histogram `name`, in seconds (unit `s`, so Prometheus shows
/// `<name>_seconds`), with buckets from 5 ms to 10 min.
pub fn record_seconds(name: &str, duration: std::time::Duration, attrs: &[(&str, &str)]) {
    let instrument = {
        let mut all = instruments().lock().unwrap_or_else(|p| p.into_inner());
        cached(&mut all.durations, name, || {
            meter()
                .f64_histogram(name.to_string())
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        })
    };
    instrument.record(duration.as_secs_f64(), &attributes(attrs));
}

/// Sets the gauge `name` to `value`.
pub fn gauge(name: &str, value: f64, attrs: &[(&str, &str)]) {
    let instrument = {
        let mut all = instruments().lock().unwrap_or_else(|p| p.into_inner());
        cached(&mut all.gauges, name, || {
            meter().f64_gauge(name.to_string()).build()
        })
    };
    instrument.record(value, &attributes(attrs));
}

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    #[test]
    fn one_line_helpers_reach_the_global_provider() {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        super::increment("test.epochs", 2, &[("model", "m")]);
        super::increment("test.epochs", 3, &[("model", "m")]);
        super::record("test.loss", 0.5, &[]);
        super::gauge("test.depth", 7.0, &[]);
        super::add("test.running", -1, &[]);
        provider.force_flush().unwrap();
        let exported = exporter.get_finished_metrics().unwrap();
        let names: Vec<String> = exported
            .iter()
            .flat_map(|rm| rm.scope_metrics())
            .flat_map(|sm| sm.metrics())
            .map(|m| m.name().to_string())
            .collect();
        for name in ["test.epochs", "test.loss", "test.depth", "test.running"] {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from {names:?}"
            );
        }
    }

    #[test]
    fn helper_attributes_are_masked_once_telemetry_is_installed() {
        let text = |pairs: &[(&str, &str)]| -> Vec<String> {
            super::attributes(pairs)
                .into_iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect()
        };
        let masked = {
            super::set_masker(Some(
                crate::mask::Masker::new(&crate::mask::MaskConfig::default()).unwrap(),
            ));
            let masked = text(&[
                ("customer", "jane.doe@example.com"),
                ("route", "/orders"),
                ("session", "abc123"),
            ]);
            super::set_masker(None);
            masked
        };
        assert_eq!(
            masked,
            [
                "customer=[REDACTED:email]",
                "route=/orders",
                "session=[REDACTED:sensitive_key]"
            ]
        );
        assert_eq!(text(&[("customer", "x@y.io")]), ["customer=x@y.io"]);
    }
}

#[cfg(test)]
mod view_tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    /// `record("training.loss", 0.234, ..)` used to land in the default 0, 5, 10 … 10000 buckets, all in one.
    #[test]
    fn one_liner_histograms_are_exponential_and_durations_keep_seconds_buckets() {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .with_view(super::one_liner_view)
            .build();
        let meter = provider.meter(super::SCOPE);
        let loss = meter.f64_histogram("training.loss").build();
        for value in [0.234, 0.19, 0.151] {
            loss.record(value, &[]);
        }
        meter
            .f64_histogram("step.duration")
            .with_unit("s")
            .with_boundaries(vec![0.1, 1.0])
            .build()
            .record(0.5, &[]);
        provider.force_flush().unwrap();
        let exported = exporter.get_finished_metrics().unwrap();
        let metrics: Vec<_> = exported
            .iter()
            .flat_map(|rm| rm.scope_metrics())
            .flat_map(|sm| sm.metrics())
            .collect();
        let kind = |name: &str| {
            let metric = metrics.iter().find(|m| m.name() == name).unwrap();
            match metric.data() {
                AggregatedMetrics::F64(MetricData::ExponentialHistogram(_)) => "exponential",
                AggregatedMetrics::F64(MetricData::Histogram(_)) => "explicit",
                _ => "other",
            }
        };
        assert_eq!(kind("training.loss"), "exponential");
        assert_eq!(kind("step.duration"), "explicit");
    }
}
