//! Containers end to end: pulled busybox images run under runc through the
//! monitor, with logs, exit codes, exec, stop and restart reattachment.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::{ImageSpec as TestImage, Pierd, PierdOptions, Registry, TestNetwork};

type Runtime = k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// A pierd that trusts the test registry, with a busybox image pulled.
async fn setup(registry: &Registry) -> (Pierd, String) {
    let pushed = TestImage::default().push(registry, "tests/busybox:1").await;
    let pierd = Pierd::start_with(PierdOptions {
        network: Some(TestNetwork::new()),
        args: vec!["--insecure-registry".into(), registry.host()],
        ..Default::default()
    })
    .await;
    let mut images = pierd.cri().await.images;
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: pushed.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("PullImage");
    (pierd, pushed.reference)
}

fn pod(name: &str, log_dir: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "pier-tests".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        ..Default::default()
    }
}

fn container(name: &str, image: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("app".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run(
    cri: &mut Runtime,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let created = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: created.clone(),
    })
    .await
    .expect("StartContainer");
    created
}

async fn status(cri: &mut Runtime, id: &str) -> ContainerStatus {
    let response = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus");
    response.into_inner().status.expect("status")
}

async fn wait_exited(cri: &mut Runtime, id: &str, within: Duration) -> ContainerStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = status(cri, id).await;
        if status.state == ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?} after {within:?}",
            status.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_runs_logs_and_exits_with_its_code() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let pod = pod("logs", logs.path());
    let mut cri = pierd.cri().await.runtime;
    let pod_id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
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
    let pod = pod("exec", logs.path());
    let mut cri = pierd.cri().await.runtime;
    let pod_id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
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
async fn exits_while_pierd_is_down_are_recorded_after_restart() {
    let registry = Registry::start();
    let (mut pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let pod = pod("restart", logs.path());
    let mut cri = pierd.cri().await.runtime;
    let pod_id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let short = run(
        &mut cri,
        &pod_id,
        &pod,
        container("short", &image, "sleep 1; exit 5"),
    )
    .await;
    let long = run(
        &mut cri,
        &pod_id,
        &pod,
        container("long", &image, "exec sleep 1000"),
    )
    .await;
    drop(cri);
    pierd.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pierd.restart().await;

    let mut cri = pierd.cri().await.runtime;
    let short_status = wait_exited(&mut cri, &short, Duration::from_secs(5)).await;
    assert_eq!(short_status.exit_code, 5, "the real exit code, not a guess");
    let long_status = status(&mut cri, &long).await;
    assert_eq!(
        long_status.state,
        ContainerState::ContainerRunning as i32,
        "kept running"
    );
    cri.stop_container(StopContainerRequest {
        container_id: long.clone(),
        timeout: 0,
    })
    .await
    .expect("stop after restart");
    assert_eq!(status(&mut cri, &long).await.exit_code, 137);
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
}

/// A running pod with the given port mappings, DNS and cgroup parent left default.
async fn running_pod(cri: &mut Runtime, mut pod: PodSandboxConfig) -> (String, PodSandboxConfig) {
    pod.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.pier.test".into()],
        options: vec!["ndots:2".into()],
    });
    let id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    (id, pod)
}

async fn exec_out(cri: &mut Runtime, id: &str, script: &str) -> (i32, String) {
    let out = cri
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_containers_survive_a_pierd_crash_with_real_exits_and_gapless_logs() {
    let registry = Registry::start();
    let (mut pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("crash", logs.path())).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        // Even ones count for a while and exit with their own code, some of
        // them while pierd is down or starting; odd ones count on.
        let script = if n % 2 == 0 {
            format!(
                "i=0; while [ $i -lt {} ]; do echo line-$i; i=$((i+1)); sleep 0.1; done; exit {}",
                10 + n * 2,
                n + 1
            )
        } else {
            "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.1; done".to_owned()
        };
        ids.push(
            run(
                &mut cri,
                &pod_id,
                &pod,
                container(&format!("c{n}"), &image, &script),
            )
            .await,
        );
    }
    drop(cri);
    pierd.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pierd.restart().await;

    let mut cri = pierd.cri().await.runtime;
    for (n, id) in ids.iter().enumerate() {
        if n % 2 == 0 {
            let status = wait_exited(&mut cri, id, Duration::from_secs(20)).await;
            assert_eq!(status.exit_code, n as i32 + 1, "container c{n}");
        } else {
            assert_eq!(
                status(&mut cri, id).await.state,
                ContainerState::ContainerRunning as i32,
                "c{n}"
            );
        }
    }
    for (n, id) in ids.iter().enumerate().filter(|(n, _)| n % 2 == 1) {
        cri.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("stop");
        // Every line the container wrote is in the log, in order, once.
        let log = std::fs::read_to_string(logs.path().join(format!("c{n}/0.log"))).expect("log");
        let counts: Vec<u64> = log
            .lines()
            .filter_map(|l| l.rsplit(' ').next()?.strip_prefix("line-")?.parse().ok())
            .collect();
        assert!(counts.len() > 30, "c{n} logged only {} lines", counts.len());
        for (expected, got) in counts.iter().enumerate() {
            assert_eq!(*got, expected as u64, "c{n}: gap or duplicate in the log");
        }
    }
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("rmp");
}
