//! What crictl (v1.26) needs from the runtime, checked without crictl:
//! `crictl info`, `inspect` and `inspectp` splice each value of the verbose
//! `info` map into one JSON document (a value that is not JSON goes in as an
//! unescaped string and breaks it), `crictl logs` reads the status log path,
//! and `crictl ps`/`pods` rely on the list filters (state, id and pod id
//! prefixes as it prints them, labels).

use std::collections::HashMap;
use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::workload::*;
use serde_json::Value;

/// crictl 1.26's `outputStatusInfo`: `{"status":<status>,"<key>":<value>,...}`
/// with keys sorted and each value spliced in as it is when it parses as
/// JSON, else quoted without escaping. Returns the parsed document.
fn crictl_document(status: &str, info: &HashMap<String, String>) -> Value {
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort();
    let mut doc = format!("{{\"status\":{status},");
    for key in keys {
        let value = &info[key];
        if serde_json::from_str::<Value>(value).is_ok() {
            doc.push_str(&format!("\"{key}\":{value},"));
        } else {
            doc.push_str(&format!("\"{key}\":\"{value}\","));
        }
    }
    doc.pop();
    doc.push('}');
    serde_json::from_str(&doc).unwrap_or_else(|e| panic!("crictl could not print {doc}: {e}"))
}

