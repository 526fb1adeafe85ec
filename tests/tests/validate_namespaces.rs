//! critest's "Security Context > NamespaceOption" specs: host or pod PID,
//! IPC and network namespaces, and a container's own PID namespace, each
//! checked from inside a container against what the host shows.

use std::process::Command;
use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::workload::*;

fn options(pid: NamespaceMode, ipc: NamespaceMode, network: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        pid: pid as i32,
        ipc: ipc as i32,
        network: network as i32,
        ..Default::default()
    }
}

/// A pod whose namespaces are `pod_options`; returns its id and config.
async fn pod_with(
    node: &mut Node,
    name: &str,
    pod_options: &NamespaceOption,
) -> (String, PodSandboxConfig) {
    let mut pod = node.pod(name);
    pod_security(&mut pod).namespace_options = Some(pod_options.clone());
    let id = node.run_pod(&pod).await;
    (id, pod)
}

/// A busybox container with the given namespace options.
fn container_with(
    node: &Node,
    name: &str,
    argv: &[&str],
    options: &NamespaceOption,
) -> ContainerConfig {
    let mut config = node.container(name, argv);
    security(&mut config).namespace_options = Some(options.clone());
    config
}

async fn exec_stdout(cri: &mut Runtime, id: &str, argv: &[&str]) -> String {
    let out = exec(cri, id, argv, 30).await;
    assert_eq!(
        out.exit_code,
        0,
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn host_pid_of(cri: &mut Runtime, id: &str) -> i64 {
    let response = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&response.info["info"]).expect("info JSON");
    info["pid"].as_i64().expect("pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_pid_containers_see_each_others_host_pids() {
    let mut node = Node::start().await;
    let host = options(NamespaceMode::Node, NamespaceMode::Pod, NamespaceMode::Pod);
    let (pod_id, pod) = pod_with(&mut node, "host-pid", &host).await;
    let script = "echo $$ > /tmp/pid && exec sleep 4242";
    let first = container_with(&node, "first-with-HostPID", &["sh", "-c", script], &host);
    let first = node.run(&pod_id, &pod, first).await;
    let within = Duration::from_secs(10);
    let own_view = exec_until(
        &mut node.cri,
        &first,
        &["cat", "/tmp/pid"],
        |pid| !pid.trim().is_empty(),
        within,
    )
    .await;
    let own_view: i64 = own_view.trim().parse().expect("a pid");
    assert_eq!(
        own_view,
        host_pid_of(&mut node.cri, &first).await,
        "the pid it sees is the host's"
    );

    let second = container_with(
        &node,
        "container-with-HostPID",
        &["sh", "-c", "sleep 1000"],
        &host,
    );
    let second = node.run(&pod_id, &pod, second).await;
    // critest: the other container's process, seen by its host pid.
    let pidof = ["sh", "-c", "pidof sleep || true"];
    let own_view = own_view.to_string();
    exec_until(
        &mut node.cri,
        &second,
        &pidof,
        |pids| pids.split_whitespace().any(|p| p == own_view),
        within,
    )
    .await;
    remove_pod(&mut node.cri, &pod_id).await;
}

/// A System V shared memory segment made on the host, removed on drop.
struct HostSegment(String);

impl HostSegment {
    fn new() -> Self {
        let out = Command::new("ipcmk")
            .args(["-M", "1048576"])
            .output()
            .expect("run ipcmk");
        assert!(
            out.status.success(),
            "ipcmk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text
            .trim()
            .trim_start_matches("Shared memory id: ")
            .to_owned();
        assert!(id.parse::<u64>().is_ok(), "ipcmk said {text:?}");
        Self(id)
    }
}

impl Drop for HostSegment {
    fn drop(&mut self) {
        let _ = Command::new("ipcrm").args(["-m", &self.0]).output();
    }
}

/// The shared memory ids a container sees (critest's `ipcs -m`; this
/// busybox has no ipcs, and ipcs reads the same table).
async fn shm_ids_seen(host_ipc: bool) -> (String, Vec<String>) {
    let segment = HostSegment::new();
    let mut node = Node::start().await;
    let ipc = if host_ipc {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    // critest gives the pod and its container the same options.
    let namespaces = options(NamespaceMode::Pod, ipc, NamespaceMode::Pod);
    let (pod_id, pod) = pod_with(&mut node, "host-ipc", &namespaces).await;
    let top = ["sh", "-c", "top"];
    let config = container_with(&node, "namespace-container", &top, &namespaces);
    let id = node.run(&pod_id, &pod, config).await;
    let table = exec_stdout(&mut node.cri, &id, &["cat", "/proc/sysvipc/shm"]).await;
    remove_pod(&mut node.cri, &pod_id).await;
    let ids = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
        .collect();
    (segment.0.clone(), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ipc_container_sees_the_hosts_shared_memory() {
    let (segment, seen) = shm_ids_seen(true).await;
    assert!(seen.contains(&segment), "segment {segment} not in {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_ipc_container_does_not_see_the_hosts_shared_memory() {
    let (segment, seen) = shm_ids_seen(false).await;
    assert!(!seen.contains(&segment), "segment {segment} in {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_pid_namespace_is_shared_with_an_infra_process() {
    let mut node = Node::start().await;
    let pod_pid = NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let (pod_id, pod) = pod_with(&mut node, "pod-pid", &pod_pid).await;
    let first = container_with(&node, "first", &["sleep", "4243"], &pod_pid);
    node.run(&pod_id, &pod, first).await;
    let second = container_with(
        &node,
        "nginx-container-process-namespace",
        &["top"],
        &pod_pid,
    );
    let second = node.run(&pod_id, &pod, second).await;
    // critest: pid 1 is not the container's own main process...
    let init = exec_stdout(&mut node.cri, &second, &["cat", "/proc/1/cmdline"]).await;
    assert!(
        !init.starts_with("top"),
        "pid 1 is the container's own process: {init:?}"
    );
    assert!(
        !init.starts_with("sleep"),
        "pid 1 is the first container's process: {init:?}"
    );
    // ...and the pod's containers see each other's processes.
    let pidof = ["sh", "-c", "pidof sleep || true"];
    let visible = |pids: &str| !pids.trim().is_empty();
    exec_until(
        &mut node.cri,
        &second,
        &pidof,
        visible,
        Duration::from_secs(10),
    )
    .await;
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_pid_namespace_has_the_container_process_as_pid_1() {
    let mut node = Node::start().await;
    let own = NamespaceOption {
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    };
    let (pod_id, pod) = pod_with(&mut node, "container-pid", &own).await;
    let config = container_with(&node, "nginx-container-pid", &["sleep", "4244"], &own);
    let id = node.run(&pod_id, &pod, config).await;
    let own = |init: &str| init == "sleep\u{0}4244\u{0}";
    let cmdline = ["cat", "/proc/1/cmdline"];
    exec_until(&mut node.cri, &id, &cmdline, own, Duration::from_secs(10)).await;
    remove_pod(&mut node.cri, &pod_id).await;
}

/// Whether a container's `netstat -ln` lists a port the host listens on.
async fn container_lists_host_port(host_network: bool) -> bool {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen on the host");
    let port = listener.local_addr().expect("local addr").port();
    let mut node = Node::start().await;
    let network = if host_network {
        NamespaceMode::Node
    } else {
        NamespaceMode::Pod
    };
    let namespaces = options(NamespaceMode::Pod, NamespaceMode::Pod, network);
    let (pod_id, pod) = pod_with(&mut node, "host-network", &namespaces).await;
    let netstat = ["sh", "-c", "netstat -ln"];
    let mut config = container_with(&node, "container-with-HostNetwork", &netstat, &namespaces);
    config.log_path = "host-network.log".into();
    let log = Node::log_path(&pod, &config);
    let id = node.run(&pod_id, &pod, config).await;
    wait_exited(&mut node.cri, &id, Duration::from_secs(30)).await;
    remove_pod(&mut node.cri, &pod_id).await;
    let lines = log_lines(&log);
    assert!(
        lines.iter().any(|l| l.text.contains("Proto")),
        "no netstat output: {lines:?}"
    );
    lines.iter().any(|l| l.text.contains(&format!(":{port} ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_container_sees_the_hosts_ports() {
    assert!(container_lists_host_port(true).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_network_container_does_not_see_the_hosts_ports() {
    assert!(!container_lists_host_port(false).await);
}
