//! Descriptors and metrics agree with each other as kubelet needs them to,
//! `/proc/net/dev` parses, and a pod whose processes and namespace are gone
//! still gets an answer.

use std::collections::{HashMap, HashSet};

use k8s_cri::v1::{Metric, MetricDescriptor, MetricType};

use super::emit::{Labels, Layer, PodName, Series};
use super::netdev::{self, Interface};
use super::*;
use crate::container::cgroup::{Cpu, Memory};
use crate::testing::TestDaemon;

fn sample() -> Sample {
    Sample {
        timestamp: 1_700_000_000_000_000_000,
        cpu: Cpu {
            usage_ns: Some(2_999_999_999),
            user_ns: Some(1_000_000_000),
            system_ns: Some(999_999_999),
            periods: Some(40),
            throttled_periods: Some(7),
            throttled_ns: Some(350_000_000),
        },
        memory: Memory {
            usage: Some(3_153_920),
            max_usage: Some(9_000_000),
            inactive_file: Some(524_288),
            rss: Some(2_101_248),
            cache: Some(1_052_672),
            mapped_file: Some(12_288),
            swap: Some(0),
            failcnt: Some(12),
            pgfault: Some(11),
            pgfault_hierarchy: Some(1200),
            pgmajfault: Some(1),
            pgmajfault_hierarchy: Some(3),
            oom_kills: Some(2),
        },
        processes: Some(3),
        threads: Some(5),
    }
}

fn pod_name() -> PodName {
    PodName {
        name: "web".into(),
        namespace: "shop".into(),
        uid: "u-1".into(),
    }
}

fn by_name(descriptors: &[MetricDescriptor]) -> HashMap<&str, &MetricDescriptor> {
    descriptors.iter().map(|d| (d.name.as_str(), d)).collect()
}

/// Every metric has a descriptor and one label value per key, as kubelet's
/// collector requires to turn it into a Prometheus sample.
fn assert_kubelet_takes(metrics: &[Metric]) {
    let descriptors = descriptors();
    let known = by_name(&descriptors);
    for metric in metrics {
        let descriptor = known
            .get(metric.name.as_str())
            .unwrap_or_else(|| panic!("{} has no descriptor", metric.name));
        assert_eq!(
            metric.label_values.len(),
            descriptor.label_keys.len(),
            "{metric:?} against {descriptor:?}"
        );
        assert!(metric.value.is_some(), "{metric:?}");
    }
}

/// The value of the one metric named `name` with `label` (a key and its
/// value), or of the only one of that name.
fn value_of(metrics: &[Metric], name: &str, label: Option<(&str, &str)>) -> u64 {
    let descriptors = descriptors();
    let descriptor = by_name(&descriptors)[name].clone();
    let matching: Vec<&Metric> = metrics
        .iter()
        .filter(|m| m.name == name)
        .filter(|m| {
            label.is_none_or(|(key, value)| {
                let i = descriptor.label_keys.iter().position(|k| k == key);
                i.is_some_and(|i| m.label_values[i] == value)
            })
        })
        .collect();
    assert_eq!(matching.len(), 1, "{name} {label:?} in {metrics:#?}");
    matching[0]
        .value
        .as_ref()
        .map(|v| v.value)
        .unwrap_or_default()
}

#[test]
fn descriptors_name_each_family_once_with_the_base_labels_first() {
    let descriptors = descriptors();
    let names: HashSet<&str> = descriptors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names.len(), descriptors.len(), "a name is listed twice");
    for d in &descriptors {
        assert_eq!(d.label_keys[..6], families::BASE_LABELS, "{d:?}");
        assert!(!d.help.is_empty(), "{d:?}");
        let keys: HashSet<&String> = d.label_keys.iter().collect();
        assert_eq!(keys.len(), d.label_keys.len(), "duplicate key in {d:?}");
        let valid = |s: &str| {
            s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !s.starts_with(|c: char| c.is_ascii_digit())
        };
        assert!(
            valid(&d.name) && d.label_keys.iter().all(|k| valid(k)),
            "{d:?}"
        );
    }
    for family in families::ALL {
        // cAdvisor's one `_total` that is not a count of events.
        if family.name.ends_with("_total") && family.name != "container_fs_inodes_total" {
            assert_eq!(family.kind, MetricType::Counter, "{}", family.name);
        }
    }
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_memory_cache",
        "container_memory_failcnt",
        "container_network_receive_bytes_total",
        "container_network_transmit_packets_dropped_total",
        "container_fs_usage_bytes",
        "container_processes",
        "container_oom_events_total",
    ] {
        assert!(names.contains(name), "{name} is not described");
    }
}

#[test]
fn a_container_sample_becomes_metrics_kubelet_takes() {
    let labels = Labels::container("c1", "app", 2, "registry/busybox:1", &pod_name());
    let mut series = Series::new(&labels, 42);
    series.cgroup(&sample());
    series.layer(&Layer {
        dir: "/var/lib/pier/containers/c1/upper".into(),
        used_bytes: Some(300_000),
        fs_bytes: Some(10 << 30),
        fs_inodes: Some(1000),
        fs_inodes_free: Some(400),
    });
    let metrics = series.metrics;
    assert_kubelet_takes(&metrics);
    assert!(metrics.iter().all(|m| m.timestamp == 42));
    assert_eq!(
        metrics[0].label_values[..6],
        [
            "app",
            "c1",
            "registry/busybox:1",
            "k8s_app_web_shop_u-1_2",
            "shop",
            "web"
        ]
    );
    // Whole seconds, truncated: a counter never runs ahead of the cgroup.
    let cpu = "container_cpu_usage_seconds_total";
    assert_eq!(value_of(&metrics, cpu, Some(("cpu", "total"))), 2);
    assert_eq!(
        value_of(&metrics, "container_cpu_system_seconds_total", None),
        0
    );
    assert_eq!(
        value_of(&metrics, "container_cpu_cfs_throttled_periods_total", None),
        7
    );
    assert_eq!(
        value_of(&metrics, "container_memory_working_set_bytes", None),
        3_153_920 - 524_288
    );
    assert_eq!(value_of(&metrics, "container_memory_failcnt", None), 12);
    assert_eq!(value_of(&metrics, "container_oom_events_total", None), 2);
    assert_eq!(value_of(&metrics, "container_processes", None), 3);
    assert_eq!(
        value_of(&metrics, "container_fs_usage_bytes", None),
        300_000
    );
    let types: HashMap<&str, i32> = metrics
        .iter()
        .map(|m| (m.name.as_str(), m.metric_type))
        .collect();
    assert_eq!(types[cpu], MetricType::Counter as i32);
    assert_eq!(
        types["container_memory_usage_bytes"],
        MetricType::Gauge as i32
    );
}

