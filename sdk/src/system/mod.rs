//! System, process and GPU metrics, collected on a thread of their own and exported through the SDK's
//! OpenTelemetry metrics, named by the OpenTelemetry semantic conventions.
//!
//! Host (`system.*`): CPU utilisation (total and per core), load average, memory and swap usage and
//! utilisation, file-system usage and utilisation per mount (pseudo file systems left out), disk I/O, network
//! I/O and errors per interface. Process (`process.*`): CPU utilisation, resident and virtual memory, threads,
//! open file descriptors, disk I/O, uptime. GPU (`hw.gpu.*`, through NVML, loaded at run time): utilisation of
//! the compute engine and of the memory controller, memory used/free/total, temperature, power draw and limit,
//! clocks, and this process's GPU memory. Without an NVIDIA driver the collector says "no GPU" once, at INFO,
//! and reports nothing for GPUs.
//!
//! ```no_run
//! let _guard = vigil::Builder::new("trainer")
//!     .system_metrics(vigil::system::SystemMetricsConfig {
//!         interval: std::time::Duration::from_secs(10),
//!         ..Default::default()
//!     })
//!     .try_init()
//!     .expect("telemetry");
//! ```

mod gpu;
mod host;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

/// How system metrics are collected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemMetricsConfig {
    /// Time between two collections (default 10 s).
    pub interval: Duration,
    /// Collect GPU metrics through NVML when a driver is present (default on).
    pub gpu: bool,
}

impl Default for SystemMetricsConfig {
    fn default() -> Self {
        SystemMetricsConfig {
            interval: Duration::from_secs(10),
            gpu: true,
        }
    }
}

/// How a metric is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value now (utilisation, usage).
    Gauge,
    /// A monotonic total since start (bytes read, packets received).
    Counter,
}

/// One measured value of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The metric's name (`system.memory.usage`).
    pub name: &'static str,
    /// The value, in the metric's unit.
    pub value: f64,
    /// The data point's attributes.
    pub attributes: Vec<KeyValue>,
}

/// The OpenTelemetry unit of `name`, a metric this module reports (`"By"` for `system.memory.usage`); `None`
/// for any other name. What the collector's Prometheus names are derived from (`system_memory_usage_bytes`).
pub fn unit_of(name: &str) -> Option<&'static str> {
    DEFINITIONS.iter().find(|d| d.name == name).map(|d| d.unit)
}

/// A metric's definition.
struct Definition {
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    kind: Kind,
}

macro_rules! definitions {
    ($(($name:expr, $unit:expr, $kind:ident, $description:expr)),* $(,)?) => {
        &[$(Definition { name: $name, unit: $unit, kind: Kind::$kind, description: $description }),*]
    };
}

/// Every metric this module can report.
static DEFINITIONS: &[Definition] = definitions![
    (
        "system.cpu.utilization",
        "1",
        Gauge,
        "CPU busy fraction, total and per logical CPU (cpu.logical_number)"
    ),
    ("system.cpu.logical.count", "{cpu}", Gauge, "Logical CPUs"),
    (
        "system.cpu.load_average.1m",
        "{thread}",
        Gauge,
        "Load average over 1 minute"
    ),
    (
        "system.cpu.load_average.5m",
        "{thread}",
        Gauge,
        "Load average over 5 minutes"
    ),
    (
        "system.cpu.load_average.15m",
        "{thread}",
        Gauge,
        "Load average over 15 minutes"
    ),
    (
        "system.memory.usage",
        "By",
        Gauge,
        "Memory in use and free (system.memory.state)"
    ),
    ("system.memory.limit", "By", Gauge, "Total memory"),
    (
        "system.memory.utilization",
        "1",
        Gauge,
        "Fraction of memory in use"
    ),
    (
        "system.paging.usage",
        "By",
        Gauge,
        "Swap in use and free (system.paging.state)"
    ),
    (
        "system.paging.utilization",
        "1",
        Gauge,
        "Fraction of swap in use"
    ),
    (
        "system.filesystem.usage",
        "By",
        Gauge,
        "File-system space used and free, per mount"
    ),
    (
        "system.filesystem.limit",
        "By",
        Gauge,
        "File-system size, per mount"
    ),
    (
        "system.filesystem.utilization",
        "1",
        Gauge,
        "Fraction of a file system in use, per mount"
    ),
    (
        "system.disk.io",
        "By",
        Counter,
        "Bytes read and written, per disk (disk.io.direction)"
    ),
    (
        "system.network.io",
        "By",
        Counter,
        "Bytes received and sent, per interface (network.io.direction)"
    ),
    (
        "system.network.errors",
        "{error}",
        Counter,
        "Receive and transmit errors, per interface"
    ),
    (
        "process.cpu.utilization",
        "1",
        Gauge,
        "This process's CPU use as a fraction of all CPUs"
    ),
    (
        "process.memory.usage",
        "By",
        Gauge,
        "This process's resident memory"
    ),
    (
        "process.memory.virtual",
        "By",
        Gauge,
        "This process's virtual memory"
    ),
    (
        "process.thread.count",
        "{thread}",
        Gauge,
        "This process's threads"
    ),
    (
        "process.unix.file_descriptor.count",
        "{file_descriptor}",
        Gauge,
        "This process's open file descriptors"
    ),
    (
        "process.disk.io",
        "By",
        Counter,
        "Bytes this process read and wrote (disk.io.direction)"
    ),
    (
        "process.uptime",
        "s",
        Gauge,
        "Seconds since this process started"
    ),
    (
        "hw.gpu.utilization",
        "1",
        Gauge,
        "GPU busy fraction (hw.gpu.task: general = kernels, memory = memory controller)"
    ),
    (
        "hw.gpu.memory.usage",
        "By",
        Gauge,
        "GPU memory used and free (hw.gpu.memory.state)"
    ),
    ("hw.gpu.memory.limit", "By", Gauge, "GPU memory in total"),
    ("hw.gpu.temperature", "Cel", Gauge, "GPU die temperature"),
    ("hw.gpu.power", "W", Gauge, "GPU power draw"),
    ("hw.gpu.power.limit", "W", Gauge, "GPU enforced power limit"),
    (
        "hw.gpu.clock",
        "MHz",
        Gauge,
        "GPU clock (hw.gpu.clock.type: graphics, sm, memory)"
    ),
    (
        "process.gpu.memory.usage",
        "By",
        Gauge,
        "GPU memory this process uses, per GPU"
    ),
];

