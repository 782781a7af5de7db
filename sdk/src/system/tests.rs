use std::collections::HashSet;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

use super::*;

fn attribute<'a>(reading: &'a Reading, key: &str) -> Option<&'a opentelemetry::Value> {
    reading
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[test]
fn one_cycle_reports_host_process_and_gpu_or_no_gpu() {
    let mut collector = Collector::new(true);
    let readings = collector.collect();
    let named = |name: &'static str| readings.iter().filter(move |r| r.name == name);
    for reading in &readings {
        assert!(
            kind_of(reading.name).is_some(),
            "{} is not defined",
            reading.name
        );
        assert!(reading.value.is_finite(), "{reading:?}");
        if reading.name.ends_with(".utilization") {
            assert!((0.0..=1.0).contains(&reading.value), "{reading:?}");
        }
    }
    let cpus = named("system.cpu.logical.count")
        .next()
        .expect("cpu count")
        .value;
    assert!(cpus >= 1.0);
    let per_core = named("system.cpu.utilization")
        .filter(|r| attribute(r, "cpu.logical_number").is_some())
        .count();
    assert_eq!(per_core as f64, cpus, "one utilisation per logical CPU");
    assert!(named("system.memory.limit").next().expect("memory").value > 0.0);
    let mounts: HashSet<String> = named("system.filesystem.limit")
        .filter_map(|r| {
            attribute(r, "system.filesystem.mountpoint").map(|v| v.as_str().into_owned())
        })
        .collect();
    assert!(!mounts.is_empty(), "at least one real file system");
    let types: HashSet<String> = named("system.filesystem.limit")
        .filter_map(|r| attribute(r, "system.filesystem.type").map(|v| v.as_str().into_owned()))
        .collect();
    assert!(
        !types
            .iter()
            .any(|t| ["proc", "sysfs", "tmpfs", "cgroup2"].contains(&t.as_str())),
        "pseudo file systems are left out: {types:?}"
    );
    assert!(named("process.memory.usage").next().expect("rss").value > 1_000_000.0);
    assert!(named("process.thread.count").next().expect("threads").value >= 1.0);
    assert!(
        named("process.unix.file_descriptor.count")
            .next()
            .expect("fds")
            .value
            >= 3.0
    );
    assert!(
        named("system.network.io").count() >= 2,
        "at least loopback, both directions"
    );
    let gpu_readings = readings
        .iter()
        .filter(|r| r.name.starts_with("hw.gpu"))
        .count();
    if collector.gpu_count() == 0 {
        assert_eq!(gpu_readings, 0, "no GPU, no GPU metrics");
    } else {
        let limits: Vec<&Reading> = named("hw.gpu.memory.limit").collect();
        assert_eq!(
            limits.len(),
            collector.gpu_count(),
            "one memory limit per GPU"
        );
        assert!(
            limits
                .iter()
                .all(|r| r.value > 0.0 && attribute(r, "hw.id").is_some())
        );
        assert!(named("hw.gpu.utilization").count() >= 2 * collector.gpu_count());
        println!(
            "GPU readings: {:#?}",
            readings
                .iter()
                .filter(|r| r.name.contains("gpu"))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_thread_exports_through_the_meter_and_stops_on_drop() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let metrics = SystemMetrics::start(
        &provider.meter("vigil.system"),
        SystemMetricsConfig {
            interval: Duration::from_millis(20),
            gpu: false,
        },
    )
    .unwrap();
    provider.force_flush().unwrap();
    let names: HashSet<String> = exporter
        .get_finished_metrics()
        .unwrap()
        .iter()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .map(|m| m.name().to_string())
        .collect();
    for expected in [
        "system.cpu.utilization",
        "system.memory.usage",
        "system.filesystem.utilization",
        "system.network.io",
        "process.memory.usage",
        "process.cpu.utilization",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    let started = std::time::Instant::now();
    drop(metrics);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the thread stops promptly"
    );
}
