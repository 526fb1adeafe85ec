//! What exec probes cost a runtime: CPU per ExecSync of `true` (the
//! runtime's processes only: daemon, monitors or shims, runc and helpers),
//! and a node's worth of probes: many pods, each exec-probed every second.

use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::Cri;
use tokio::time::MissedTickBehavior;

use crate::measure::{run_pod, sleeper_pods, start_sleeper};
use crate::procs;

/// Sequential ExecSync of `true` in one running container.
pub struct ExecCpu {
    pub latencies: Vec<Duration>,
    /// Runtime CPU over all of them.
    pub cpu: Duration,
}

/// Many pods probed at once for a while.
pub struct NodeProbes {
    pub pods: usize,
    pub seconds: u64,
    /// Probes that ran, and those that failed.
    pub execs: usize,
    pub failed: usize,
    /// Runtime CPU over the whole window.
    pub cpu: Duration,
    /// Probe latencies.
    pub latencies: Vec<Duration>,
}

fn cpu_since(start: u64, daemon: u32, dir: &std::path::Path) -> Duration {
    let ticks = procs::cpu_ticks(daemon, dir).saturating_sub(start);
    Duration::from_secs_f64(ticks as f64 / procs::ticks_per_second() as f64)
}

async fn exec_true(cri: &mut Cri, id: &str) -> Result<Duration, tonic::Status> {
    let t = Instant::now();
    let out = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            timeout: 10,
        })
        .await?
        .into_inner();
    if out.exit_code != 0 {
        return Err(tonic::Status::unknown(format!("exit {}", out.exit_code)));
    }
    Ok(t.elapsed())
}

/// Stops and removes the pods `ids`, ignoring what is already gone.
pub async fn remove_pods(cri: &mut Cri, ids: Vec<String>) {
    for id in ids {
        let _ = cri
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        let _ = cri
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await;
    }
}

/// `n` ExecSync of `true`, one after the other, in one sleeping container.
pub async fn exec_cpu(
    cri: &mut Cri,
    image: &str,
    daemon: u32,
    dir: &std::path::Path,
    n: usize,
) -> ExecCpu {
    let (pod_id, config) = run_pod(cri, 0, "exec-cpu").await;
    let id = start_sleeper(cri, &pod_id, &config, image, 0).await;
    // Warm-up: the first exec of a container may set up what later reuse.
    exec_true(cri, &id).await.expect("ExecSync");
    let start = procs::cpu_ticks(daemon, dir);
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        latencies.push(exec_true(cri, &id).await.expect("ExecSync"));
    }
    let cpu = cpu_since(start, daemon, dir);
    remove_pods(cri, vec![pod_id]).await;
    ExecCpu { latencies, cpu }
}

/// `pods` pods with a sleeping container each; every container gets an
/// ExecSync of `true` every second for `seconds` s (a probe that is late
/// skips the ticks it missed, as kubelet's prober does).
pub async fn node(
    cri: &mut Cri,
    image: &str,
    daemon: u32,
    dir: &std::path::Path,
    pods: usize,
    seconds: u64,
) -> NodeProbes {
    let (pod_ids, containers) = sleeper_pods(cri, image, pods, "probe").await;
    let start = procs::cpu_ticks(daemon, dir);
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = containers
        .into_iter()
        .enumerate()
        .map(|(n, id)| {
            let mut cri = cri.clone();
            tokio::spawn(async move {
                // Spread the pods over the second, as kubelet's probers are.
                let offset = Duration::from_millis((n as u64 * 1000) / pods.max(1) as u64);
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + offset,
                    Duration::from_secs(1),
                );
                tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
                let (mut ok, mut failed) = (Vec::new(), 0usize);
                loop {
                    tick.tick().await;
                    if tokio::time::Instant::now() >= until {
                        break;
                    }
                    match exec_true(&mut cri, &id).await {
                        Ok(d) => ok.push(d),
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for task in tasks {
        let (ok, bad) = task.await.expect("probe task");
        latencies.extend(ok);
        failed += bad;
    }
    let cpu = cpu_since(start, daemon, dir);
    remove_pods(cri, pod_ids).await;
    NodeProbes {
        pods,
        seconds,
        execs: latencies.len() + failed,
        failed,
        cpu,
        latencies,
    }
}