/// Takes one snapshot of everything: the host and process through `sysinfo`, GPUs through NVML.
pub struct Collector {
    host: host::Host,
    gpu: Option<gpu::Gpus>,
}

impl Collector {
    /// A collector; with `gpu`, NVML is loaded (at run time — "no GPU" is logged once at INFO when it is
    /// missing or sees no device).
    pub fn new(gpu: bool) -> Self {
        Collector {
            host: host::Host::new(),
            gpu: if gpu { gpu::Gpus::load() } else { None },
        }
    }

    /// GPUs found (0 without a driver).
    pub fn gpu_count(&self) -> usize {
        self.gpu.as_ref().map_or(0, gpu::Gpus::count)
    }

    /// One collection cycle.
    pub fn collect(&mut self) -> Vec<Reading> {
        let mut readings = Vec::with_capacity(128);
        self.host.collect(&mut readings);
        if let Some(gpus) = &self.gpu {
            gpus.collect(&mut readings);
        }
        readings
    }
}

/// Collection running on its own thread; stops when dropped.
pub struct SystemMetrics {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _instruments: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for SystemMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemMetrics").finish_non_exhaustive()
    }
}

impl SystemMetrics {
    /// Collects once now, then every `config.interval` on a thread named `vigil-system`, and registers an
    /// observable instrument per metric on `meter` that reports the latest snapshot.
    pub fn start(meter: &Meter, config: SystemMetricsConfig) -> std::io::Result<SystemMetrics> {
        let mut collector = Collector::new(config.gpu);
        let latest = Arc::new(Mutex::new(collector.collect()));
        let instruments = register(meter, &latest);
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = latest.clone();
        let thread = std::thread::Builder::new()
            .name("vigil-system".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(config.interval) {
                        Err(RecvTimeoutError::Timeout) => {
                            let readings = collector.collect();
                            *shared.lock().unwrap_or_else(|p| p.into_inner()) = readings;
                        }
                        // Stopped, or the handle is gone.
                        _ => return,
                    }
                }
            })?;
        Ok(SystemMetrics {
            stop: Some(stop),
            thread: Some(thread),
            _instruments: instruments,
        })
    }
}

impl Drop for SystemMetrics {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One observable instrument per definition, each reporting its readings from `latest`.
fn register(
    meter: &Meter,
    latest: &Arc<Mutex<Vec<Reading>>>,
) -> Vec<Box<dyn std::any::Any + Send + Sync>> {
    let mut instruments: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
    for definition in DEFINITIONS {
        let latest = latest.clone();
        let name = definition.name;
        let readings = move |report: &mut dyn FnMut(f64, &[KeyValue])| {
            let readings = latest.lock().unwrap_or_else(|p| p.into_inner());
            for reading in readings.iter().filter(|r| r.name == name) {
                report(reading.value, &reading.attributes);
            }
        };
        match definition.kind {
            Kind::Gauge => instruments.push(Box::new(
                meter
                    .f64_observable_gauge(name)
                    .with_unit(definition.unit)
                    .with_description(definition.description)
                    .with_callback(move |observer| readings(&mut |v, a| observer.observe(v, a)))
                    .build(),
            )),
            Kind::Counter => instruments.push(Box::new(
                meter
                    .f64_observable_counter(name)
                    .with_unit(definition.unit)
                    .with_description(definition.description)
                    .with_callback(move |observer| readings(&mut |v, a| observer.observe(v, a)))
                    .build(),
            )),
        }
    }
    instruments
}

/// The definition of metric `name`, for tests and documentation.
pub fn kind_of(name: &str) -> Option<Kind> {
    DEFINITIONS.iter().find(|d| d.name == name).map(|d| d.kind)
}

#[cfg(test)]
mod tests;
