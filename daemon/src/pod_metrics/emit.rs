//! Turning readings (a cgroup sample, a writable layer, a pod's network
//! interfaces) into CRI `Metric`s of the families in `families`, each with
//! one label value per label key of its descriptor.

use k8s_cri::v1::{Metric, UInt64Value};

use super::families::{self as f, BASE_LABELS, Family};
use super::netdev::Interface;
use crate::container::cgroup::Sample;

const NS_PER_SECOND: u64 = 1_000_000_000;

/// The base label values of a container's series, or of its pod's, in
/// [`BASE_LABELS`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels([String; BASE_LABELS.len()]);

impl Labels {
    /// A container's: its CRI name, id and image, the alias cAdvisor showed
    /// for it in dockershim's days (`k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`),
    /// and its pod.
    pub fn container(id: &str, name: &str, attempt: u32, image: &str, pod: &PodName) -> Self {
        let alias = format!(
            "k8s_{name}_{}_{}_{}_{attempt}",
            pod.name, pod.namespace, pod.uid
        );
        Self([
            name.to_owned(),
            id.to_owned(),
            image.to_owned(),
            alias,
            pod.namespace.clone(),
            pod.name.clone(),
        ])
    }

    /// A pod's own series: no container, image or alias, as cAdvisor labels
    /// the pod's cgroup.
    pub fn pod(id: &str, pod: &PodName) -> Self {
        Self([
            String::new(),
            id.to_owned(),
            String::new(),
            String::new(),
            pod.namespace.clone(),
            pod.name.clone(),
        ])
    }
}

/// Who a pod is, from its metadata.
#[derive(Debug, Clone, Default)]
pub struct PodName {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// The writable layer of a container and the filesystem it is on.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// The layer's directory, reported as the `device`.
    pub dir: String,
    pub used_bytes: Option<u64>,
    pub fs_bytes: Option<u64>,
    pub fs_inodes: Option<u64>,
    pub fs_inodes_free: Option<u64>,
}

/// Metrics of one set of base labels, read at one instant.
pub struct Series<'a> {
    labels: &'a Labels,
    timestamp: i64,
    pub metrics: Vec<Metric>,
}

impl<'a> Series<'a> {
    pub fn new(labels: &'a Labels, timestamp: i64) -> Self {
        Self {
            labels,
            timestamp,
            metrics: Vec::new(),
        }
    }

    /// One sample of `family`, if there is a value; `extra` holds the
    /// values of the family's own labels.
    fn push(&mut self, family: &Family, extra: &[&str], value: Option<u64>) {
        debug_assert_eq!(extra.len(), family.labels.len(), "{}", family.name);
        let Some(value) = value else {
            return;
        };
        let label_values = self
            .labels
            .0
            .iter()
            .cloned()
            .chain(extra.iter().map(|v| (*v).to_owned()))
            .collect();
        self.metrics.push(Metric {
            name: family.name.into(),
            timestamp: self.timestamp,
            metric_type: family.kind as i32,
            label_values,
            value: Some(UInt64Value { value }),
        });
    }

    /// CPU, memory, OOM kills and processes of a cgroup reading.
    pub fn cgroup(&mut self, sample: &Sample) {
        // The CRI carries whole numbers: seconds are truncated, as CRI-O
        // and containerd truncate them.
        let seconds = |ns: Option<u64>| ns.map(|ns| ns / NS_PER_SECOND);
        let cpu = &sample.cpu;
        // cAdvisor's label for the sum over CPUs; kubelet asks it for no
        // per-CPU series.
        self.push(&f::CPU_USAGE, &["total"], seconds(cpu.usage_ns));
        self.push(&f::CPU_USER, &[], seconds(cpu.user_ns));
        self.push(&f::CPU_SYSTEM, &[], seconds(cpu.system_ns));
        // Like cAdvisor, throttling only where a CPU quota enforces periods.
        if cpu.periods.is_some_and(|p| p > 0) {
            self.push(&f::CFS_PERIODS, &[], cpu.periods);
            self.push(&f::CFS_THROTTLED_PERIODS, &[], cpu.throttled_periods);
            self.push(&f::CFS_THROTTLED_SECONDS, &[], seconds(cpu.throttled_ns));
        }
        let m = &sample.memory;
        self.push(&f::MEMORY_USAGE, &[], m.usage);
        self.push(&f::MEMORY_WORKING_SET, &[], m.working_set());
        self.push(&f::MEMORY_RSS, &[], m.rss);
        self.push(&f::MEMORY_CACHE, &[], m.cache);
        self.push(&f::MEMORY_MAPPED_FILE, &[], m.mapped_file);
        self.push(&f::MEMORY_SWAP, &[], m.swap);
        self.push(&f::MEMORY_MAX_USAGE, &[], m.max_usage);
        self.push(&f::MEMORY_FAILCNT, &[], m.failcnt);
        let failures = [
            ("pgfault", "container", m.pgfault),
            ("pgfault", "hierarchy", m.pgfault_hierarchy),
            ("pgmajfault", "container", m.pgmajfault),
            ("pgmajfault", "hierarchy", m.pgmajfault_hierarchy),
        ];
        for (kind, scope, value) in failures {
            self.push(&f::MEMORY_FAILURES, &[kind, scope], value);
        }
        self.push(&f::OOM_EVENTS, &[], m.oom_kills);
        self.push(&f::PROCESSES, &[], sample.processes);
        self.push(&f::THREADS, &[], sample.threads);
    }

    /// A container's writable layer.
    pub fn layer(&mut self, layer: &Layer) {
        let device = [layer.dir.as_str()];
        self.push(&f::FS_USAGE, &device, layer.used_bytes);
        self.push(&f::FS_LIMIT, &device, layer.fs_bytes);
        self.push(&f::FS_INODES_TOTAL, &device, layer.fs_inodes);
        self.push(&f::FS_INODES_FREE, &device, layer.fs_inodes_free);
    }

    /// A pod's network interfaces.
    pub fn network(&mut self, interfaces: &[Interface]) {
        for i in interfaces {
            let name = [i.name.as_str()];
            self.push(&f::NET_RX_BYTES, &name, Some(i.rx_bytes));
            self.push(&f::NET_RX_PACKETS, &name, Some(i.rx_packets));
            self.push(&f::NET_RX_ERRORS, &name, Some(i.rx_errors));
            self.push(&f::NET_RX_DROPPED, &name, Some(i.rx_dropped));
            self.push(&f::NET_TX_BYTES, &name, Some(i.tx_bytes));
            self.push(&f::NET_TX_PACKETS, &name, Some(i.tx_packets));
            self.push(&f::NET_TX_ERRORS, &name, Some(i.tx_errors));
            self.push(&f::NET_TX_DROPPED, &name, Some(i.tx_dropped));
        }
    }
}
