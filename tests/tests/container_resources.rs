//! Container resources end to end: OOM kills, live updates and stats.

use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::Registry;
use pier_tests::workload::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_oom_is_reported_as_oom_killed() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("oom", logs.path())).await;
    let mut config = container("hog", &image, "x=aaaaaaaa; while true; do x=$x$x; done");
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        });
    }
    let id = run(&mut cri, &pod_id, &pod, config).await;
    let status = wait_exited(&mut cri, &id, Duration::from_secs(30)).await;
    assert_eq!(
        status.reason, "OOMKilled",
        "exit {} {}",
        status.exit_code, status.message
    );
    assert_eq!(status.exit_code, 137);
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_container_resources_changes_the_cgroup() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("update", logs.path())).await;
    let id = run(
        &mut cri,
        &pod_id,
        &pod,
        container("resized", &image, "exec sleep 1000"),
    )
    .await;
    let limit = 48_u64 << 20;
    cri.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: limit as i64,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    let read =
        |file: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{file}")).unwrap_or_default();
    assert_eq!(
        read(&format!("memory/pier/pier-{id}/memory.limit_in_bytes")).trim(),
        limit.to_string()
    );
    assert_eq!(
        read(&format!("cpu/pier/pier-{id}/cpu.shares")).trim(),
        "256"
    );
    // ContainerStatus reports the resources as updated, and who runs it.
    let status = status(&mut cri, &id).await;
    let resources = status
        .resources
        .and_then(|r| r.linux)
        .expect("resources in the status");
    assert_eq!(resources.memory_limit_in_bytes, limit as i64);
    assert_eq!(resources.cpu_shares, 256);
    let user = status
        .user
        .and_then(|u| u.linux)
        .expect("user in the status");
    assert_eq!((user.uid, user.gid), (0, 0));
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
    let err = cri
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id,
            ..Default::default()
        })
        .await
        .expect_err("updated a removed container");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_cpu_memory_and_the_writable_layer() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("stats", logs.path())).await;
    let script = "head -c 300000 /dev/zero > /tmp/blob; exec sleep 1000";
    let id = run(&mut cri, &pod_id, &pod, container("busy", &image, script)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = cri
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .expect("cpu")
        .value;
    assert!(cpu > 0, "cpu {cpu}");
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .expect("memory")
        .value;
    assert!(memory > 0, "working set {memory}");
    let layer = stats
        .writable_layer
        .and_then(|w| w.used_bytes)
        .expect("layer")
        .value;
    assert!(layer >= 300_000, "writable layer {layer}");

    let filter = ContainerStatsFilter {
        pod_sandbox_id: pod_id.clone(),
        ..Default::default()
    };
    let listed = cri
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(filter),
        })
        .await;
    assert_eq!(
        listed.expect("ListContainerStats").into_inner().stats.len(),
        1
    );
    let pod_stats = cri
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("stats");
    assert_eq!(pod_stats.linux.expect("linux").containers.len(), 1);
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
}
