//! Host and process readings through `sysinfo`.

use std::time::Instant;

use opentelemetry::KeyValue;
use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::Reading;

/// File systems that hold no user data: listing them would only add noise (and `/proc` is always "full").
const PSEUDO_FILE_SYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// What `sysinfo` keeps between collections (CPU usage and I/O are differences between two refreshes).
pub(super) struct Host {
    system: System,
    disks: Disks,
    networks: Networks,
    pid: Option<Pid>,
    started: Instant,
    /// Process disk I/O totals (sysinfo reports them per refresh as well as in total).
    cpus: usize,
}

fn reading(name: &'static str, value: f64, attributes: Vec<KeyValue>) -> Reading {
    Reading {
        name,
        value,
        attributes,
    }
}

impl Host {
    pub(super) fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        let cpus = system.cpus().len().max(1);
        Host {
            system,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            pid: sysinfo::get_current_pid().ok(),
            started: Instant::now(),
            cpus,
        }
    }

    pub(super) fn collect(&mut self, out: &mut Vec<Reading>) {
        self.cpu(out);
        self.memory(out);
        self.file_systems(out);
        self.network(out);
        self.process(out);
    }

    fn cpu(&mut self, out: &mut Vec<Reading>) {
        self.system.refresh_cpu_usage();
        out.push(reading(
            "system.cpu.utilization",
            f64::from(self.system.global_cpu_usage()) / 100.0,
            Vec::new(),
        ));
        for (index, cpu) in self.system.cpus().iter().enumerate() {
            out.push(reading(
                "system.cpu.utilization",
                f64::from(cpu.cpu_usage()) / 100.0,
                vec![KeyValue::new("cpu.logical_number", index as i64)],
            ));
        }
        out.push(reading(
            "system.cpu.logical.count",
            self.system.cpus().len() as f64,
            Vec::new(),
        ));
        let load = System::load_average();
        out.push(reading("system.cpu.load_average.1m", load.one, Vec::new()));
        out.push(reading("system.cpu.load_average.5m", load.five, Vec::new()));
        out.push(reading(
            "system.cpu.load_average.15m",
            load.fifteen,
            Vec::new(),
        ));
    }

    fn memory(&mut self, out: &mut Vec<Reading>) {
        self.system.refresh_memory();
        let total = self.system.total_memory() as f64;
        let used = self.system.used_memory() as f64;
        let state = |s: &'static str| vec![KeyValue::new("system.memory.state", s)];
        out.push(reading("system.memory.usage", used, state("used")));
        out.push(reading(
            "system.memory.usage",
            self.system.available_memory() as f64,
            state("free"),
        ));
        out.push(reading("system.memory.limit", total, Vec::new()));
        if total > 0.0 {
            out.push(reading(
                "system.memory.utilization",
                used / total,
                Vec::new(),
            ));
        }
        let swap_total = self.system.total_swap() as f64;
        let swap_used = self.system.used_swap() as f64;
        let paging = |s: &'static str| vec![KeyValue::new("system.paging.state", s)];
        out.push(reading("system.paging.usage", swap_used, paging("used")));
        out.push(reading(
            "system.paging.usage",
            swap_total - swap_used,
            paging("free"),
        ));
        if swap_total > 0.0 {
            out.push(reading(
                "system.paging.utilization",
                swap_used / swap_total,
                Vec::new(),
            ));
        }
    }

    fn file_systems(&mut self, out: &mut Vec<Reading>) {
        self.disks.refresh(true);
        for disk in self.disks.list() {
            let file_system = disk.file_system().to_string_lossy().into_owned();
            let total = disk.total_space() as f64;
            if total == 0.0 || PSEUDO_FILE_SYSTEMS.contains(&file_system.as_str()) {
                continue;
            }
            let free = disk.available_space() as f64;
            let device = disk.name().to_string_lossy().into_owned();
            let mount = disk.mount_point().to_string_lossy().into_owned();
            let attributes = |state: Option<&'static str>| {
                let mut attributes = vec![
                    KeyValue::new("system.device", device.clone()),
                    KeyValue::new("system.filesystem.mountpoint", mount.clone()),
                    KeyValue::new("system.filesystem.type", file_system.clone()),
                ];
                if let Some(state) = state {
                    attributes.push(KeyValue::new("system.filesystem.state", state));
                }
                attributes
            };
            out.push(reading(
                "system.filesystem.usage",
                total - free,
                attributes(Some("used")),
            ));
            out.push(reading(
                "system.filesystem.usage",
                free,
                attributes(Some("free")),
            ));
            out.push(reading("system.filesystem.limit", total, attributes(None)));
            out.push(reading(
                "system.filesystem.utilization",
                (total - free) / total,
                attributes(None),
            ));
            let usage = disk.usage();
            let io = |direction: &'static str| {
                vec![
                    KeyValue::new("system.device", device.clone()),
                    KeyValue::new("disk.io.direction", direction),
                ]
            };
            out.push(reading(
                "system.disk.io",
                usage.total_read_bytes as f64,
                io("read"),
            ));
            out.push(reading(
                "system.disk.io",
                usage.total_written_bytes as f64,
                io("write"),
            ));
        }
    }

    fn network(&mut self, out: &mut Vec<Reading>) {
        self.networks.refresh(true);
        for (interface, data) in self.networks.list() {
            let attributes = |direction: &'static str| {
                vec![
                    KeyValue::new("network.interface.name", interface.clone()),
                    KeyValue::new("network.io.direction", direction),
                ]
            };
            out.push(reading(
                "system.network.io",
                data.total_received() as f64,
                attributes("receive"),
            ));
            out.push(reading(
                "system.network.io",
                data.total_transmitted() as f64,
                attributes("transmit"),
            ));
            out.push(reading(
                "system.network.errors",
                data.total_errors_on_received() as f64,
                attributes("receive"),
            ));
            out.push(reading(
                "system.network.errors",
                data.total_errors_on_transmitted() as f64,
                attributes("transmit"),
            ));
        }
    }

    fn process(&mut self, out: &mut Vec<Reading>) {
        out.push(reading(
            "process.uptime",
            self.started.elapsed().as_secs_f64(),
            Vec::new(),
        ));
        let Some(pid) = self.pid else { return };
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_disk_usage()
                .with_tasks(),
        );
        let Some(process) = self.system.process(pid) else {
            return;
        };
        // sysinfo reports percent of one CPU; the convention is a fraction of all CPUs.
        out.push(reading(
            "process.cpu.utilization",
            f64::from(process.cpu_usage()) / 100.0 / self.cpus as f64,
            Vec::new(),
        ));
        out.push(reading(
            "process.memory.usage",
            process.memory() as f64,
            Vec::new(),
        ));
        out.push(reading(
            "process.memory.virtual",
            process.virtual_memory() as f64,
            Vec::new(),
        ));
        if let Some(tasks) = process.tasks() {
            out.push(reading(
                "process.thread.count",
                tasks.len() as f64,
                Vec::new(),
            ));
        }
        if let Some(files) = process.open_files() {
            out.push(reading(
                "process.unix.file_descriptor.count",
                files as f64,
                Vec::new(),
            ));
        }
        let usage = process.disk_usage();
        out.push(reading(
            "process.disk.io",
            usage.total_read_bytes as f64,
            vec![KeyValue::new("disk.io.direction", "read")],
        ));
        out.push(reading(
            "process.disk.io",
            usage.total_written_bytes as f64,
            vec![KeyValue::new("disk.io.direction", "write")],
        ));
    }
}