/// Every value of a verbose info map must be a JSON object: crictl 1.26
/// splices it in, later versions decode each into a map.
fn assert_json_objects(info: &HashMap<String, String>) {
    assert!(!info.is_empty(), "verbose info is empty");
    for (key, value) in info {
        let parsed: Value =
            serde_json::from_str(value).unwrap_or_else(|e| panic!("info[{key}] is not JSON: {e}"));
        assert!(
            parsed.is_object(),
            "info[{key}] is not a JSON object: {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_info_prints_the_verbose_status() {
    let mut node = Node::start().await;
    let status = node
        .cri
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    assert_json_objects(&status.info);
    let doc = crictl_document("{}", &status.info);
    assert!(doc["config"].is_object(), "{doc}");
    assert!(!status.status.expect("status").conditions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_inspect_and_inspectp_print_pid_sandbox_and_spec() {
    let mut node = Node::start().await;
    let pod = node.pod("inspect");
    let pod_id = node.run_pod(&pod).await;
    let config = node.container("inspected", &["sleep", "1000"]);
    let id = node.run(&pod_id, &pod, config).await;

    let container = node
        .cri
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    assert_json_objects(&container.info);
    let doc = crictl_document("{}", &container.info);
    // `crictl inspect --template '{{.info.pid}}'` is how scripts find the process.
    let pid = doc["info"]["pid"].as_i64().expect("info.pid");
    // Right after StartContainer the process may still be runc's init about to exec.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the pid is a process");
        if cmdline == b"sleep\x001000\x00" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} runs {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(doc["info"]["sandboxID"], pod_id.as_str());
    assert_eq!(
        doc["info"]["runtimeSpec"]["process"]["args"],
        serde_json::json!(["sleep", "1000"])
    );

    let sandbox = node
        .cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    assert_json_objects(&sandbox.info);
    let doc = crictl_document("{}", &sandbox.info);
    assert_eq!(doc["info"]["sandboxId"], pod_id.as_str());
    assert_eq!(doc["info"]["config"]["metadata"]["name"], "inspect");
    let netns = doc["info"]["runtime"]["netns"]
        .as_str()
        .expect("netns path");
    assert!(std::path::Path::new(netns).exists(), "{netns}");
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_logs_reads_the_log_path_in_the_status() {
    let mut node = Node::start().await;
    let with_dir = node.pod("logs");
    let without_dir = pod("logs-no-dir", std::path::Path::new(""));
    for pod in [with_dir, without_dir] {
        let pod_id = node.run_pod(&pod).await;
        let mut config = node.container("talker", &["sh", "-c", "echo out; echo err >&2"]);
        config.log_path = "talker/0.log".into();
        let id = node.run(&pod_id, &pod, config).await;
        let exited = wait_exited(&mut node.cri, &id, Duration::from_secs(30)).await;
        let path = std::path::PathBuf::from(&exited.log_path);
        assert!(path.is_absolute(), "{path:?}");
        let lines = log_lines(&path);
        for (stream, text) in [("stdout", "out"), ("stderr", "err")] {
            assert!(
                lines.iter().any(|l| l.stream == stream && l.text == text),
                "{path:?}: {lines:?}"
            );
        }
        remove_pod(&mut node.cri, &pod_id).await;
    }
}

async fn listed(cri: &mut Runtime, filter: ContainerFilter) -> Vec<String> {
    let mut ids: Vec<String> = cri
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

async fn listed_pods(cri: &mut Runtime, filter: PodSandboxFilter) -> Vec<String> {
    let mut ids: Vec<String> = cri
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort();
    ids
}

fn state(state: ContainerState) -> Option<ContainerStateValue> {
    Some(ContainerStateValue {
        state: state as i32,
    })
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_ps_and_pods_filters_select_what_they_name() {
    let mut node = Node::start().await;
    let mut first = node.pod("first");
    first.labels = HashMap::from([("tier".into(), "front".into())]);
    let first_id = node.run_pod(&first).await;
    let second = node.pod("second");
    let second_id = node.run_pod(&second).await;

    let running = node.container("running", &["sleep", "1000"]);
    let running = node.run(&first_id, &first, running).await;
    let mut exited = node.container("exited", &["true"]);
    exited.labels = HashMap::from([("app".into(), "exited".into())]);
    let exited = node.run(&first_id, &first, exited).await;
    wait_exited(&mut node.cri, &exited, Duration::from_secs(30)).await;
    let created = node.container("created", &["sleep", "1000"]);
    let created = create(&mut node.cri, &second_id, &second, created).await;

    // `crictl ps` shows running containers unless told otherwise.
    let by_state = |s| ContainerFilter {
        state: state(s),
        ..Default::default()
    };
    let cri = &mut node.cri;
    assert_eq!(
        listed(cri, by_state(ContainerState::ContainerRunning)).await,
        vec![running.clone()]
    );
    assert_eq!(
        listed(cri, by_state(ContainerState::ContainerExited)).await,
        vec![exited.clone()]
    );
    assert_eq!(
        listed(cri, by_state(ContainerState::ContainerCreated)).await,
        vec![created.clone()]
    );
    // `--pod` and `--id` take the 13-character ids crictl prints.
    let by_pod = ContainerFilter {
        pod_sandbox_id: first_id[..13].into(),
        ..Default::default()
    };
    assert_eq!(
        listed(cri, by_pod).await,
        sorted(vec![running.clone(), exited.clone()])
    );
    let by_id = ContainerFilter {
        id: created[..13].into(),
        ..Default::default()
    };
    assert_eq!(listed(cri, by_id).await, vec![created.clone()]);
    let by_label = ContainerFilter {
        label_selector: HashMap::from([("app".into(), "exited".into())]),
        ..Default::default()
    };
    assert_eq!(listed(cri, by_label).await, vec![exited.clone()]);

    node.cri
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: second_id.clone(),
        })
        .await
        .expect("StopPodSandbox");
    let cri = &mut node.cri;
    let ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    assert_eq!(listed_pods(cri, ready).await, vec![first_id.clone()]);
    let by_id = PodSandboxFilter {
        id: second_id[..13].into(),
        ..Default::default()
    };
    assert_eq!(listed_pods(cri, by_id).await, vec![second_id.clone()]);
    let by_label = PodSandboxFilter {
        label_selector: HashMap::from([("tier".into(), "front".into())]),
        ..Default::default()
    };
    assert_eq!(listed_pods(cri, by_label).await, vec![first_id.clone()]);
    remove_pod(cri, &first_id).await;
    remove_pod(cri, &second_id).await;
}
