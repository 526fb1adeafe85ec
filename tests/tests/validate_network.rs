//! critest's "Networking" specs: the pod's DNS config and hostname as a
//! container sees them, and port mappings reached from the host, through a
//! host port on 127.0.0.1 and straight at the pod's IP. critest's nginx is a
//! busybox httpd here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::workload::*;

const WEB_PORT: u16 = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_resolv_conf_is_the_pods_dns_config() {
    let mut node = Node::start().await;
    let mut pod = node.pod("create-PodSandbox-with-DNS-config");
    pod.dns_config = Some(DnsConfig {
        servers: vec!["10.10.10.10".into()],
        searches: vec!["google.com".into()],
        options: vec!["ndots:8".into()],
    });
    let pod_id = node.run_pod(&pod).await;
    let config = node.container("container-for-DNS-config", &["top"]);
    let id = node.run(&pod_id, &pod, config).await;
    let out = exec(&mut node.cri, &id, &["cat", "/etc/resolv.conf"], 30).await;
    assert_eq!(out.exit_code, 0);
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolv = String::from_utf8_lossy(&out.stdout);
    for line in [
        "nameserver 10.10.10.10",
        "search google.com",
        "options ndots:8",
    ] {
        assert!(resolv.lines().any(|l| l == line), "no {line:?} in {resolv}");
    }
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_hostname_is_the_pods() {
    let mut node = Node::start().await;
    let mut pod = node.pod("create-PodSandbox-with-hostname");
    pod.hostname = "test-hostname".into();
    let pod_id = node.run_pod(&pod).await;
    let config = node.container("container-for-hostname", &["top"]);
    let id = node.run(&pod_id, &pod, config).await;
    let out = exec(&mut node.cri, &id, &["hostname"], 30).await;
    assert_eq!(out.exit_code, 0);
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "test-hostname");
    let out = exec(&mut node.cri, &id, &["cat", "/etc/hostname"], 30).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "test-hostname");
    remove_pod(&mut node.cri, &pod_id).await;
}

/// Runs a pod with `mappings` and a web server on port 80 in it; returns the
/// pod id and its IP.
async fn web_pod(node: &mut Node, name: &str, mappings: Vec<PortMapping>) -> (String, IpAddr) {
    let mut pod = node.pod(name);
    pod.port_mappings = mappings;
    let pod_id = node.run_pod(&pod).await;
    let mut config = node.container("web-server", &[]);
    config.command = web_server(WEB_PORT);
    node.run(&pod_id, &pod, config).await;
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
    let ip = ip.parse().unwrap_or_else(|e| panic!("pod ip {ip:?}: {e}"));
    (pod_id, ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_mapping_with_only_a_container_port_serves_on_the_pod_ip() {
    let mut node = Node::start().await;
    let only_container_port = vec![PortMapping {
        container_port: WEB_PORT.into(),
        ..Default::default()
    }];
    let (pod_id, ip) = web_pod(
        &mut node,
        "port-mapping-container-port",
        only_container_port,
    )
    .await;
    let reply = http_get(SocketAddr::new(ip, WEB_PORT), Duration::from_secs(60)).await;
    assert!(reply.contains(" 200 "), "{reply}");
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_mapping_with_a_host_port_serves_on_localhost() {
    let mut node = Node::start().await;
    let host_port = pier_tests::free_port();
    let mapping = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: WEB_PORT.into(),
        host_port: host_port.into(),
        host_ip: String::new(),
    }];
    let (pod_id, _) = web_pod(&mut node, "port-mapping-host-port", mapping).await;
    let localhost = SocketAddr::from(([127, 0, 0, 1], host_port));
    let reply = http_get(localhost, Duration::from_secs(60)).await;
    assert!(reply.contains(" 200 "), "{reply}");
    remove_pod(&mut node.cri, &pod_id).await;
    // The mapping goes with the pod.
    let gone = std::net::TcpStream::connect_timeout(&localhost, Duration::from_secs(2));
    assert!(
        gone.is_err(),
        "host port {host_port} still answers after the pod is gone"
    );
}
