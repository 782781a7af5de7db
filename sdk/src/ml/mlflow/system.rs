//! System metrics under the names MLflow's own system-metrics monitor uses (`system/cpu_utilization_percentage`,
//! `system/gpu_0_utilization_percentage`, …), so the run's "System metrics" view shows them.

use opentelemetry::Value;

use crate::system::Reading;

/// Which GPUs are reported: those `CUDA_VISIBLE_DEVICES` names (by index or UUID), all when it is unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VisibleGpus(Option<Vec<String>>);

impl VisibleGpus {
    /// From the value of `CUDA_VISIBLE_DEVICES`, when set.
    pub fn from_env_value(value: Option<&str>) -> Self {
        VisibleGpus(value.map(|v| {
            v.split(',')
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect()
        }))
    }

    fn contains(&self, index: i64, uuid: Option<&str>) -> bool {
        match &self.0 {
            None => true,
            Some(list) => list.iter().any(|d| {
                d.parse::<i64>().is_ok_and(|i| i == index)
                    || uuid.is_some_and(|u| !d.is_empty() && u.starts_with(d.as_str()))
            }),
        }
    }
}

fn attribute<'a>(reading: &'a Reading, key: &str) -> Option<&'a Value> {
    reading
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn text<'a>(reading: &'a Reading, key: &str) -> Option<&'a str> {
    match attribute(reading, key)? {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    }
}

fn integer(reading: &Reading, key: &str) -> Option<i64> {
    match attribute(reading, key)? {
        Value::I64(i) => Some(*i),
        _ => None,
    }
}

/// Turns readings into MLflow's system metrics; network totals are counted from the first call.
#[derive(Debug, Default)]
pub struct SystemMetricNames {
    visible: VisibleGpus,
    network_start: Option<(f64, f64)>,
}

impl SystemMetricNames {
    /// Reports only `visible` GPUs.
    pub fn new(visible: VisibleGpus) -> Self {
        SystemMetricNames {
            visible,
            network_start: None,
        }
    }

