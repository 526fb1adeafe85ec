//! Containers across pierd crashes: monitors keep them running, exit files
//! keep their real exit codes, logs keep every line.

use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::Registry;
use pier_tests::workload::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_while_pierd_is_down_are_recorded_after_restart() {
    let registry = Registry::start();
    let (mut pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("restart", logs.path())).await;
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
    // runc state of a container pier does not know, as a crash between a
    // removal's row delete and its runtime delete would leave: made with
    // runc itself from the long container's bundle.
    let runtime_root = pierd.runroot().join("runtime/runc");
    let orphan = "0".repeat(64);
    let bundle = pierd.root().join("orphan-bundle");
    std::fs::create_dir_all(&bundle).expect("orphan bundle");
    let spec_path = pierd
        .root()
        .join("containers")
        .join(&long)
        .join("bundle/config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spec_path).expect("long's spec")).expect("spec");
    // A cgroup of its own: deleting the orphan must not touch `long`.
    spec["linux"]["cgroupsPath"] =
        serde_json::json!(format!("/pier-test-orphan-{}", std::process::id()));
    std::fs::write(bundle.join("config.json"), spec.to_string()).expect("write spec");
    let created = std::process::Command::new("runc")
        .arg("--root")
        .arg(&runtime_root)
        .args(["create", "--bundle"])
        .arg(&bundle)
        .arg(&orphan)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("runc create");
    assert!(created.success(), "runc create of the orphan");
    tokio::time::sleep(Duration::from_secs(2)).await;
    pierd.restart().await;

    let mut cri = pierd.cri().await.runtime;
    let short_status = wait_exited(&mut cri, &short, Duration::from_secs(5)).await;
    assert_eq!(short_status.exit_code, 5, "the real exit code, not a guess");
    // The runtime state of exited and unknown containers is deleted.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while runtime_root.join(&short).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "runc state of an exited container kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        runtime_root.join(&long).exists(),
        "a running container keeps its state"
    );
    assert!(
        !runtime_root.join(&orphan).exists(),
        "unknown runtime state is deleted"
    );
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