#[test]
fn memory_failures_come_per_type_and_scope() {
    let labels = Labels::pod("p1", &pod_name());
    let mut series = Series::new(&labels, 1);
    series.cgroup(&sample());
    let failures: Vec<&Metric> = series
        .metrics
        .iter()
        .filter(|m| m.name == "container_memory_failures_total")
        .collect();
    let pairs: HashSet<(&str, &str, u64)> = failures
        .iter()
        .map(|m| {
            (
                m.label_values[6].as_str(),
                m.label_values[7].as_str(),
                m.value.as_ref().map(|v| v.value).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        HashSet::from([
            ("pgfault", "container", 11),
            ("pgfault", "hierarchy", 1200),
            ("pgmajfault", "container", 1),
            ("pgmajfault", "hierarchy", 3),
        ])
    );
}

#[test]
fn throttling_is_left_out_without_a_cpu_quota_and_missing_figures_too() {
    let labels = Labels::pod("p1", &pod_name());
    let mut series = Series::new(&labels, 1);
    let mut unthrottled = sample();
    unthrottled.cpu.periods = Some(0);
    unthrottled.memory.swap = None;
    series.cgroup(&unthrottled);
    let names: HashSet<&str> = series.metrics.iter().map(|m| m.name.as_str()).collect();
    assert!(!names.contains("container_cpu_cfs_periods_total"));
    assert!(!names.contains("container_memory_swap"));
    assert!(names.contains("container_memory_usage_bytes"));
    assert_eq!(
        series.metrics[0].label_values[..6],
        ["", "p1", "", "", "shop", "web"]
    );
}

const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  eth0: 1462113    1071    2    3    0     0          0         0   307534     765    4    5    0     0       0          0
";

#[test]
fn net_dev_parses_per_interface_without_loopback() {
    let interfaces = netdev::parse(NET_DEV);
    assert_eq!(
        interfaces,
        vec![Interface {
            name: "eth0".into(),
            rx_bytes: 1_462_113,
            rx_packets: 1071,
            rx_errors: 2,
            rx_dropped: 3,
            tx_bytes: 307_534,
            tx_packets: 765,
            tx_errors: 4,
            tx_dropped: 5,
        }]
    );
    let labels = Labels::pod("p1", &pod_name());
    let mut series = Series::new(&labels, 1);
    series.network(&interfaces);
    assert_kubelet_takes(&series.metrics);
    assert_eq!(series.metrics.len(), 8);
    let rx = "container_network_receive_packets_dropped_total";
    assert_eq!(
        value_of(&series.metrics, rx, Some(("interface", "eth0"))),
        3
    );
    assert!(netdev::parse("garbage\nx: 1 2\n").is_empty());
}

/// On a thread of its own, as ListPodSandboxMetrics runs it: entering this
/// process's own namespace reads what this process sees; a pinned file
/// that is gone reads as nothing, and the next namespace is still read.
#[test]
fn namespaces_are_read_in_turn_and_missing_ones_skipped() {
    let own = std::path::PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
    let pods = vec![
        ("gone".to_owned(), "/nonexistent/netns/p".into()),
        ("own".to_owned(), own),
    ];
    let readings = std::thread::spawn(move || netdev::read_in_namespaces(&pods))
        .join()
        .expect("reader thread");
    assert!(readings[0].is_none());
    // Entering a namespace takes CAP_SYS_ADMIN; unprivileged runs read none.
    if nix::unistd::geteuid().is_root() {
        let reading = readings[1].as_ref().expect("own namespace read");
        let here = netdev::parse(&std::fs::read_to_string("/proc/net/dev").expect("net/dev"));
        let names = |list: &[Interface]| list.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&reading.interfaces), names(&here));
        assert_ne!(reading.timestamp, 0);
    }
}

/// A ready pod whose container's process is gone and whose namespace pin
/// is missing answers with what it has, never an error.
#[tokio::test]
async fn a_pod_whose_container_exited_and_netns_is_gone_still_answers() {
    let test = TestDaemon::new().await;
    let pod = test.pod("gone").await;
    let (container, _) = test.stored_container(&pod, "app", RUNNING, &[]);
    let other = test.pod("other").await;
    let metrics = list(&test.daemon).await.expect("ListPodSandboxMetrics");
    let ids: HashSet<&str> = metrics.iter().map(|p| p.pod_sandbox_id.as_str()).collect();
    assert_eq!(ids, HashSet::from([pod.as_str(), other.as_str()]));
    for pod in &metrics {
        // The fake host's processes are not this node's: nothing to read.
        assert!(pod.container_metrics.is_empty(), "{pod:?} ({container})");
        assert!(pod.metrics.is_empty(), "{pod:?}");
    }
}
