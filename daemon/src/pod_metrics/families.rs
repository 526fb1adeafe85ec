//! The metric families pier reports to kubelet, named and labelled as
//! cAdvisor names them on kubelet's `/metrics/cadvisor`, so that dashboards
//! and alerts keep working when kubelet takes its container metrics from the
//! runtime (the `PodAndContainerStatsFromCRI` feature gate).
//!
//! kubelet (pkg/kubelet/metrics/collectors/cri_metrics.go) calls
//! ListMetricDescriptors once, turns each descriptor into a Prometheus
//! description whose variable labels are its `label_keys`, and on each
//! scrape makes one sample per `Metric` from its `label_values`, in the same
//! order. A metric whose name has no descriptor, or whose values do not
//! match the keys one for one, is dropped with an error in kubelet's log
//! (the bug cri-o/cri-o#9784 and containerd/containerd#12594 fixed).
//!
//! The base labels are those kubelet's cAdvisor path gives every series
//! (pkg/kubelet/server/server.go, `containerPrometheusLabelsFunc`):
//! `container`, `id`, `image`, `name`, `namespace`, `pod`. CRI-O has since
//! dropped `name` (cri-o/cri-o#10175); pier keeps it for queries written
//! against cAdvisor.

use k8s_cri::v1::{MetricDescriptor, MetricType};

/// The labels of every series, in this order, before a family's own.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric family: what ListMetricDescriptors says of it.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    /// Labels after [`BASE_LABELS`].
    pub labels: &'static [&'static str],
}

const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Family {
    Family {
        name,
        help,
        kind: MetricType::Counter,
        labels,
    }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Family {
    Family {
        name,
        help,
        kind: MetricType::Gauge,
        labels,
    }
}

pub const CPU_USAGE: Family = counter(
    "container_cpu_usage_seconds_total",
    "Cumulative CPU time consumed, in whole seconds.",
    &["cpu"],
);
pub const CPU_USER: Family = counter(
    "container_cpu_user_seconds_total",
    "Cumulative user CPU time consumed, in whole seconds.",
    &[],
);
pub const CPU_SYSTEM: Family = counter(
    "container_cpu_system_seconds_total",
    "Cumulative system CPU time consumed, in whole seconds.",
    &[],
);
pub const CFS_PERIODS: Family = counter(
    "container_cpu_cfs_periods_total",
    "Number of elapsed CFS enforcement periods.",
    &[],
);
pub const CFS_THROTTLED_PERIODS: Family = counter(
    "container_cpu_cfs_throttled_periods_total",
    "Number of CFS periods in which the container was throttled.",
    &[],
);
pub const CFS_THROTTLED_SECONDS: Family = counter(
    "container_cpu_cfs_throttled_seconds_total",
    "Total time the container was throttled, in whole seconds.",
    &[],
);

pub const MEMORY_USAGE: Family = gauge(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed.",
    &[],
);
pub const MEMORY_WORKING_SET: Family = gauge(
    "container_memory_working_set_bytes",
    "Current working set in bytes: usage less inactive file cache.",
    &[],
);
pub const MEMORY_RSS: Family = gauge(
    "container_memory_rss",
    "Size of anonymous memory (RSS) in bytes.",
    &[],
);
pub const MEMORY_CACHE: Family = gauge(
    "container_memory_cache",
    "Number of bytes of page cache memory.",
    &[],
);
pub const MEMORY_MAPPED_FILE: Family = gauge(
    "container_memory_mapped_file",
    "Size of memory mapped files in bytes.",
    &[],
);
pub const MEMORY_SWAP: Family = gauge(
    "container_memory_swap",
    "Container swap usage in bytes.",
    &[],
);
pub const MEMORY_MAX_USAGE: Family = gauge(
    "container_memory_max_usage_bytes",
    "Maximum memory usage recorded in bytes.",
    &[],
);
pub const MEMORY_FAILCNT: Family = counter(
    "container_memory_failcnt",
    "Number of times memory usage hit the limit.",
    &[],
);
pub const MEMORY_FAILURES: Family = counter(
    "container_memory_failures_total",
    "Cumulative count of memory allocation failures (page faults).",
    &["failure_type", "scope"],
);
pub const OOM_EVENTS: Family = counter(
    "container_oom_events_total",
    "Count of out of memory kills observed for the container.",
    &[],
);

pub const PROCESSES: Family = gauge(
    "container_processes",
    "Number of processes running inside the container.",
    &[],
);
pub const THREADS: Family = gauge(
    "container_threads",
    "Number of threads running inside the container.",
    &[],
);

pub const FS_USAGE: Family = gauge(
    "container_fs_usage_bytes",
    "Bytes the container's writable layer takes on its filesystem.",
    &["device"],
);
pub const FS_LIMIT: Family = gauge(
    "container_fs_limit_bytes",
    "Size in bytes of the filesystem holding the container's writable layer.",
    &["device"],
);
pub const FS_INODES_TOTAL: Family = gauge(
    "container_fs_inodes_total",
    "Number of inodes of the filesystem holding the container's writable layer.",
    &["device"],
);
pub const FS_INODES_FREE: Family = gauge(
    "container_fs_inodes_free",
    "Number of free inodes of the filesystem holding the container's writable layer.",
    &["device"],
);

pub const NET_RX_BYTES: Family = counter(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received.",
    &["interface"],
);
pub const NET_RX_PACKETS: Family = counter(
    "container_network_receive_packets_total",
    "Cumulative count of packets received.",
    &["interface"],
);
pub const NET_RX_ERRORS: Family = counter(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving.",
    &["interface"],
);
pub const NET_RX_DROPPED: Family = counter(
    "container_network_receive_packets_dropped_total",
    "Cumulative count of packets dropped while receiving.",
    &["interface"],
);
pub const NET_TX_BYTES: Family = counter(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted.",
    &["interface"],
);
pub const NET_TX_PACKETS: Family = counter(
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted.",
    &["interface"],
);
pub const NET_TX_ERRORS: Family = counter(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting.",
    &["interface"],
);
pub const NET_TX_DROPPED: Family = counter(
    "container_network_transmit_packets_dropped_total",
    "Cumulative count of packets dropped while transmitting.",
    &["interface"],
);

/// Every family, in the order ListMetricDescriptors lists them.
pub const ALL: [&Family; 30] = [
    &CPU_USAGE,
    &CPU_USER,
    &CPU_SYSTEM,
    &CFS_PERIODS,
    &CFS_THROTTLED_PERIODS,
    &CFS_THROTTLED_SECONDS,
    &MEMORY_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &MEMORY_CACHE,
    &MEMORY_MAPPED_FILE,
    &MEMORY_SWAP,
    &MEMORY_MAX_USAGE,
    &MEMORY_FAILCNT,
    &MEMORY_FAILURES,
    &OOM_EVENTS,
    &PROCESSES,
    &THREADS,
    &FS_USAGE,
    &FS_LIMIT,
    &FS_INODES_TOTAL,
    &FS_INODES_FREE,
    &NET_RX_BYTES,
    &NET_RX_PACKETS,
    &NET_RX_ERRORS,
    &NET_RX_DROPPED,
    &NET_TX_BYTES,
    &NET_TX_PACKETS,
    &NET_TX_ERRORS,
    &NET_TX_DROPPED,
];

/// ListMetricDescriptors: every family with its full list of label keys.
pub fn descriptors() -> Vec<MetricDescriptor> {
    ALL.iter()
        .map(|family| MetricDescriptor {
            name: family.name.into(),
            help: family.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(family.labels)
                .map(|key| (*key).to_owned())
                .collect(),
        })
        .collect()
}
