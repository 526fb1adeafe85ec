//! ListMetricDescriptors and ListPodSandboxMetrics through a real pierd:
//! containers do known work (burn CPU, hold memory, write files, serve
//! bytes over the pod network, get OOM-killed), and each metric is checked
//! against the cgroup files and `/proc/<pid>/net/dev` of the same container,
//! read here, and against the work done. Every metric must also be one
//! kubelet takes: described, with one label value per label key.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::cgroups::{Cgroup, CgroupParent};
use pier_tests::workload::*;

const MIB: u64 = 1 << 20;
const NS_PER_SECOND: u64 = 1_000_000_000;
const WAIT: Duration = Duration::from_secs(60);

/// The descriptors and one ListPodSandboxMetrics answer, with the times
/// just before and after the call.
struct Answer {
    descriptors: HashMap<String, MetricDescriptor>,
    pods: Vec<PodSandboxMetrics>,
    before_ns: i64,
    after_ns: i64,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

async fn metrics(cri: &mut Runtime) -> Answer {
    let descriptors = cri
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    let before_ns = now_ns();
    let pods = cri
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    let answer = Answer {
        descriptors,
        pods,
        before_ns,
        after_ns: now_ns(),
    };
    answer.assert_kubelet_takes_every_metric();
    answer
}

impl Answer {
    /// What kubelet's CRI collector needs to make a Prometheus sample of
    /// each metric: a descriptor, one value per label key, a value, and a
    /// timestamp of when it was read.
    fn assert_kubelet_takes_every_metric(&self) {
        let all = self.pods.iter().flat_map(|p| {
            p.metrics
                .iter()
                .chain(p.container_metrics.iter().flat_map(|c| c.metrics.iter()))
        });
        for metric in all {
            let descriptor = self
                .descriptors
                .get(&metric.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", metric.name));
            assert_eq!(
                metric.label_values.len(),
                descriptor.label_keys.len(),
                "{metric:?} against {descriptor:?}"
            );
            assert!(metric.value.is_some(), "{metric:?}");
            assert!(
                (self.before_ns..=self.after_ns).contains(&metric.timestamp),
                "{metric:?} not read during the call ({}..{})",
                self.before_ns,
                self.after_ns
            );
        }
    }

    fn pod(&self, id: &str) -> Option<&PodSandboxMetrics> {
        self.pods.iter().find(|p| p.pod_sandbox_id == id)
    }

    fn container(&self, pod: &str, id: &str) -> Option<&ContainerMetrics> {
        self.pod(pod)?
            .container_metrics
            .iter()
            .find(|c| c.container_id == id)
    }

    /// The metrics named `name` whose labels include `labels`.
    fn select<'a>(
        &self,
        metrics: &'a [Metric],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Vec<&'a Metric> {
        let descriptor = &self.descriptors[name];
        metrics
            .iter()
            .filter(|m| m.name == name)
            .filter(|m| {
                labels.iter().all(|(key, value)| {
                    let i = descriptor.label_keys.iter().position(|k| k == key);
                    i.is_some_and(|i| m.label_values[i] == *value)
                })
            })
            .collect()
    }

    /// The value of the one metric named `name` with `labels`.
    fn value(&self, metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> u64 {
        let found = self.select(metrics, name, labels);
        assert_eq!(found.len(), 1, "{name} {labels:?} in {metrics:#?}");
        found[0].value.as_ref().map(|v| v.value).unwrap_or_default()
    }

    /// The labels of a metric as a map.
    fn labels(&self, metric: &Metric) -> HashMap<String, String> {
        self.descriptors[&metric.name]
            .label_keys
            .iter()
            .cloned()
            .zip(metric.label_values.iter().cloned())
            .collect()
    }
}

async fn container_pid(cri: &mut Runtime, id: &str) -> i64 {
    let response = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&response.info["info"]).expect("info");
    info["pid"].as_i64().expect("pid")
}

async fn pod_ip(cri: &mut Runtime, id: &str) -> String {
    cri.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .expect("PodSandboxStatus")
    .into_inner()
    .status
    .and_then(|s| s.network)
    .expect("pod network")
    .ip
}

/// Waits until `check` holds, re-reading what it looks at.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body length of `GET <path>` from an HTTP server.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> usize {
    let request = format!("GET {path} HTTP/1.0\r\nHost: pier-tests\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("request");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).expect("reply");
        let body = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of headers");
        reply.len() - body - 4
    })
    .await
    .expect("fetch thread")
}

