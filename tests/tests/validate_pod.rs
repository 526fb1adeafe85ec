//! critest's "PodSandbox" specs: running, stopping and removing a pod, and
//! the safe and unsafe sysctls a container of the pod sees.

use std::collections::HashMap;

use k8s_cri::v1::*;
use pier_tests::workload::*;

/// A pod as critest's RunDefaultPodSandbox makes it: metadata, an empty
/// Linux section, nothing else.
fn default_pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("cri-test-uid-{name}"),
            namespace: format!("cri-test-namespace-{name}"),
            attempt: 2,
        }),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

async fn listed_by_id(cri: &mut Runtime, id: &str) -> Vec<PodSandbox> {
    cri.list_pod_sandbox(ListPodSandboxRequest {
        filter: Some(PodSandboxFilter {
            id: id.into(),
            ..Default::default()
        }),
    })
    .await
    .expect("ListPodSandbox")
    .into_inner()
    .items
}

async fn pod_state(cri: &mut Runtime, id: &str) -> i32 {
    cri.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .expect("PodSandboxStatus")
    .into_inner()
    .status
    .expect("status")
    .state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_pod_is_ready_and_listed() {
    let mut node = Node::start().await;
    let config = default_pod("PodSandbox-for-create-test");
    let id = node.run_pod(&config).await;
    assert_eq!(
        pod_state(&mut node.cri, &id).await,
        PodSandboxState::SandboxReady as i32
    );
    let listed = listed_by_id(&mut node.cri, &id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].metadata, config.metadata);
    remove_pod(&mut node.cri, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_pod_is_not_ready() {
    let mut node = Node::start().await;
    let id = node.run_pod(&default_pod("PodSandbox-for-test-stop")).await;
    node.cri
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("StopPodSandbox");
    assert_eq!(
        pod_state(&mut node.cri, &id).await,
        PodSandboxState::SandboxNotready as i32
    );
    remove_pod(&mut node.cri, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_pod_is_no_longer_listed() {
    let mut node = Node::start().await;
    let id = node
        .run_pod(&default_pod("PodSandbox-for-test-remove"))
        .await;
    remove_pod(&mut node.cri, &id).await;
    assert!(listed_by_id(&mut node.cri, &id).await.is_empty());
    let all = node
        .cri
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox");
    assert!(all.into_inner().items.is_empty());
}

/// Runs a pod with `sysctls` and a default container in it; returns what
/// the container reads at `/proc/sys/<path>`.
async fn sysctl_seen_in_container(key: &str, value: &str) -> String {
    let mut node = Node::start().await;
    let mut config = default_pod(&format!(
        "pod-sandbox-with-sysctls-{}",
        key.replace('.', "-")
    ));
    config.linux = Some(LinuxPodSandboxConfig {
        sysctls: HashMap::from([(key.to_owned(), value.to_owned())]),
        ..Default::default()
    });
    let pod_id = node.run_pod(&config).await;
    let container = node.container("container-sysctl", &["top"]);
    let id = node.run(&pod_id, &config, container).await;
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let out = exec(&mut node.cri, &id, &["cat", &path], 30).await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    remove_pod(&mut node.cri, &pod_id).await;
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_sysctl_is_set_in_the_container() {
    let host = std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").expect("host value");
    assert_eq!(
        host.trim(),
        "0",
        "the host already has the value under test"
    );
    assert_eq!(
        sysctl_seen_in_container("kernel.shm_rmid_forced", "1").await,
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_sysctl_is_set_in_the_container() {
    let host = std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max").expect("host value");
    assert_ne!(
        host.trim(),
        "100",
        "the host already has the value under test"
    );
    assert_eq!(
        sysctl_seen_in_container("fs.mqueue.msg_max", "100").await,
        "100"
    );
}
