//! Pod sandboxes end to end: pinned namespaces, a real CNI bridge network,
//! pod files, idempotent stop and remove, and nothing left behind.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use k8s_cri::v1::*;
use pier_tests::{Pierd, PierdOptions, TestNetwork};

async fn pierd_with_network() -> Pierd {
    Pierd::start_with(PierdOptions {
        network: Some(TestNetwork::new()),
        ..Default::default()
    })
    .await
}

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "pier-tests".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        labels: HashMap::from([("app".into(), name.into())]),
        annotations: HashMap::from([("note".into(), "kept".into())]),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["pier-tests.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        ..Default::default()
    }
}

type RuntimeClient =
    k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// Runs a pod and returns its id.
async fn run_pod(cri: &mut RuntimeClient, config: PodSandboxConfig) -> String {
    let response = cri
        .run_pod_sandbox(run_request(config))
        .await
        .expect("RunPodSandbox");
    response.into_inner().pod_sandbox_id
}

fn run_request(config: PodSandboxConfig) -> RunPodSandboxRequest {
    RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    }
}

/// Runs a command inside a pinned namespace with nsenter.
fn in_namespace(kind: &str, pin: &Path, cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--{kind}={}", pin.display()))
        .args(cmd)
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "nsenter {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mounts whose mount point lies under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.display().to_string();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_lifecycle_with_network_files_and_namespaces() {
    let pierd = pierd_with_network().await;
    let prefix = pierd.network().expect("network").subnet_prefix.clone();
    let mut cri = pierd.cri().await.runtime;

    let id = run_pod(&mut cri, pod_config("web")).await;
    assert_eq!(id.len(), 64);

    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner();
    assert!(status.info.contains_key("info"));
    let status = status.status.expect("status");
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(status.labels["app"], "web");
    assert_eq!(status.annotations["note"], "kept");
    let ip = status.network.expect("network").ip;
    assert!(
        ip.starts_with(&format!("{prefix}.")),
        "ip {ip} not in {prefix}.0/24"
    );

    // The namespaces are pinned and configured.
    let netns = pierd.runroot().join("netns").join(&id);
    let addrs = in_namespace("net", &netns, &["ip", "-4", "addr", "show"]);
    assert!(addrs.contains(&ip), "{addrs}");
    assert!(addrs.contains("127.0.0.1"), "loopback is up: {addrs}");
    let utsns = pierd.runroot().join("utsns").join(&id);
    assert_eq!(
        in_namespace("uts", &utsns, &["hostname"]).trim(),
        "web-host"
    );
    let dir = pierd.runroot().join("sandboxes").join(&id);
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).expect("resolv.conf");
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search pier-tests.svc.cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    assert!(
        mounts_under(&dir).iter().any(|m| m.ends_with("/shm")),
        "pod shm mounted"
    );

    // Listing and filters.
    let all = cri
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("list");
    assert_eq!(all.into_inner().items.len(), 1);
    let by_label = PodSandboxFilter {
        label_selector: HashMap::from([("app".into(), "other".into())]),
        ..Default::default()
    };
    let none = cri
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(by_label),
        })
        .await;
    assert!(none.expect("list").into_inner().items.is_empty());
    let by_prefix = PodSandboxFilter {
        id: id[..12].into(),
        ..Default::default()
    };
    let one = cri
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(by_prefix),
        })
        .await;
    assert_eq!(one.expect("list").into_inner().items[0].id, id);

    // Stop releases network and namespaces, twice is fine.
    for _ in 0..2 {
        cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("stop");
    }
    assert!(!netns.exists(), "netns pin left after stop");
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
    assert!(status.network.expect("network").ip.is_empty());

    // Remove forgets it, twice is fine; then it is NOT_FOUND.
    for _ in 0..2 {
        cri.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("remove");
    }
    let gone = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect_err("status after remove");
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert!(
        mounts_under(&pierd.runroot()).is_empty(),
        "{:?}",
        mounts_under(&pierd.runroot())
    );
    assert!(!dir.exists(), "sandbox dir left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_pod_name_is_refused_naming_the_holder() {
    let pierd = pierd_with_network().await;
    let mut cri = pierd.cri().await.runtime;
    let first = run_pod(&mut cri, pod_config("dup")).await;
    let err = cri
        .run_pod_sandbox(run_request(pod_config("dup")))
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains(&first), "{}", err.message());
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: first,
    })
    .await
    .expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cni_failure_fails_the_pod_and_leaves_nothing_behind() {
    // host-local without a subnet: the bridge plugin fails in IPAM.
    let broken = r#"{"cniVersion":"1.0.0","name":"broken","plugins":[
        {"type":"bridge","bridge":"ptbroken0","ipam":{"type":"host-local"}}]}"#;
    let options = PierdOptions {
        cni_files: vec![("10-broken.conflist".into(), broken.into())],
        ..Default::default()
    };
    let pierd = Pierd::start_with(options).await;
    let mut cri = pierd.cri().await.runtime;
    let err = cri
        .run_pod_sandbox(run_request(pod_config("broken")))
        .await
        .expect_err("ran");
    assert!(
        err.message().contains("bridge"),
        "names the plugin: {}",
        err.message()
    );
    let list = cri
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .expect("list");
    assert!(
        list.into_inner().items.is_empty(),
        "a row of the failed pod is left"
    );
    assert!(
        mounts_under(&pierd.runroot()).is_empty(),
        "{:?}",
        mounts_under(&pierd.runroot())
    );
    let pins = std::fs::read_dir(pierd.runroot().join("netns"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pins, 0, "netns pin left behind");
    let _ = Command::new("ip")
        .args(["link", "del", "ptbroken0"])
        .output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pod_skips_cni_and_uses_the_node_hostname() {
    let pierd = pierd_with_network().await;
    let mut cri = pierd.cri().await.runtime;
    let mut config = pod_config("hostnet");
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_pod(&mut cri, config).await;
    assert!(!pierd.runroot().join("netns").join(&id).exists());
    let dir = pierd.runroot().join("sandboxes").join(&id);
    let hostname = std::fs::read_to_string(dir.join("hostname")).expect("hostname");
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("node hostname");
    assert_eq!(hostname.trim(), node.trim());
    cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("remove");
}

/// critest names its pods `create-PodSandbox-for-container-<uuid>` (68
/// bytes) and sends no hostname; the kernel takes at most 64 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_without_hostname_gets_the_nodes_and_a_bad_hostname_is_refused_early() {
    let pierd = pierd_with_network().await;
    let mut cri = pierd.cri().await.runtime;
    let name = "create-PodSandbox-for-container-0a2b4c6d-8e0f-4a2b-9c4d-6e8f0a2b4c6d";
    assert!(name.len() > 64);
    let mut config = pod_config(name);
    config.hostname.clear();
    let id = run_pod(&mut cri, config).await;
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("node hostname");
    let utsns = pierd.runroot().join("utsns").join(&id);
    assert_eq!(
        in_namespace("uts", &utsns, &["hostname"]).trim(),
        node.trim()
    );
    let dir = pierd.runroot().join("sandboxes").join(&id);
    let written = std::fs::read_to_string(dir.join("hostname")).expect("hostname");
    assert_eq!(written.trim(), node.trim());
    pier_tests::workload::remove_pod(&mut cri, &id).await;

    for bad in [
        "h".repeat(65),
        "bad_host".into(),
        "-lead".into(),
        "a..b".into(),
    ] {
        let mut config = pod_config("badhost");
        config.hostname = bad.clone();
        let err = cri
            .run_pod_sandbox(run_request(config))
            .await
            .expect_err(&bad);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err}");
        assert!(err.message().contains("config.hostname"), "{err}");
    }
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "a refused pod left {pods:?}");
    let sandboxes = std::fs::read_dir(pierd.runroot().join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sandboxes, 0, "a refused pod left a sandbox dir");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_sysctls_are_applied_inside_the_pod() {
    let pierd = pierd_with_network().await;
    let mut cri = pierd.cri().await.runtime;
    let mut config = pod_config("sysctl");
    config.linux = Some(LinuxPodSandboxConfig {
        sysctls: HashMap::from([
            ("kernel.shm_rmid_forced".into(), "1".into()),
            ("net.ipv4.ip_unprivileged_port_start".into(), "80".into()),
        ]),
        ..Default::default()
    });
    let id = run_pod(&mut cri, config).await;
    let net = pierd.runroot().join("netns").join(&id);
    let port = in_namespace(
        "net",
        &net,
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(port.trim(), "80");
    let ipc = pierd.runroot().join("ipcns").join(&id);
    let shm = in_namespace("ipc", &ipc, &["cat", "/proc/sys/kernel/shm_rmid_forced"]);
    assert_eq!(shm.trim(), "1");
    cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field() {
    let pierd = pierd_with_network().await;
    let mut cri = pierd.cri().await.runtime;
    let err = cri
        .run_pod_sandbox(RunPodSandboxRequest::default())
        .await
        .expect_err("ran");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("config"), "{}", err.message());

    let mut config = pod_config("bad");
    config.metadata.as_mut().expect("metadata").uid.clear();
    let err = cri
        .run_pod_sandbox(run_request(config))
        .await
        .expect_err("ran");
    assert!(
        err.message().contains("config.metadata.uid"),
        "{}",
        err.message()
    );

    let mut config = pod_config("bad");
    config.linux = Some(LinuxPodSandboxConfig {
        sysctls: HashMap::from([("kernel.panic".into(), "1".into())]),
        ..Default::default()
    });
    let err = cri
        .run_pod_sandbox(run_request(config))
        .await
        .expect_err("ran");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("kernel.panic"), "{}", err.message());

    let mut request = run_request(pod_config("bad"));
    request.runtime_handler = "kata".into();
    let err = cri.run_pod_sandbox(request).await.expect_err("ran");
    assert!(
        err.message().contains("runtime_handler"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found_for_status_and_fine_for_stop_and_remove() {
    let pierd = pierd_with_network().await;
    let mut cri = pierd.cri().await.runtime;
    let id = "0".repeat(64);
    let err = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect_err("status of nothing");
    assert_eq!(err.code(), tonic::Code::NotFound);
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .expect("stop");
    cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_ready_sandboxes_and_marks_broken_ones_not_ready() {
    let mut pierd = pierd_with_network().await;
    let mut cri = pierd.cri().await.runtime;
    let kept = run_pod(&mut cri, pod_config("kept")).await;
    let broken = run_pod(&mut cri, pod_config("broken")).await;
    drop(cri);

    pierd.kill();
    // What a reboot or an operator does to a pod while pierd is away.
    let pin = pierd.runroot().join("netns").join(&broken);
    nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH).expect("unmount pin");
    pierd.restart().await;

    let mut cri = pierd.cri().await.runtime;
    let state = |id: &str| PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    };
    let kept_status = cri
        .pod_sandbox_status(state(&kept))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        kept_status.status.expect("status").state,
        PodSandboxState::SandboxReady as i32
    );
    let broken_status = cri
        .pod_sandbox_status(state(&broken))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        broken_status.status.expect("status").state,
        PodSandboxState::SandboxNotready as i32
    );
    for id in [kept, broken] {
        cri.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .expect("remove");
    }
    assert!(
        mounts_under(&pierd.runroot()).is_empty(),
        "{:?}",
        mounts_under(&pierd.runroot())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_cleans_up_pods_a_failing_test_left_behind() {
    let pierd = pierd_with_network().await;
    let mut cri = pierd.cri().await.runtime;
    let _abandoned = run_pod(&mut cri, pod_config("abandoned")).await;
    let dir = pierd.root().parent().expect("fixture dir").to_owned();
    assert!(!mounts_under(&dir).is_empty(), "the pod has mounts");
    drop(cri);
    drop(pierd);
    assert!(mounts_under(&dir).is_empty(), "{:?}", mounts_under(&dir));
    assert!(!dir.exists(), "fixture dir left behind");
}
