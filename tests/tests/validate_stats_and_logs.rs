//! critest's "Container" specs for stats and logs: ContainerStats and
//! ListContainerStats (by id, with no filter, for created containers), the
//! CRI log of a container, and ReopenContainerLog after kubelet renamed it.

use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::workload::*;

const TOP: &[&str] = &["top"];

async fn list_stats(cri: &mut Runtime, filter: Option<ContainerStatsFilter>) -> Vec<String> {
    cri.list_container_stats(ListContainerStatsRequest { filter })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.expect("attributes").id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_stats_name_the_container_and_carry_cpu_and_memory() {
    let mut node = Node::start().await;
    let pod = node.pod("stats");
    let pod_id = node.run_pod(&pod).await;
    let config = node.container("container-for-stats", TOP);
    let id = node.run(&pod_id, &pod, config).await;
    let stats = node
        .cri
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let attributes = stats.attributes.expect("attributes");
    assert_eq!(attributes.id, id);
    assert_eq!(
        attributes.metadata.expect("metadata").name,
        "container-for-stats"
    );
    assert_ne!(stats.cpu.expect("cpu").timestamp, 0);
    assert_ne!(stats.memory.expect("memory").timestamp, 0);
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_a_started_container_are_listed_by_id_and_without_a_filter() {
    let mut node = Node::start().await;
    let pod = node.pod("stats-list");
    let pod_id = node.run_pod(&pod).await;
    let config = node.container("container-for-stats-with-filter", TOP);
    let id = node.run(&pod_id, &pod, config).await;
    let other = node.container("other", TOP);
    let other = node.run(&pod_id, &pod, other).await;

    let by_id = ContainerStatsFilter {
        id: id.clone(),
        ..Default::default()
    };
    assert_eq!(
        list_stats(&mut node.cri, Some(by_id)).await,
        vec![id.clone()]
    );
    let all = list_stats(&mut node.cri, None).await;
    assert!(all.contains(&id) && all.contains(&other), "{all:?}");
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_of_three_created_containers_are_listed_without_a_filter() {
    let mut node = Node::start().await;
    let pod = node.pod("stats-created");
    let pod_id = node.run_pod(&pod).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let config = node.container(&format!("container-for-stats-with-nil-filter-{n}"), TOP);
        ids.push(create(&mut node.cri, &pod_id, &pod, config).await);
    }
    let created = list_stats(&mut node.cri, None).await;
    for id in &ids {
        assert!(created.contains(id), "created {id} not in {created:?}");
    }
    for id in &ids {
        start(&mut node.cri, id).await;
    }
    let started = list_stats(&mut node.cri, None).await;
    for id in &ids {
        assert!(started.contains(id), "started {id} not in {started:?}");
    }
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_output_is_in_its_cri_log() {
    let mut node = Node::start().await;
    let pod = node.pod("log");
    let pod_id = node.run_pod(&pod).await;
    let mut config = node.container("container-with-log", &["echo", "hello World"]);
    config.log_path = "container-with-log.log".into();
    let path = Node::log_path(&pod, &config);
    let id = node.run(&pod_id, &pod, config).await;
    let exited = wait_exited(&mut node.cri, &id, Duration::from_secs(60)).await;
    assert_eq!(exited.exit_code, 0);
    assert_eq!(exited.log_path, path.display().to_string());
    let lines = log_lines(&path);
    assert!(
        lines.contains(&LogLine {
            stream: "stdout".into(),
            text: "hello World".into(),
        }),
        "{lines:?}"
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_log_gets_new_lines_and_the_renamed_one_stops_growing() {
    let mut node = Node::start().await;
    let pod = node.pod("reopen");
    let pod_id = node.run_pod(&pod).await;
    let script = "while true; do echo hello World; sleep 0.2; done";
    let mut config = node.container("container-reopen-log", &["sh", "-c", script]);
    config.log_path = "container-reopen-log.log".into();
    let path = Node::log_path(&pod, &config);
    let id = node.run(&pod_id, &pod, config).await;
    wait_for_log_line(
        &path,
        "stdout",
        |t| t == "hello World",
        Duration::from_secs(60),
    )
    .await;

    let renamed = path.with_extension("log.new");
    std::fs::rename(&path, &renamed).expect("rename the log, as kubelet rotates it");
    node.cri
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    assert!(
        path.exists(),
        "no new log file right after ReopenContainerLog"
    );
    wait_for_log_line(
        &path,
        "stdout",
        |t| t == "hello World",
        Duration::from_secs(60),
    )
    .await;
    let old = log_lines(&renamed).len();
    assert!(old > 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        log_lines(&renamed).len(),
        old,
        "the renamed log still grows"
    );
    assert!(log_lines(&path).len() > 1, "the new log does not grow");
    remove_pod(&mut node.cri, &pod_id).await;
}
