//! Pods whose containers share one PID namespace (`shareProcessNamespace`):
//! held by a `pier-infra` process that is PID 1 there, unprivileged, and gone
//! with the pod.

use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::Registry;
use pier_tests::workload::*;

fn with_pid(mut config: PodSandboxConfig, mode: NamespaceMode) -> PodSandboxConfig {
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// A container that names no PID mode, as critest's are: it follows its pod.
fn unspecified(name: &str, image: &str, script: &str) -> ContainerConfig {
    let mut config = container(name, image, script);
    config.linux = None;
    config
}

/// The host pids of the processes running `pier-infra` with a root under `dir`.
fn infra_under(dir: &std::path::Path) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let rooted =
            std::fs::read_link(entry.path().join("root")).is_ok_and(|r| r.starts_with(dir));
        if rooted && String::from_utf8_lossy(&cmdline).contains("pier-infra") {
            found.push(pid);
        }
    }
    found
}

fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
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
async fn containers_of_a_pod_share_a_pid_namespace_held_by_an_unprivileged_infra() {
    let registry = Registry::start();
    let (mut pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let config = with_pid(pod("shared", logs.path()), NamespaceMode::Pod);
    let (pod_id, config) = running_pod(&mut cri, config).await;

    let infra = infra_under(&pierd.runroot());
    assert_eq!(infra.len(), 1, "one pier-infra for the pod: {infra:?}");
    let infra = infra[0];
    assert_eq!(status_field(infra, "Uid:"), "65535\t65535\t65535\t65535");
    assert_eq!(status_field(infra, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(infra, "NoNewPrivs:"), "1");

    let first = run(
        &mut cri,
        &pod_id,
        &config,
        unspecified("first", &image, "exec sleep 4242"),
    )
    .await;
    let second = run(
        &mut cri,
        &pod_id,
        &config,
        unspecified("second", &image, "exec sleep 4343"),
    )
    .await;
    let (code, pid1) = exec_out(&mut cri, &second, "cat /proc/1/cmdline").await;
    assert_eq!(code, 0);
    assert!(pid1.contains("pier-infra"), "PID 1 is the infra: {pid1:?}");
    let (_, seen) = exec_out(&mut cri, &second, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    assert!(
        seen.contains("sleep 4242"),
        "second sees first's process: {seen}"
    );
    // The infra's root is the host's no more, and it cannot be inspected.
    let (code, _) = exec_out(&mut cri, &second, "/bin/ls /proc/1/root/").await;
    assert_ne!(
        code, 0,
        "/proc/1/root must not be readable from a container"
    );

    // A restarted pierd finds the pod still ready, held by the same infra.
    pierd.terminate();
    pierd.restart().await;
    let mut cri = pierd.cri().await.runtime;
    assert_eq!(
        pod_state(&mut cri, &pod_id).await,
        PodSandboxState::SandboxReady as i32
    );
    assert_eq!(infra_under(&pierd.runroot()), [infra]);

    // The main process of a container exits: what it started goes too.
    let leaver = run(
        &mut cri,
        &pod_id,
        &config,
        unspecified("leaver", &image, "sleep 4545 & sleep 0.3"),
    )
    .await;
    wait_exited(&mut cri, &leaver, Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, seen) =
            exec_out(&mut cri, &second, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
        if !seen.contains("sleep 4545") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaver's child outlived it: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cri.stop_container(StopContainerRequest {
        container_id: first.clone(),
        timeout: 5,
    })
    .await
    .expect("stop first");

    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop pod");
    assert!(
        infra_under(&pierd.runroot()).is_empty(),
        "infra ended with the pod"
    );
    wait_exited(&mut cri, &second, Duration::from_secs(5)).await;
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("remove pod");
    assert!(
        std::fs::read_dir(pierd.runroot().join("pidns"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "the PID namespace pin is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_infra_dies_is_not_ready_and_its_containers_exit() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let config = with_pid(pod("doomed", logs.path()), NamespaceMode::Pod);
    let (pod_id, config) = running_pod(&mut cri, config).await;
    let id = run(
        &mut cri,
        &pod_id,
        &config,
        unspecified("victim", &image, "exec sleep 1000"),
    )
    .await;
    let infra = infra_under(&pierd.runroot());
    assert_eq!(infra.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(infra[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill infra");
    let status = wait_exited(&mut cri, &id, Duration::from_secs(5)).await;
    assert_eq!(status.exit_code, 137, "killed with its PID namespace");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pod_state(&mut cri, &pod_id).await != PodSandboxState::SandboxNotready as i32 {
        assert!(
            Instant::now() < deadline,
            "pod still ready without its infra"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("remove pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_pid_mode_runs_no_infra_and_the_container_is_pid_1() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let config = with_pid(pod("own", logs.path()), NamespaceMode::Container);
    let (pod_id, config) = running_pod(&mut cri, config).await;
    assert!(infra_under(&pierd.runroot()).is_empty());
    let id = run(
        &mut cri,
        &pod_id,
        &config,
        unspecified("alone", &image, "exec sleep 4444"),
    )
    .await;
    let (_, pid1) = exec_out(&mut cri, &id, "cat /proc/1/cmdline | tr '\\0' ' '").await;
    assert_eq!(pid1.trim(), "sleep 4444");
    // Asking for the pod's namespace in a pod that has none is refused.
    let mut shared = container("wants-pod", &image, "sleep 1");
    if let Some(options) = shared
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        options.pid = NamespaceMode::Pod as i32;
    }
    let err = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(shared),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect_err("POD without a pod namespace");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("namespace_options.pid"),
        "{}",
        err.message()
    );
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("remove pod");
}
