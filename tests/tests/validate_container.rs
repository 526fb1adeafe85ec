//! critest's "Container" specs: basic operations (create, start, stop,
//! remove in every state, ExecSync with and without a timeout) and volumes,
//! sent the way the suite sends them and checked the way it checks them.

use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::workload::*;

/// critest's default container command.
const TOP: &[&str] = &["top"];
/// critest's stop timeout: the stop must finish well within it.
const STOP_TIMEOUT: i64 = 60;

/// A node with a plain pod (no log directory, no DNS), as critest's
/// CreatePodSandboxForContainer makes it.
async fn node_with_pod(name: &str) -> (Node, String, PodSandboxConfig) {
    let mut node = Node::start().await;
    let pod = pod(name, std::path::Path::new(""));
    let pod_id = node.run_pod(&pod).await;
    (node, pod_id, pod)
}

async fn stop_within_timeout(cri: &mut Runtime, id: &str) {
    let began = Instant::now();
    cri.stop_container(StopContainerRequest {
        container_id: id.into(),
        timeout: STOP_TIMEOUT,
    })
    .await
    .expect("StopContainer");
    // top exits on SIGTERM: the stop must not wait for the timeout.
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        began.elapsed()
    );
    let stopped = status(cri, id).await;
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
}

async fn remove_and_check_gone(cri: &mut Runtime, id: &str) {
    cri.remove_container(RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .expect("RemoveContainer");
    assert!(
        list_by_id(cri, id).await.is_empty(),
        "container {id} still listed after remove"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_container_is_listed_by_id() {
    let (mut node, pod_id, pod) = node_with_pod("create").await;
    let config = node.container("container-for-create", TOP);
    let id = create(&mut node.cri, &pod_id, &pod, config).await;
    let listed = list_by_id(&mut node.cri, &id).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].state, ContainerState::ContainerCreated as i32);
    assert_eq!(listed[0].pod_sandbox_id, pod_id);
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_container_is_running() {
    let (mut node, pod_id, pod) = node_with_pod("start").await;
    let config = node.container("container-for-start", TOP);
    let id = create(&mut node.cri, &pod_id, &pod, config).await;
    start(&mut node.cri, &id).await;
    let running = status(&mut node.cri, &id).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);
    assert!(running.started_at >= running.created_at && running.started_at > 0);
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_container_is_exited_before_the_timeout() {
    let (mut node, pod_id, pod) = node_with_pod("stop").await;
    let config = node.container("container-for-stop", TOP);
    let id = node.run(&pod_id, &pod, config).await;
    stop_within_timeout(&mut node.cri, &id).await;
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_container_can_be_removed() {
    let (mut node, pod_id, pod) = node_with_pod("remove-created").await;
    let config = node.container("container-for-remove-created", &["sh", "-c", "top"]);
    let id = create(&mut node.cri, &pod_id, &pod, config).await;
    remove_and_check_gone(&mut node.cri, &id).await;
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_container_can_be_removed() {
    let (mut node, pod_id, pod) = node_with_pod("remove-running").await;
    let config = node.container("container-for-remove-running", &["sh", "-c", "top"]);
    let id = node.run(&pod_id, &pod, config).await;
    let pid = {
        let response = node
            .cri
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner();
        let info: serde_json::Value =
            serde_json::from_str(&response.info["info"]).expect("info is JSON");
        info["pid"].as_i64().expect("pid")
    };
    remove_and_check_gone(&mut node.cri, &id).await;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the removed container's process {pid} still runs: {stat}"
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_container_can_be_removed() {
    let (mut node, pod_id, pod) = node_with_pod("remove-stopped").await;
    let config = node.container("container-for-remove-stopped", &["sh", "-c", "top"]);
    let id = node.run(&pod_id, &pod, config).await;
    stop_within_timeout(&mut node.cri, &id).await;
    remove_and_check_gone(&mut node.cri, &id).await;
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_returns_the_command_output() {
    let (mut node, pod_id, pod) = node_with_pod("exec").await;
    let config = node.container("container-for-execSync", TOP);
    let id = node.run(&pod_id, &pod, config).await;
    let out = exec(&mut node.cri, &id, &["echo", "-n", "hello"], 30).await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_timeout_fails_and_kills_the_command() {
    let (mut node, pod_id, pod) = node_with_pod("exec-timeout").await;
    let config = node.container("container-for-execSync-timeout", TOP);
    let id = node.run(&pod_id, &pod, config).await;
    let began = Instant::now();
    let timed_out = node
        .cri
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sleep".into(), "4321".into()],
            timeout: 1,
        })
        .await;
    // kubelet's client calls it an error either way: a gRPC error or a non-zero exit.
    match timed_out {
        Ok(out) => assert_ne!(out.into_inner().exit_code, 0, "a timed-out exec succeeded"),
        Err(status) => assert!(!status.message().is_empty()),
    }
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "a 1 s exec timeout took {:?}",
        began.elapsed()
    );
    // critest runs `pgrep sleep || true`; this busybox has pidof instead.
    let out = exec(&mut node.cri, &id, &["sh", "-c", "pidof sleep || true"], 30).await;
    assert_eq!(out.exit_code, 0);
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "the timed-out exec's process is still there"
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

/// A host directory holding one file, as critest's createHostPath makes it.
fn host_dir_with_file() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pier-volume")
        .tempdir()
        .expect("tempdir");
    std::fs::write(dir.path().join("testVolume.file"), b"").expect("flag file");
    dir
}

/// Mounts `host_path` at the same path in a container and lists it there.
async fn list_volume(name: &str, host_path: &str) {
    let (mut node, pod_id, pod) = node_with_pod(name).await;
    let mut config = node.container(name, &["sh", "-c", "top"]);
    config.mounts = vec![Mount {
        host_path: host_path.into(),
        container_path: host_path.into(),
        selinux_relabel: true,
        ..Default::default()
    }];
    let id = node.run(&pod_id, &pod, config).await;
    assert_eq!(
        status(&mut node.cri, &id).await.state,
        ContainerState::ContainerRunning as i32
    );
    let out = exec(&mut node.cri, &id, &["ls", "-A", host_path], 30).await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "testVolume.file"
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_sees_a_host_path_volume() {
    let dir = host_dir_with_file();
    list_volume("container-with-volume", &dir.path().display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_sees_a_volume_whose_host_path_is_a_symlink() {
    let dir = host_dir_with_file();
    let link = format!("{}-symlink", dir.path().display());
    std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
    struct RemoveLink(String);
    impl Drop for RemoveLink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _link = RemoveLink(link.clone());
    list_volume("container-with-symlink-host-path", &link).await;
}
