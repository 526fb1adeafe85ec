//! pier-scale-bench: a node packed with running containers. Starts PODS
//! pods with PER_POD busybox sleepers each on a private pierd, then
//! reports pierd's own memory (RSS and PSS), the time of ListContainers
//! and ListContainerStats at that size, and how long pierd takes after a
//! SIGKILL to be ready again: Status says RuntimeReady and ListContainers
//! lists every container running, and then until the verbose
//! ContainerStatus of every one gives the pid it had before the crash.
//! With `--containerd`, the same pods on a private containerd for its
//! list times. Run as root from the workspace:
//!
//!     cargo build --release -p pierd -p pier-monitor -p pier-cri-bench --bins
//!     target/release/pier-scale-bench [PODS] [PER_POD] [RESTARTS] [--containerd]
//!
//! Defaults: 500 pods of one container (each container's pod is one more
//! sandbox for the restart to reconcile: the hardest shape for 500
//! containers), 3 restarts.

#![allow(clippy::print_stdout, reason = "the report is what a benchmark prints")]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_cri_bench::measure::ms;
use pier_cri_bench::procs::pss_kb;
use pier_cri_bench::{Memory, arg, containerd::Containerd, flag, pierd_dir};
use pier_tests::workload::{self, Runtime, container, pod, pod_security};
use pier_tests::{Cri, Pierd, Registry, TestNetwork};