    /// MLflow's `(name, value)` pairs for one collection (a value whose reading is missing is left out).
    pub fn convert(&mut self, readings: &[Reading]) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        let mut memory_used = None;
        let mut memory_limit = None;
        let (mut received, mut sent) = (0.0, 0.0);
        let mut network = false;
        let mut gpus: std::collections::BTreeMap<i64, GpuValues> = Default::default();
        for reading in readings {
            let state = text(reading, "system.memory.state")
                .or_else(|| text(reading, "system.filesystem.state"))
                .or_else(|| text(reading, "hw.gpu.memory.state"));
            match reading.name {
                "system.cpu.utilization" if attribute(reading, "cpu.logical_number").is_none() => {
                    out.push(("cpu_utilization_percentage".into(), reading.value * 100.0));
                }
                "system.memory.usage" if state == Some("used") => memory_used = Some(reading.value),
                "system.memory.limit" => memory_limit = Some(reading.value),
                "system.filesystem.usage"
                    if text(reading, "system.filesystem.mountpoint") == Some("/") =>
                {
                    match state {
                        Some("used") => {
                            out.push(("disk_usage_megabytes".into(), reading.value / 1e6))
                        }
                        Some("free") => {
                            out.push(("disk_available_megabytes".into(), reading.value / 1e6))
                        }
                        _ => {}
                    }
                }
                "system.filesystem.utilization"
                    if text(reading, "system.filesystem.mountpoint") == Some("/")
                        && state.is_none_or(|s| s == "used") =>
                {
                    out.push(("disk_usage_percentage".into(), reading.value * 100.0));
                }
                "system.network.io" => {
                    network = true;
                    match text(reading, "network.io.direction") {
                        Some("receive") => received += reading.value,
                        Some("transmit") => sent += reading.value,
                        _ => {}
                    }
                }
                name if name.starts_with("hw.gpu.") => {
                    let Some(index) = integer(reading, "gpu.index") else {
                        continue;
                    };
                    if !self.visible.contains(index, text(reading, "hw.id")) {
                        continue;
                    }
                    let gpu = gpus.entry(index).or_default();
                    match (name, text(reading, "hw.gpu.task"), state) {
                        ("hw.gpu.utilization", Some("general"), _) => {
                            gpu.utilization = Some(reading.value)
                        }
                        ("hw.gpu.memory.usage", _, Some("used")) => {
                            gpu.memory_used = Some(reading.value)
                        }
                        ("hw.gpu.memory.limit", _, _) => gpu.memory_limit = Some(reading.value),
                        ("hw.gpu.power", _, _) => gpu.power = Some(reading.value),
                        ("hw.gpu.power.limit", _, _) => gpu.power_limit = Some(reading.value),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if let Some(used) = memory_used {
            out.push(("system_memory_usage_megabytes".into(), used / 1e6));
            if let Some(limit) = memory_limit.filter(|l| *l > 0.0) {
                out.push((
                    "system_memory_usage_percentage".into(),
                    used / limit * 100.0,
                ));
            }
        }
        if network {
            let (received_start, sent_start) = *self.network_start.get_or_insert((received, sent));
            out.push((
                "network_receive_megabytes".into(),
                (received - received_start) / 1e6,
            ));
            out.push((
                "network_transmit_megabytes".into(),
                (sent - sent_start) / 1e6,
            ));
        }
        for (index, gpu) in gpus {
            let name = |what: &str| format!("gpu_{index}_{what}");
            if let Some(utilization) = gpu.utilization {
                out.push((name("utilization_percentage"), utilization * 100.0));
            }
            if let Some(used) = gpu.memory_used {
                out.push((name("memory_usage_megabytes"), used / 1e6));
                if let Some(limit) = gpu.memory_limit.filter(|l| *l > 0.0) {
                    out.push((name("memory_usage_percentage"), used / limit * 100.0));
                }
            }
            if let Some(power) = gpu.power {
                out.push((name("power_usage_watts"), power));
                if let Some(limit) = gpu.power_limit.filter(|l| *l > 0.0) {
                    out.push((name("power_usage_percentage"), power / limit * 100.0));
                }
            }
        }
        out.into_iter()
            .map(|(name, value)| (format!("system/{name}"), value))
            .collect()
    }
}

#[derive(Debug, Default)]
struct GpuValues {
    utilization: Option<f64>,
    memory_used: Option<f64>,
    memory_limit: Option<f64>,
    power: Option<f64>,
    power_limit: Option<f64>,
}

#[cfg(test)]
mod tests {
    use opentelemetry::KeyValue;

    use super::*;

    fn reading(name: &'static str, value: f64, attributes: Vec<KeyValue>) -> Reading {
        Reading {
            name,
            value,
            attributes,
        }
    }

    fn gpu(index: i64, name: &'static str, value: f64, extra: Option<KeyValue>) -> Reading {
        let mut attributes = vec![
            KeyValue::new("gpu.index", index),
            KeyValue::new("hw.id", format!("GPU-{index}abc")),
        ];
        attributes.extend(extra);
        reading(name, value, attributes)
    }

    fn gpu_readings(index: i64) -> Vec<Reading> {
        vec![
            gpu(
                index,
                "hw.gpu.utilization",
                0.42,
                Some(KeyValue::new("hw.gpu.task", "general")),
            ),
            gpu(
                index,
                "hw.gpu.utilization",
                0.10,
                Some(KeyValue::new("hw.gpu.task", "memory")),
            ),
            gpu(
                index,
                "hw.gpu.memory.usage",
                2e9,
                Some(KeyValue::new("hw.gpu.memory.state", "used")),
            ),
            gpu(index, "hw.gpu.memory.limit", 8e9, None),
            gpu(index, "hw.gpu.power", 100.0, None),
            gpu(index, "hw.gpu.power.limit", 400.0, None),
        ]
    }

    #[test]
    fn host_and_gpu_readings_get_mlflow_names() {
        let mut readings = vec![
            reading("system.cpu.utilization", 0.25, vec![]),
            reading(
                "system.cpu.utilization",
                0.9,
                vec![KeyValue::new("cpu.logical_number", 0i64)],
            ),
            reading(
                "system.memory.usage",
                3e9,
                vec![KeyValue::new("system.memory.state", "used")],
            ),
            reading(
                "system.memory.usage",
                1e9,
                vec![KeyValue::new("system.memory.state", "free")],
            ),
            reading("system.memory.limit", 4e9, vec![]),
            reading(
                "system.network.io",
                5e6,
                vec![KeyValue::new("network.io.direction", "receive")],
            ),
        ];
        readings.extend(gpu_readings(0));
        let mut names = SystemMetricNames::new(VisibleGpus::default());
        let first: std::collections::BTreeMap<_, _> =
            names.convert(&readings).into_iter().collect();
        assert_eq!(first["system/cpu_utilization_percentage"], 25.0);
        assert_eq!(first["system/system_memory_usage_megabytes"], 3000.0);
        assert_eq!(first["system/system_memory_usage_percentage"], 75.0);
        assert_eq!(first["system/network_receive_megabytes"], 0.0);
        assert!((first["system/gpu_0_utilization_percentage"] - 42.0).abs() < 1e-9);
        assert_eq!(first["system/gpu_0_memory_usage_megabytes"], 2000.0);
        assert_eq!(first["system/gpu_0_memory_usage_percentage"], 25.0);
        assert_eq!(first["system/gpu_0_power_usage_watts"], 100.0);
        assert_eq!(first["system/gpu_0_power_usage_percentage"], 25.0);
        readings[5].value = 7e6;
        let second: std::collections::BTreeMap<_, _> =
            names.convert(&readings).into_iter().collect();
        assert_eq!(second["system/network_receive_megabytes"], 2.0);
    }

    #[test]
    fn only_visible_gpus_are_reported() {
        let mut readings = gpu_readings(0);
        readings.extend(gpu_readings(1));
        readings.extend(gpu_readings(2));
        let visible = VisibleGpus::from_env_value(Some("2, GPU-0"));
        let keys: Vec<String> = SystemMetricNames::new(visible)
            .convert(&readings)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ends_with("utilization_percentage"))
            .collect();
        assert_eq!(
            keys,
            vec![
                "system/gpu_0_utilization_percentage",
                "system/gpu_2_utilization_percentage"
            ]
        );
    }

    #[test]
    fn a_missing_gpu_value_drops_only_that_value() {
        // NVML failed for power: everything else is still reported.
        let readings: Vec<Reading> = gpu_readings(0)
            .into_iter()
            .filter(|r| !r.name.starts_with("hw.gpu.power"))
            .collect();
        let keys: Vec<String> = SystemMetricNames::new(VisibleGpus::default())
            .convert(&readings)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(!keys.iter().any(|k| k.contains("power")));
    }
}