/// An interface's counters in the network namespace of `pid`, as
/// `/proc/net/dev` lists them: rx bytes, packets, errs, drop, fifo, frame,
/// compressed, multicast, then tx bytes, packets, ...
fn net_dev(pid: i64, interface: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).expect("net/dev");
    text.lines()
        .find_map(|line| {
            let (name, counters) = line.split_once(':')?;
            (name.trim() == interface).then(|| {
                counters
                    .split_whitespace()
                    .map(|v| v.parse().expect("counter"))
                    .collect()
            })
        })
        .unwrap_or_else(|| panic!("no {interface} in {text}"))
}

/// A worker that writes 3 MB to its writable layer, serves a 200 kB file,
/// holds 20 MB in a shell variable and burns CPU until told to stop; it
/// then runs three processes: the shell, httpd and a sleep.
const WORKER: &str = "head -c 3000000 /dev/zero > /tmp/blob; \
    mkdir /www && head -c 200000 /dev/zero > /www/big && httpd -p 8080 -h /www; \
    x=$(yes 0123456789abcdef | head -c 20000000); \
    ( while [ ! -f /tmp/stop ]; do :; done ) & \
    sleep 100000 & \
    echo ready; wait";

/// A shell whose child doubles a string until the 32 MiB limit kills it;
/// the shell says so and sleeps, one process.
const HOG: &str = "( x=a; while true; do x=$x$x; done ); echo survived; exec sleep 100000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_container_metrics_match_the_cgroup_files() {
    let mut node = Node::start().await;
    let pod = node.pod("metrics");
    let pod_id = node.run_pod(&pod).await;

    let mut config = node.container("worker", &["sh", "-c", WORKER]);
    config.log_path = "worker.log".into();
    let worker_log = Node::log_path(&pod, &config);
    let worker = node.run(&pod_id, &pod, config).await;
    let mut config = node.container("hog", &["sh", "-c", HOG]);
    config.log_path = "hog.log".into();
    config.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let hog_log = Node::log_path(&pod, &config);
    let hog = node.run(&pod_id, &pod, config).await;

    wait_for_log_line(&worker_log, "stdout", |l| l == "ready", WAIT).await;
    wait_for_log_line(&hog_log, "stdout", |l| l == "survived", WAIT).await;
    let worker_pid = container_pid(&mut node.cri, &worker).await;
    let worker_cgroup = Cgroup::of_process(worker_pid);
    let hog_cgroup = Cgroup::of_process(container_pid(&mut node.cri, &hog).await);
    // Over a second of CPU, so that whole seconds show it; then quiet.
    wait_until("the worker burnt 1.3 s of CPU", || {
        worker_cgroup.cpu_usage_ns() >= 1_300_000_000
    })
    .await;
    let stop = exec(&mut node.cri, &worker, &["touch", "/tmp/stop"], 10).await;
    assert_eq!(stop.exit_code, 0, "{stop:?}");

    // Three downloads of the 200 kB file from the host, over the pod's eth0.
    let ip = pod_ip(&mut node.cri, &pod_id).await;
    let addr = format!("{ip}:8080").parse().expect("address");
    for _ in 0..3 {
        assert_eq!(fetch(addr, "/big").await, 200_000);
    }
    // The busy loop, the exec and httpd's per-connection children are gone.
    wait_until("the worker runs three processes", || {
        worker_cgroup.processes() == 3
    })
    .await;

    let (cpu_before, memory_before) = (worker_cgroup.cpu_usage_ns(), worker_cgroup.memory_usage());
    let net_before = net_dev(worker_pid, "eth0");
    let answer = metrics(&mut node.cri).await;
    let (cpu_after, memory_after) = (worker_cgroup.cpu_usage_ns(), worker_cgroup.memory_usage());
    let net_after = net_dev(worker_pid, "eth0");

    // The worker: every figure within what its cgroup said around the call.
    let w = &answer
        .container(&pod_id, &worker)
        .expect("the worker's metrics")
        .metrics;
    let cpu = answer.value(w, "container_cpu_usage_seconds_total", &[("cpu", "total")]);
    assert!(cpu >= 1, "{cpu} s of CPU after burning 1.3 s");
    assert!(
        (cpu_before / NS_PER_SECOND..=cpu_after / NS_PER_SECOND).contains(&cpu),
        "cpu {cpu} s, cgroup {cpu_before}..{cpu_after} ns"
    );
    let usage = answer.value(w, "container_memory_usage_bytes", &[]);
    let low = memory_before.min(memory_after).saturating_sub(MIB);
    let high = memory_before.max(memory_after) + MIB;
    assert!(
        (low..=high).contains(&usage),
        "memory {usage}, cgroup {memory_before}..{memory_after}"
    );
    let rss = answer.value(w, "container_memory_rss", &[]);
    assert!(rss >= 19 * MIB, "rss {rss} with a 20 MB variable");
    assert!(
        rss.abs_diff(worker_cgroup.rss()) <= MIB,
        "rss {rss}, cgroup {}",
        worker_cgroup.rss()
    );
    let working_set = answer.value(w, "container_memory_working_set_bytes", &[]);
    let expected = usage.saturating_sub(worker_cgroup.inactive_file());
    assert!(
        working_set.abs_diff(expected) <= MIB && rss <= working_set,
        "working set {working_set}, usage less inactive file {expected}, rss {rss}"
    );
    // The 3.2 MB written are in the page cache.
    let cache = answer.value(w, "container_memory_cache", &[]);
    assert!(
        cache >= 3 * MIB && cache.abs_diff(worker_cgroup.cache()) <= MIB,
        "cache {cache}, cgroup {}",
        worker_cgroup.cache()
    );
    assert_eq!(answer.value(w, "container_memory_failcnt", &[]), 0);
    assert_eq!(answer.value(w, "container_oom_events_total", &[]), 0);
    assert_eq!(answer.value(w, "container_processes", &[]), 3);
    let written = answer.value(w, "container_fs_usage_bytes", &[]);
    assert!(
        (3_200_000..3_200_000 + 2 * MIB).contains(&written),
        "writable layer {written} bytes after writing 3.2 MB"
    );
    let fs = answer.select(w, "container_fs_usage_bytes", &[])[0];
    let device = &answer.labels(fs)["device"];
    assert!(
        device.contains(&worker) && device.ends_with("upper"),
        "{device}"
    );
    assert!(answer.value(w, "container_fs_limit_bytes", &[("device", device)]) > written);
    let labels = answer.labels(&w[0]);
    let expected = [
        ("container", "worker"),
        ("id", worker.as_str()),
        ("image", node.image.as_str()),
        ("name", "k8s_worker_metrics_pier-tests_uid-metrics_0"),
        ("namespace", "pier-tests"),
        ("pod", "metrics"),
    ];
    for (key, value) in expected {
        assert_eq!(labels[key], value, "{labels:?}");
    }
    let kind = |name: &str| answer.select(w, name, &[])[0].metric_type;
    assert_eq!(
        kind("container_cpu_usage_seconds_total"),
        MetricType::Counter as i32
    );
    assert_eq!(
        kind("container_memory_usage_bytes"),
        MetricType::Gauge as i32
    );

    // The hog: its child was OOM-killed after hitting the limit.
    let h = &answer
        .container(&pod_id, &hog)
        .expect("the hog's metrics")
        .metrics;
    let oom = answer.value(h, "container_oom_events_total", &[]);
    assert!(oom >= 1, "{oom} OOM kills");
    assert_eq!(oom, hog_cgroup.oom_kills());
    let failcnt = answer.value(h, "container_memory_failcnt", &[]);
    assert!(failcnt > 0, "the hog never hit its limit");
    assert_eq!(failcnt, hog_cgroup.memory_failcnt());
    assert_eq!(answer.value(h, "container_processes", &[]), 1);
    assert_eq!(hog_cgroup.processes(), 1);

    // The pod has no cgroup of its own: its figures are its containers' sums.
    let p = &answer.pod(&pod_id).expect("the pod's metrics").metrics;
    for name in [
        "container_memory_usage_bytes",
        "container_processes",
        "container_oom_events_total",
    ] {
        let sum = answer.value(w, name, &[]) + answer.value(h, name, &[]);
        assert_eq!(answer.value(p, name, &[]), sum, "{name}");
    }
    let pod_labels = answer.labels(&p[0]);
    assert_eq!(
        (pod_labels["container"].as_str(), pod_labels["id"].as_str()),
        ("", pod_id.as_str())
    );
    // Its network: more than the test fetched went out of eth0, and each
    // counter is within what the pod's namespace showed around the call.
    let eth0 = [("interface", "eth0")];
    let tx = answer.value(p, "container_network_transmit_bytes_total", &eth0);
    assert!(tx > 3 * 200_000, "{tx} bytes sent for 600 kB served");
    let counters = [
        ("container_network_receive_bytes_total", 0),
        ("container_network_receive_packets_total", 1),
        ("container_network_receive_errors_total", 2),
        ("container_network_receive_packets_dropped_total", 3),
        ("container_network_transmit_bytes_total", 8),
        ("container_network_transmit_packets_total", 9),
        ("container_network_transmit_errors_total", 10),
        ("container_network_transmit_packets_dropped_total", 11),
    ];
    for (name, column) in counters {
        let value = answer.value(p, name, &eth0);
        let (low, high) = (net_before[column], net_after[column]);
        assert!(
            (low..=high).contains(&value),
            "{name} {value}, /proc/net/dev {low}..{high}"
        );
    }
    // Segmentation offload counts a burst as one packet: at least one a reply.
    let packets = answer.value(p, "container_network_transmit_packets_total", &eth0);
    assert!(packets >= 3, "{packets} packets");
    assert!(
        answer
            .select(
                p,
                "container_network_receive_bytes_total",
                &[("interface", "lo")]
            )
            .is_empty(),
        "loopback is left out, as cAdvisor leaves it out"
    );

    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_a_cgroup_parent_reports_its_own_cgroup_and_what_stops_drops_out() {
    // Made before the node, so dropped after it: the parent can only go
    // once pierd has removed what a failed test left in it.
    let parent = CgroupParent::new("metrics");
    let mut node = Node::start().await;
    let mut pod = node.pod("parented");
    pod.linux.get_or_insert_with(Default::default).cgroup_parent = parent.0.clone();
    let pod_id = node.run_pod(&pod).await;
    let script = "x=$(yes 0123456789abcdef | head -c 10000000); sleep 100000 & echo ready; wait";
    let mut config = node.container("idle", &["sh", "-c", script]);
    config.log_path = "idle.log".into();
    let log = Node::log_path(&pod, &config);
    let id = node.run(&pod_id, &pod, config).await;
    wait_for_log_line(&log, "stdout", |l| l == "ready", WAIT).await;
    let own = Cgroup::at(&parent.0);
    let container = Cgroup::of_process(container_pid(&mut node.cri, &id).await);
    wait_until("the container runs two processes", || {
        container.processes() == 2
    })
    .await;

    let (cpu_before, memory_before) = (own.cpu_usage_ns(), own.memory_usage());
    let answer = metrics(&mut node.cri).await;
    let (cpu_after, memory_after) = (own.cpu_usage_ns(), own.memory_usage());
    let p = &answer.pod(&pod_id).expect("the pod's metrics").metrics;
    let usage = answer.value(p, "container_memory_usage_bytes", &[]);
    let low = memory_before.min(memory_after).saturating_sub(MIB);
    let high = memory_before.max(memory_after) + MIB;
    assert!(
        (low..=high).contains(&usage),
        "pod memory {usage}, its cgroup {memory_before}..{memory_after}"
    );
    assert!(usage >= 10 * MIB, "{usage} with a 10 MB variable");
    let cpu = answer.value(p, "container_cpu_usage_seconds_total", &[("cpu", "total")]);
    assert!((cpu_before / NS_PER_SECOND..=cpu_after / NS_PER_SECOND).contains(&cpu));
    assert_eq!(answer.value(p, "container_processes", &[]), 2);
    let c = &answer
        .container(&pod_id, &id)
        .expect("container metrics")
        .metrics;
    assert_eq!(answer.value(c, "container_processes", &[]), 2);
    assert!(
        answer.value(c, "container_memory_usage_bytes", &[]) <= high,
        "a container uses no more than its pod"
    );

    // An exited container drops out; the pod still answers.
    node.cri
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer");
    let answer = metrics(&mut node.cri).await;
    let pod_metrics = answer.pod(&pod_id).expect("the pod still answers");
    assert!(pod_metrics.container_metrics.is_empty(), "{pod_metrics:?}");
    // A stopped pod, its namespace released, drops out too.
    node.cri
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("StopPodSandbox");
    let answer = metrics(&mut node.cri).await;
    assert!(answer.pod(&pod_id).is_none());
    remove_pod(&mut node.cri, &pod_id).await;
}