/// Pods started at once while filling the node.
const FILL_PARALLEL: usize = 8;
/// Calls per list figure.
const LIST_CALLS: usize = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (pods, per_pod, restarts) = (arg(1, 500usize), arg(2, 1usize), arg(3, 3usize));
    let total = pods * per_pod;
    pier_cri_bench::use_sibling_binaries();
    let registry = Registry::start();
    let (pause, image) = pier_cri_bench::bench_images(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");

    let mut pier = Pierd::start_with(pier_cri_bench::pierd_options(
        &registry,
        TestNetwork::wide(230),
    ))
    .await;
    workload::pull(&pier, &image).await;
    let pid = pier.pid().unwrap_or(0);
    // pierd trims its heap every 5 s: read it settled, as after the fill.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = Memory::of(pid);
    eprintln!("starting {pods} pods x {per_pod} containers on pier...");
    let started = Instant::now();
    fill(pier.socket(), &image, logs.path(), pods, per_pod).await;
    let fill_time = started.elapsed();
    // Let exit watchers, stats caches and allocators settle.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut cri = pier.cri().await.runtime;
    let pids = container_pids(&mut cri).await;
    assert_eq!(pids.len(), total, "containers running on pier");
    let loaded = Memory::of(pid);
    let with_monitors = pss_kb(pid, &pierd_dir(&pier));
    let (list, list_stats) = list_times(&mut cri, total).await;
    drop(cri);

    println!("\n{pods} pods x {per_pod} containers = {total} running containers");
    println!("filled in {:.1} s", fill_time.as_secs_f64());
    println!("pierd memory: idle {idle}; with {total} containers {loaded}");
    println!(
        "PSS of pierd and every process it keeps (monitors, no workload), kB: {with_monitors} \
         ({} per container)",
        with_monitors.saturating_sub(idle.pss) / total.max(1) as u64
    );
    println!(
        "pier ListContainers p50 {} ms, ListContainerStats p50 {} ms ({LIST_CALLS} calls each)",
        ms(list),
        ms(list_stats)
    );

    for round in 1..=restarts {
        pier.kill();
        let killed = Instant::now();
        pier.restart().await;
        let serving = killed.elapsed();
        let mut cri = pier.cri().await.runtime;
        let ready = wait_ready(&mut cri, total, killed).await;
        let again = container_pids(&mut cri).await;
        let with_pids = killed.elapsed();
        assert_eq!(
            again, pids,
            "the containers and their pids after restart {round}"
        );
        let memory = Memory::of(pier.pid().unwrap_or(0));
        println!(
            "restart {round} after SIGKILL: serving {} ms, ready (RuntimeReady, {total} listed \
             running) {} ms, every pid from ContainerStatus {} ms; pierd {memory}",
            ms(serving),
            ms(ready),
            ms(with_pids)
        );
    }
    let mut cri = pier.cri().await.runtime;
    let started = Instant::now();
    remove_all(&mut cri).await;
    println!(
        "pier removed every pod in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(cri);
    drop(pier);

    if flag("containerd") {
        let containerd =
            Containerd::start_on(&registry.host(), &pause, TestNetwork::wide(231)).await;
        let mut cri = Cri::connect(&containerd.socket()).await.expect("connect");
        for reference in [&pause, &image] {
            let request = PullImageRequest {
                image: Some(ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            cri.images.pull_image(request).await.expect("pull");
        }
        eprintln!("starting {pods} pods x {per_pod} containers on containerd...");
        let started = Instant::now();
        fill(&containerd.socket(), &image, logs.path(), pods, per_pod).await;
        let fill_time = started.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (list, list_stats) = list_times(&mut cri.runtime, total).await;
        println!(
            "containerd: filled in {:.1} s; ListContainers p50 {} ms, ListContainerStats p50 {} ms",
            fill_time.as_secs_f64(),
            ms(list),
            ms(list_stats)
        );
        remove_all(&mut cri.runtime).await;
    }
}

/// Runs `pods` pods of `per_pod` sleeping containers, a few pods at a time.
async fn fill(socket: &Path, image: &str, logs: &Path, pods: usize, per_pod: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..FILL_PARALLEL {
        let (socket, image, logs) = (socket.to_owned(), image.to_owned(), logs.to_owned());
        tasks.spawn(async move {
            let mut cri = Cri::connect(&socket).await.expect("connect").runtime;
            for n in (lane..pods).step_by(FILL_PARALLEL) {
                let name = format!("scale-{n}");
                let dir = logs.join(&name);
                std::fs::create_dir_all(&dir).expect("pod log dir");
                let mut config = pod(&name, &dir);
                pod_security(&mut config).namespace_options = Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                });
                let id = workload::run_pod(&mut cri, &config).await;
                for c in 0..per_pod {
                    let sleeper = container(&format!("c{c}"), &image, "exec sleep 100000");
                    workload::run(&mut cri, &id, &config, sleeper).await;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a fill lane");
    }
}

/// Every container's pid, from its verbose status, by container id.
async fn container_pids(cri: &mut Runtime) -> HashMap<String, i32> {
    let listed = cri
        .list_containers(ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    let mut pids = HashMap::new();
    for container in listed {
        let pid = workload::host_pid(cri, &container.id).await;
        assert!(pid > 0, "container {} has no pid", container.id);
        pids.insert(container.id, pid);
    }
    pids
}

/// Medians of ListContainers and ListContainerStats, each checked to list
/// all `total` containers.
async fn list_times(cri: &mut Runtime, total: usize) -> (Duration, Duration) {
    let (mut list, mut stats) = (Vec::new(), Vec::new());
    for _ in 0..LIST_CALLS {
        let t = Instant::now();
        let listed = cri
            .list_containers(ListContainersRequest::default())
            .await
            .expect("ListContainers");
        list.push(t.elapsed());
        assert_eq!(listed.into_inner().containers.len(), total);
        let t = Instant::now();
        let listed = cri
            .list_container_stats(ListContainerStatsRequest::default())
            .await
            .expect("ListContainerStats");
        stats.push(t.elapsed());
        assert_eq!(listed.into_inner().stats.len(), total);
    }
    list.sort();
    stats.sort();
    (list[list.len() / 2], stats[stats.len() / 2])
}

/// Polls until Status says RuntimeReady and ListContainers lists `total`
/// containers, all running; returns the time since `since`.
async fn wait_ready(cri: &mut Runtime, total: usize, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = cri.status(StatusRequest::default()).await;
        let runtime_ready = status
            .ok()
            .and_then(|s| s.into_inner().status)
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "RuntimeReady" && c.status)
            });
        if runtime_ready {
            let listed = cri
                .list_containers(ListContainersRequest::default())
                .await
                .map(|r| r.into_inner().containers)
                .unwrap_or_default();
            let running = listed
                .iter()
                .filter(|c| c.state == ContainerState::ContainerRunning as i32)
                .count();
            if running == total {
                return since.elapsed();
            }
        }
        assert!(Instant::now() < deadline, "pierd not ready after 120 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops and removes every pod.
async fn remove_all(cri: &mut Runtime) {
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    for p in pods {
        workload::remove_pod(cri, &p.id).await;
    }
}
