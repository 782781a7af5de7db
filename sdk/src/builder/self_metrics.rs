//! The SDK's own instruments, so a dashboard or an alert sees what the SDK did with the program's telemetry:
//! log lines dropped by the writer, values masked, log records sampled out, exports that failed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _, ObservableCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::log::sampling::LogSampler;
use crate::log::writer::AsyncWriter;
use crate::mask::Masker;

/// The registered instruments; they are observed at each export while this is alive.
#[derive(Default)]
pub(crate) struct SelfMetrics {
    /// Held, not read: an instrument stops being observed when dropped.
    _instruments: Vec<ObservableCounter<u64>>,
}

impl SelfMetrics {
    /// Registers the instruments that apply (none without a meter provider).
    pub(crate) fn register(
        provider: Option<&SdkMeterProvider>,
        writers: &[Arc<AsyncWriter>],
        masker: Option<&Masker>,
        sampler: Option<&LogSampler>,
    ) -> Self {
        let Some(provider) = provider else {
            return SelfMetrics::default();
        };
        let meter = provider.meter("vigil");
        let mut instruments = Vec::new();
        if !writers.is_empty() {
            instruments.push(dropped_records(&meter, writers.to_vec()));
        }
        if let Some(masker) = masker {
            instruments.push(replacements(&meter, masker.clone()));
        }
        if let Some(sampler) = sampler {
            let suppressed = sampler.suppressed();
            instruments.push(
                meter
                    .u64_observable_counter("vigil.log.sampled_out_records")
                    .with_description("Log records left out by log sampling")
                    .with_callback(move |observer| {
                        observer.observe(suppressed.load(Ordering::Relaxed), &[]);
                    })
                    .build(),
            );
        }
        SelfMetrics {
            _instruments: instruments,
        }
    }

    /// Export failures by signal, for every report.
    #[cfg(feature = "otlp")]
    pub(crate) fn add_export_failures(
        &mut self,
        provider: Option<&SdkMeterProvider>,
        reports: &[Arc<crate::export::ExportReport>],
    ) {
        let Some(provider) = provider.filter(|_| !reports.is_empty()) else {
            return;
        };
        let reports = reports.to_vec();
        self._instruments.push(
            provider
                .meter("vigil")
                .u64_observable_counter("vigil.export.failures")
                .with_description(
                    "OTLP exports that failed, by signal: their data did not reach the collector",
                )
                .with_callback(move |observer| {
                    for report in &reports {
                        observer
                            .observe(report.failed(), &[KeyValue::new("signal", report.signal())]);
                    }
                })
                .build(),
        );
    }
}

/// Log lines dropped because a writer could not keep up.
fn dropped_records(meter: &Meter, writers: Vec<Arc<AsyncWriter>>) -> ObservableCounter<u64> {
    meter
        .u64_observable_counter("vigil.log.dropped_records")
        .with_description("Log records dropped because the log writer could not keep up")
        .with_callback(move |observer| {
            observer.observe(writers.iter().map(|w| w.dropped()).sum(), &[]);
        })
        .build()
}

/// Replacements per detector or rule, so users see what masking catches (and that it runs).
fn replacements(meter: &Meter, masker: Masker) -> ObservableCounter<u64> {
    meter
        .u64_observable_counter("vigil.mask.replacements")
        .with_description("Values masked before leaving the process, by detector or rule")
        .with_callback(move |observer| {
            for (detector, count) in masker.replacements() {
                observer.observe(count, &[KeyValue::new("detector", detector.to_string())]);
            }
        })
        .build()
}
