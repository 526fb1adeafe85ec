//! Containers end to end: pulled busybox images run under runc through the
//! monitor, with logs, exit codes, exec, stop, networking and clean removal.

use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::workload::*;
use pier_tests::{ImageSpec as TestImage, Pierd, PierdOptions, Registry, TestNetwork};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_runs_logs_and_exits_with_its_code() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("logs", logs.path())).await;
    let id = run(
        &mut cri,
        &pod_id,
        &pod,
        container("talk", &image, "echo hello; echo oops >&2; exit 3"),
    )
    .await;
    let status = wait_exited(&mut cri, &id, Duration::from_secs(10)).await;
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.reason, "Error");
    assert!(status.finished_at >= status.started_at && status.started_at > 0);
    let log = std::fs::read_to_string(logs.path().join("talk/0.log")).expect("log file");
    assert!(log.lines().any(|l| l.ends_with(" stdout F hello")), "{log}");
    assert!(log.lines().any(|l| l.ends_with(" stderr F oops")), "{log}");
    // Its exit released the rootfs; the writable layer stays for its stats.
    let merged = pierd.dir().join("root/containers").join(&id).join("merged");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(&format!(" {} ", merged.display())),
        "{} is still mounted after the exit",
        merged.display()
    );
    let stats = cri
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("stats of an exited container")
        .into_inner()
        .stats
        .expect("stats");
    assert!(
        stats
            .writable_layer
            .is_some_and(|l| l.inodes_used.is_some())
    );

    let listed = cri
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("list");
    assert_eq!(listed.into_inner().containers.len(), 1);
    cri.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("remove");
    cri.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("remove again");
    assert!(
        logs.path().join("talk/0.log").exists(),
        "the log outlives the container"
    );
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_and_stop_with_timeout() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("exec", logs.path())).await;
    let id = run(
        &mut cri,
        &pod_id,
        &pod,
        container("sleeper", &image, "exec sleep 1000"),
    )
    .await;
    let running = status(&mut cri, &id).await;
    assert_eq!(running.state, ContainerState::ContainerRunning as i32);

    let exec = |cmd: &[&str]| ExecSyncRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    };
    let out = cri
        .exec_sync(exec(&["/bin/sh", "-c", "echo hi; echo err >&2; exit 7"]))
        .await;
    let out = out.expect("ExecSync").into_inner();
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 7);

    // sleep as PID 1 ignores SIGTERM: the stop timeout must end in SIGKILL.
    let t = Instant::now();
    cri.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .expect("StopContainer");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t.elapsed()
    );
    let stopped = status(&mut cri, &id).await;
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
    assert_eq!(stopped.exit_code, 137);
    cri.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("stop is idempotent");
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
    let gone = cri
        .container_status(ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await;
    assert_eq!(
        gone.expect_err("removed with its pod").code(),
        tonic::Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_containers_share_localhost_dns_and_a_mapped_port() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let gateway = format!("{}.1", pierd.network().expect("network").subnet_prefix);
    let host_port = pier_tests::free_port();
    let logs = tempfile::tempdir().expect("tempdir");
    let mut config = pod("net", logs.path());
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, config).await;
    let server_script = "while true; do echo pier-says-hi | nc -l -p 8080; done";
    let server = run(
        &mut cri,
        &pod_id,
        &pod,
        container("server", &image, server_script),
    )
    .await;
    let client = run(
        &mut cri,
        &pod_id,
        &pod,
        container("client", &image, "exec sleep 1000"),
    )
    .await;

    // The two containers share the pod's network namespace.
    let mut reply = String::new();
    for _ in 0..50 {
        reply = exec_out(&mut cri, &client, "nc 127.0.0.1 8080 </dev/null")
            .await
            .1;
        if reply.contains("pier-says-hi") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reply.contains("pier-says-hi"),
        "localhost between containers: {reply:?}"
    );

    // The pod's DNS config and hostname are what the containers see.
    let (_, resolv) = exec_out(&mut cri, &client, "cat /etc/resolv.conf").await;
    assert!(
        resolv.contains("nameserver 10.96.0.10") && resolv.contains("search svc.pier.test"),
        "{resolv}"
    );
    let (_, hostname) = exec_out(&mut cri, &client, "hostname").await;
    assert_eq!(hostname.trim(), "net");

    // The mapped host port reaches the server through the portmap plugin.
    let mut got = String::new();
    for _ in 0..50 {
        if let Ok(mut stream) = std::net::TcpStream::connect((gateway.as_str(), host_port)) {
            use std::io::Read;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.read_to_string(&mut got);
            if got.contains("pier-says-hi") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        got.contains("pier-says-hi"),
        "host port {host_port} on {gateway}: {got:?}"
    );
    for id in [server, client] {
        cri.remove_container(RemoveContainerRequest { container_id: id })
            .await
            .expect("rm");
    }
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_container_requests_are_refused_clearly() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("bad", logs.path())).await;
    let create = |config: ContainerConfig, sandbox: &str| CreateContainerRequest {
        pod_sandbox_id: sandbox.into(),
        config: Some(config),
        sandbox_config: Some(pod.clone()),
    };
    let missing_image = container("x", "127.0.0.1:1/never/pulled:1", "true");
    let err = cri
        .create_container(create(missing_image, &pod_id))
        .await
        .expect_err("created");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("never/pulled"), "{}", err.message());
    let err = cri
        .create_container(create(container("x", &image, "true"), "nope"))
        .await
        .expect_err("created");
    assert_eq!(err.code(), tonic::Code::NotFound);

    let first = run(
        &mut cri,
        &pod_id,
        &pod,
        container("dup", &image, "exec sleep 1000"),
    )
    .await;
    let err = cri
        .create_container(create(container("dup", &image, "true"), &pod_id))
        .await
        .expect_err("dup");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains(&first), "{}", err.message());

    let err = cri
        .container_status(ContainerStatusRequest {
            container_id: "0".repeat(64),
            verbose: false,
        })
        .await
        .expect_err("status");
    assert_eq!(err.code(), tonic::Code::NotFound);
    cri.stop_container(StopContainerRequest {
        container_id: "0".repeat(64),
        timeout: 0,
    })
    .await
    .expect("stop");
    cri.remove_container(RemoveContainerRequest {
        container_id: "0".repeat(64),
    })
    .await
    .expect("rm");
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
    let leftover = std::fs::read_dir(pierd.runroot().join("containers"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftover, 0, "container run dirs left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pod_lifecycle_leaks_nothing() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("leak", logs.path())).await;
    let a = run(
        &mut cri,
        &pod_id,
        &pod,
        container("a", &image, "exec sleep 1000"),
    )
    .await;
    let b = run(&mut cri, &pod_id, &pod, container("b", &image, "exit 0")).await;
    wait_exited(&mut cri, &b, Duration::from_secs(10)).await;
    let monitor = {
        let response = cri
            .container_status(ContainerStatusRequest {
                container_id: a.clone(),
                verbose: true,
            })
            .await
            .expect("status");
        let info: serde_json::Value =
            serde_json::from_str(&response.into_inner().info["info"]).expect("info json");
        info["monitorPid"].as_i64().expect("monitor pid")
    };
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stopp");
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");

    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = pierd
        .root()
        .parent()
        .expect("fixture dir")
        .display()
        .to_string();
    let mounts: Vec<&str> = table.lines().filter(|l| l.contains(&dir)).collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    for kind in ["netns", "ipcns", "utsns", "containers", "sandboxes"] {
        let left = std::fs::read_dir(pierd.runroot().join(kind))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{kind} entries left");
    }
    // Gone, or an exited process init has not reaped yet.
    let stat = std::fs::read_to_string(format!("/proc/{monitor}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("gone");
    assert!(
        matches!(state, "gone" | "Z" | "X"),
        "monitor {monitor} still runs ({state})"
    );
    for id in [&a, &b] {
        let cgroup = format!("/sys/fs/cgroup/memory/pier/pier-{id}");
        assert!(
            !std::path::Path::new(&cgroup).exists(),
            "cgroup {cgroup} left"
        );
    }
    let list = cri
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("list");
    assert!(list.into_inner().containers.is_empty());
}

/// pierd starts and deletes runc containers itself
/// (daemon/src/host/runc_direct.rs): runc must see what `runc start` and
/// `runc delete` would have left, and a container whose init died before
/// its start gets a clear error at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_delete_leave_what_runc_leaves() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("start", logs.path())).await;
    let runc_state = |id: &str| {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(pierd.runroot().join("runtime/runc"))
            .args(["state", id])
            .output()
            .expect("runc state");
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        state["status"].as_str().unwrap_or("none").to_owned()
    };
    let init_pid = |info: &str| {
        let info: serde_json::Value = serde_json::from_str(info).expect("info json");
        info["pid"].as_i64().expect("init pid") as i32
    };

    let a = create(
        &mut cri,
        &pod_id,
        &pod,
        container("a", &image, "exec sleep 1000"),
    )
    .await;
    assert_eq!(runc_state(&a), "created");
    start(&mut cri, &a).await;
    assert_eq!(runc_state(&a), "running");
    assert_eq!(
        status(&mut cri, &a).await.state,
        ContainerState::ContainerRunning as i32
    );
    let out = cri
        .exec_sync(ExecSyncRequest {
            container_id: a.clone(),
            cmd: vec!["/bin/sh".into(), "-c".into(), "cat /proc/1/cmdline".into()],
            timeout: 10,
        })
        .await
        .expect("exec")
        .into_inner();
    assert_eq!(
        out.stdout, b"sleep\x001000\x00",
        "the init exec'd the container's process"
    );

    let b = create(
        &mut cri,
        &pod_id,
        &pod,
        container("b", &image, "exec sleep 1000"),
    )
    .await;
    let info = cri
        .container_status(ContainerStatusRequest {
            container_id: b.clone(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner()
        .info;
    let pid = init_pid(&info["info"]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
        .expect("kill the init");
    let began = Instant::now();
    let refused = cri
        .start_container(StartContainerRequest {
            container_id: b.clone(),
        })
        .await
        .expect_err("a container whose init is gone cannot start");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(
        refused.message().contains("has ended") || refused.message().contains("stopped"),
        "{}",
        refused.message()
    );

    // Once stopped, pierd deletes it as `runc delete` would: runc knows
    // it no more, and no hierarchy keeps its cgroup.
    cri.stop_container(StopContainerRequest {
        container_id: a.clone(),
        timeout: 0,
    })
    .await
    .expect("stop");
    let deadline = Instant::now() + Duration::from_secs(10);
    while runc_state(&a) != "none" {
        assert!(
            Instant::now() < deadline,
            "runc still has {a}: {}",
            runc_state(&a)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup hierarchies")
        .flatten()
        .map(|h| h.path().join(format!("pier/pier-{a}")))
        .filter(|cgroup| cgroup.exists())
        .collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
    for id in [a, b] {
        cri.remove_container(RemoveContainerRequest { container_id: id })
            .await
            .expect("remove");
    }
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
}

/// Monitor sockets live at `<runroot>/containers/<64 hex>/monitor.sock`; this
/// run root puts them past the 107 bytes a socket address holds, and runc's
/// console socket for a terminal with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_root_runs_terminal_containers_and_survives_a_restart() {
    let registry = Registry::start();
    let pushed = TestImage::default()
        .push(&registry, "tests/busybox:1")
        .await;
    let mut pierd = Pierd::start_with(PierdOptions {
        network: Some(TestNetwork::new()),
        args: vec!["--insecure-registry".into(), registry.host()],
        runroot: Some(format!("run/{}", "r".repeat(90)).into()),
        ..Default::default()
    })
    .await;
    let socket = pierd.runroot().join("containers").join("0".repeat(64));
    assert!(socket.join("monitor.sock").as_os_str().len() > 107);
    pull(&pierd, &pushed.reference).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("longrun", logs.path())).await;
    let mut config = container("tty", &pushed.reference, "echo ready; exec sleep 1000");
    config.tty = true;
    config.stdin = true;
    let id = run(&mut cri, &pod_id, &pod, config).await;
    assert_eq!(
        exec_out(&mut cri, &id, "echo $((6*7))").await,
        (0, "42\n".into())
    );
    let log_path = logs.path().join("tty/0.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("ready")) {
        assert!(
            Instant::now() < deadline,
            "no terminal output in {log_path:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pierd.terminate();
    pierd.restart().await;
    let mut cri = pierd.cri().await.runtime;
    let state = status(&mut cri, &id).await.state;
    assert_eq!(state, ContainerState::ContainerRunning as i32);
    assert_eq!(
        exec_out(&mut cri, &id, "echo again").await,
        (0, "again\n".into())
    );
    remove_pod(&mut cri, &pod_id).await;
}
