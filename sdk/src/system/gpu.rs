//! GPU readings through NVML, loaded at run time: no NVIDIA driver means no GPU metrics, not a failure.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use opentelemetry::KeyValue;

use super::Reading;

/// The NVML library and the devices it found.
pub(super) struct Gpus {
    nvml: Nvml,
    count: u32,
    pid: u32,
}

impl Gpus {
    /// Loads NVML; `None` (after one INFO line saying why) when there is no driver or no device.
    pub(super) fn load() -> Option<Gpus> {
        match Nvml::init() {
            Ok(nvml) => match nvml.device_count() {
                Ok(count) if count > 0 => {
                    tracing::info!(devices = count, "GPU metrics through NVML");
                    Some(Gpus {
                        nvml,
                        count,
                        pid: std::process::id(),
                    })
                }
                Ok(_) => {
                    tracing::info!("no GPU: NVML found no device; GPU metrics are off");
                    None
                }
                Err(e) => {
                    tracing::info!(reason = %e, "no GPU: NVML cannot count devices; GPU metrics are off");
                    None
                }
            },
            Err(e) => {
                tracing::info!(reason = %e, "no GPU: the NVIDIA driver's NVML library is not available; GPU metrics are off");
                None
            }
        }
    }

    pub(super) fn count(&self) -> usize {
        self.count as usize
    }

    /// Every reading NVML gives for every device; a value a device does not support is left out.
    pub(super) fn collect(&self, out: &mut Vec<Reading>) {
        for index in 0..self.count {
            let Ok(device) = self.nvml.device_by_index(index) else {
                continue;
            };
            let mut base = vec![KeyValue::new("gpu.index", i64::from(index))];
            if let Ok(uuid) = device.uuid() {
                base.push(KeyValue::new("hw.id", uuid));
            }
            if let Ok(name) = device.name() {
                base.push(KeyValue::new("hw.name", name));
            }
            let with = |extra: Option<KeyValue>| {
                let mut attributes = base.clone();
                attributes.extend(extra);
                attributes
            };
            let mut push = |name: &'static str, value: f64, extra: Option<KeyValue>| {
                out.push(Reading {
                    name,
                    value,
                    attributes: with(extra),
                });
            };
            if let Ok(rates) = device.utilization_rates() {
                push(
                    "hw.gpu.utilization",
                    f64::from(rates.gpu) / 100.0,
                    Some(KeyValue::new("hw.gpu.task", "general")),
                );
                push(
                    "hw.gpu.utilization",
                    f64::from(rates.memory) / 100.0,
                    Some(KeyValue::new("hw.gpu.task", "memory")),
                );
            }
            if let Ok(memory) = device.memory_info() {
                push(
                    "hw.gpu.memory.usage",
                    memory.used as f64,
                    Some(KeyValue::new("hw.gpu.memory.state", "used")),
                );
                push(
                    "hw.gpu.memory.usage",
                    memory.free as f64,
                    Some(KeyValue::new("hw.gpu.memory.state", "free")),
                );
                push("hw.gpu.memory.limit", memory.total as f64, None);
            }
            if let Ok(celsius) = device.temperature(TemperatureSensor::Gpu) {
                push("hw.gpu.temperature", f64::from(celsius), None);
            }
            if let Ok(milliwatts) = device.power_usage() {
                push("hw.gpu.power", f64::from(milliwatts) / 1000.0, None);
            }
            if let Ok(milliwatts) = device.enforced_power_limit() {
                push("hw.gpu.power.limit", f64::from(milliwatts) / 1000.0, None);
            }
            for (clock, label) in [
                (Clock::Graphics, "graphics"),
                (Clock::SM, "sm"),
                (Clock::Memory, "memory"),
            ] {
                if let Ok(mhz) = device.clock_info(clock) {
                    push(
                        "hw.gpu.clock",
                        f64::from(mhz),
                        Some(KeyValue::new("hw.gpu.clock.type", label)),
                    );
                }
            }
            if let Ok(processes) = device.running_compute_processes() {
                let mine: u64 = processes
                    .iter()
                    .filter(|p| p.pid == self.pid)
                    .map(|p| match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => bytes,
                        UsedGpuMemory::Unavailable => 0,
                    })
                    .sum();
                push("process.gpu.memory.usage", mine as f64, None);
            }
        }
    }
}
