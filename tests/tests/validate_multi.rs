//! critest's "Multiple Containers" specs: a pod with a web server and a
//! busybox container, each reachable, each with its own log, each taking
//! execs. critest's httpd image is a busybox httpd here, announcing itself
//! the way Apache does on its first log line.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::workload::*;

const HTTPD_PORT: u16 = 80;

struct MultiPod {
    node: Node,
    pod_id: String,
    ip: String,
    httpd: String,
    busybox: String,
}

async fn multi_pod() -> MultiPod {
    let mut node = Node::start().await;
    let mut pod = node.pod("PodSandbox-for-multi-container-test");
    pod.port_mappings = vec![PortMapping {
        container_port: HTTPD_PORT.into(),
        ..Default::default()
    }];
    let pod_id = node.run_pod(&pod).await;

    let mut httpd = node.container("httpd", &[]);
    let serve = web_server_script(HTTPD_PORT);
    let script = format!("echo 'Command line: httpd -D FOREGROUND'; {serve}");
    httpd.command = vec!["/bin/sh".into(), "-c".into(), script];
    httpd.log_path = "httpd.log".into();
    let httpd = node.run(&pod_id, &pod, httpd).await;

    let mut busybox = node.container("busybox", &["sh", "-c", "echo hello World; sleep 1000"]);
    busybox.log_path = "busybox.log".into();
    let busybox = node.run(&pod_id, &pod, busybox).await;
    for id in [&httpd, &busybox] {
        assert_eq!(
            status(&mut node.cri, id).await.state,
            ContainerState::ContainerRunning as i32
        );
    }
    let ip = node
        .cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .and_then(|s| s.network)
        .expect("pod network")
        .ip;
    MultiPod {
        node,
        pod_id,
        ip,
        httpd,
        busybox,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_container_pod_serves_on_its_ip() {
    let mut pod = multi_pod().await;
    let addr = SocketAddr::new(pod.ip.parse().expect("pod ip"), HTTPD_PORT);
    let reply = http_get(addr, Duration::from_secs(60)).await;
    assert!(reply.contains(" 200 "), "{reply}");
    remove_pod(&mut pod.node.cri, &pod.pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_container_of_a_pod_logs_to_its_own_file() {
    let mut pod = multi_pod().await;
    let httpd_log = status(&mut pod.node.cri, &pod.httpd).await.log_path;
    let busybox_log = status(&mut pod.node.cri, &pod.busybox).await.log_path;
    assert_ne!(httpd_log, busybox_log);
    let within = Duration::from_secs(60);
    let httpd_lines = wait_for_log_line(
        httpd_log.as_ref(),
        "stdout",
        |t| t.contains("httpd -D FOREGROUND"),
        within,
    )
    .await;
    let busybox_lines = wait_for_log_line(
        busybox_log.as_ref(),
        "stdout",
        |t| t.contains("hello World"),
        within,
    )
    .await;
    assert!(!httpd_lines.iter().any(|l| l.text.contains("hello World")));
    assert!(!busybox_lines.iter().any(|l| l.text.contains("FOREGROUND")));
    remove_pod(&mut pod.node.cri, &pod.pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_container_of_a_pod_takes_execs() {
    let mut pod = multi_pod().await;
    for (id, word) in [(&pod.httpd, "httpd"), (&pod.busybox, "busybox")] {
        let out = exec(&mut pod.node.cri, id, &["echo", word], 30).await;
        assert_eq!(out.exit_code, 0);
        assert!(
            out.stderr.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{word}\n"));
    }
    remove_pod(&mut pod.node.cri, &pod.pod_id).await;
}
