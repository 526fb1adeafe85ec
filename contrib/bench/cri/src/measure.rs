//! Timing pod lifecycles and measuring memory on one CRI endpoint.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::{Cri, streams};

use crate::procs;

/// Latencies per operation, and memory with many pods running.
pub struct Figures {
    pub name: &'static str,
    pub sequential: HashMap<&'static str, Vec<Duration>>,
    pub parallel: HashMap<&'static str, Vec<Duration>>,
    /// Container operations in one running pod.
    pub containers: HashMap<&'static str, Vec<Duration>>,
    /// PSS in kB: (daemon and its per-pod processes with no pods, with `pods` pods).
    pub memory: (u64, u64),
    /// The PSS with `pods` pods, by kind of process.
    pub memory_by_kind: Vec<procs::Kind>,
}

/// Runs pod `n` of `tag` and returns its id and config.
pub async fn run_pod(cri: &mut Cri, n: usize, tag: &str) -> (String, PodSandboxConfig) {
    let request = pod(n, tag);
    let config = request.config.clone().unwrap_or_default();
    let id = cri
        .runtime
        .run_pod_sandbox(request)
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    (id, config)
}

pub fn pod(n: usize, tag: &str) -> RunPodSandboxRequest {
    let name = format!("bench-{tag}-{n}");
    RunPodSandboxRequest {
        config: Some(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                namespace: "bench".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name,
            // What kubelet sends for a pod without shareProcessNamespace.
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        runtime_handler: String::new(),
    }
}

/// One RunPodSandbox → StopPodSandbox → RemovePodSandbox, each timed.
async fn lifecycle(cri: &mut Cri, n: usize, tag: &str) -> [(&'static str, Duration); 3] {
    let t = Instant::now();
    let id = cri
        .runtime
        .run_pod_sandbox(pod(n, tag))
        .await
        .expect("RunPodSandbox")
        .into_inner();
    let run = t.elapsed();
    let id = id.pod_sandbox_id;
    let t = Instant::now();
    cri.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect("StopPodSandbox");
    let stop = t.elapsed();
    let t = Instant::now();
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .expect("RemovePodSandbox");
    [
        ("RunPodSandbox", run),
        ("StopPodSandbox", stop),
        ("RemovePodSandbox", t.elapsed()),
    ]
}

/// A busybox container that sleeps, as kubelet would configure it.
fn sleeper(n: usize, image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: format!("c{n}"),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "1000".into()],
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

/// Creates and starts a sleeping container in the pod; returns its id.
/// `count` pods named after `tag`, each running one sleeping container;
/// returns the pod ids and the container ids, in order.
pub async fn sleeper_pods(
    cri: &mut Cri,
    image: &str,
    count: usize,
    tag: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut pods, mut containers) = (Vec::new(), Vec::new());
    for n in 0..count {
        let (id, config) = run_pod(cri, n, tag).await;
        containers.push(start_sleeper(cri, &id, &config, image, n).await);
        pods.push(id);
    }
    (pods, containers)
}

pub async fn start_sleeper(
    cri: &mut Cri,
    pod_id: &str,
    pod: &PodSandboxConfig,
    image: &str,
    n: usize,
) -> String {
    let id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(sleeper(n, image)),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("StartContainer");
    id
}

/// Create, start, exec (three times, as probes do), stop and remove one
/// busybox container in a running pod, each timed.
async fn container_cycle(
    cri: &mut Cri,
    pod_id: &str,
    pod: &PodSandboxConfig,
    image: &str,
    n: usize,
) -> Vec<(&'static str, Duration)> {
    let config = sleeper(n, image);
    let mut out = Vec::new();
    let t = Instant::now();
    let id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    out.push(("CreateContainer", t.elapsed()));
    let t = Instant::now();
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("StartContainer");
    out.push(("StartContainer", t.elapsed()));
    for _ in 0..3 {
        let t = Instant::now();
        let exec = ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            timeout: 10,
        };
        cri.runtime.exec_sync(exec).await.expect("ExecSync");
        out.push(("ExecSync", t.elapsed()));
    }
    // kubectl exec's path: Exec, then the session over the runtime's
    // streaming server (WebSocket, which containerd's server speaks too).
    for _ in 0..3 {
        let t = Instant::now();
        let exec = ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let url = cri.runtime.exec(exec).await.expect("Exec").into_inner().url;
        let (mut ws, _) = streams::websocket(&url, "v5.channel.k8s.io, v4.channel.k8s.io").await;
        // Until the server closes: the session is over once the status is in.
        streams::read_channels(&mut ws, |_| false).await;
        out.push(("Exec+stream", t.elapsed()));
    }
    let t = Instant::now();
    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer");
    out.push(("StopContainer", t.elapsed()));
    let t = Instant::now();
    cri.runtime
        .remove_container(RemoveContainerRequest { container_id: id })
        .await
        .expect("RemoveContainer");
    out.push(("RemoveContainer", t.elapsed()));
    out
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    name: &'static str,
    socket: &Path,
    image: &str,
    daemon_pid: u32,
    dir: &Path,
    iterations: usize,
    parallel: usize,
    pods: usize,
) -> Figures {
    let mut cri = Cri::connect(socket).await.expect("connect");
    // One warm-up cycle: first-use costs (image unpack, bridge creation) are not the steady state.
    lifecycle(&mut cri, 0, "warm").await;
    let mut sequential: HashMap<&'static str, Vec<Duration>> = HashMap::new();
    for n in 0..iterations {
        for (op, d) in lifecycle(&mut cri, n, "seq").await {
            sequential.entry(op).or_default().push(d);
        }
    }
    let tasks: Vec<_> = (0..parallel)
        .map(|n| {
            let mut cri = cri.clone();
            tokio::spawn(async move { lifecycle(&mut cri, n, "par").await })
        })
        .collect();
    let mut concurrent: HashMap<&'static str, Vec<Duration>> = HashMap::new();
    for task in tasks {
        for (op, d) in task.await.expect("task") {
            concurrent.entry(op).or_default().push(d);
        }
    }

    let (pod_id, pod_config) = run_pod(&mut cri, 0, "ctr").await;
    container_cycle(&mut cri, &pod_id, &pod_config, image, 0).await;
    let mut containers: HashMap<&'static str, Vec<Duration>> = HashMap::new();
    for n in 1..=iterations {
        for (op, d) in container_cycle(&mut cri, &pod_id, &pod_config, image, n).await {
            containers.entry(op).or_default().push(d);
        }
    }
    let _ = cri
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await;
    let _ = cri
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        })
        .await;

    tokio::time::sleep(SETTLE).await;
    let idle = procs::pss_kb(daemon_pid, dir);
    let (ids, _) = sleeper_pods(&mut cri, image, pods, "mem").await;
    tokio::time::sleep(SETTLE).await;
    let memory_by_kind = procs::by_kind(daemon_pid, dir);
    let loaded = memory_by_kind.iter().map(|k| k.pss).sum();
    crate::probes::remove_pods(&mut cri, ids).await;
    Figures {
        name,
        sequential,
        parallel: concurrent,
        containers,
        memory: (idle, loaded),
        memory_by_kind,
    }
}

/// How long a runtime is left alone before its memory is read: both return
/// what a burst freed on their own schedule (pierd trims its heap every
/// 5 s, Go's scavenger works in the background), so each gets the same
/// settling time after the calls before it.
const SETTLE: Duration = Duration::from_secs(6);

pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub struct Report {
    pub iterations: usize,
    pub parallel: usize,
    pub pods: usize,
    pub figures: Vec<Figures>,
}

type Rows = Vec<(&'static str, Vec<Duration>, Vec<Duration>)>;

/// One table: per operation, both runtimes' median and p95 in ms, and the
/// ratio of the medians (below 1: the first runtime is faster).
#[allow(clippy::print_stdout, reason = "the report is what a benchmark prints")]
fn print_table(title: &str, a: &str, b: &str, rows: &Rows) {
    println!("\n{title}, ms");
    let (a50, b50) = (format!("{a} p50"), format!("{b} p50"));
    println!(
        "{:<18} {a50:>14} {:>8} {b50:>16} {:>8} {:>8}",
        "operation", "p95", "p95", "ratio"
    );
    for (op, x, y) in rows {
        let (xm, ym) = (percentile(x, 0.5), percentile(y, 0.5));
        let ratio = xm.as_secs_f64() / ym.as_secs_f64().max(1e-9);
        let (x95, y95) = (ms(percentile(x, 0.95)), ms(percentile(y, 0.95)));
        println!(
            "{op:<18} {:>14} {x95:>8} {:>16} {y95:>8} {ratio:>8.2}",
            ms(xm),
            ms(ym)
        );
    }
}

fn rows(
    ops: &[&'static str],
    a: &HashMap<&'static str, Vec<Duration>>,
    b: &HashMap<&'static str, Vec<Duration>>,
) -> Rows {
    ops.iter()
        .map(|op| (*op, a[op].clone(), b[op].clone()))
        .collect()
}

/// Per-cycle sums of two operations.
fn pair(ops: &HashMap<&'static str, Vec<Duration>>, x: &str, y: &str) -> Vec<Duration> {
    ops[x].iter().zip(&ops[y]).map(|(a, b)| *a + *b).collect()
}

impl Report {
    #[allow(clippy::print_stdout, reason = "the report is what a benchmark prints")]
    pub fn print(&self) {
        let [a, b] = [&self.figures[0], &self.figures[1]];
        const POD_OPS: [&str; 3] = ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"];
        let title = format!("sequential ({} pods)", self.iterations);
        print_table(
            &title,
            a.name,
            b.name,
            &rows(&POD_OPS, &a.sequential, &b.sequential),
        );
        let title = format!("parallel ({} pods at once)", self.parallel);
        print_table(
            &title,
            a.name,
            b.name,
            &rows(&POD_OPS, &a.parallel, &b.parallel),
        );
        const CONTAINER_OPS: [&str; 6] = [
            "CreateContainer",
            "StartContainer",
            "ExecSync",
            "Exec+stream",
            "StopContainer",
            "RemoveContainer",
        ];
        let mut container_rows = rows(&CONTAINER_OPS, &a.containers, &b.containers);
        // containerd runs runc in StartContainer and StopContainer, pier in
        // CreateContainer and RemoveContainer: compare the pairs as well.
        for (name, x, y) in [
            ("Create+Start", "CreateContainer", "StartContainer"),
            ("Stop+Remove", "StopContainer", "RemoveContainer"),
        ] {
            container_rows.push((name, pair(&a.containers, x, y), pair(&b.containers, x, y)));
        }
        let title = format!("containers in one pod ({} cycles)", self.iterations);
        print_table(&title, a.name, b.name, &container_rows);
        println!(
            "\nmemory (PSS of the daemon and every process it keeps per pod; each pod runs one \
             sleeping container, whose own process is not counted), kB"
        );
        for f in &self.figures {
            println!(
                "{:<12} idle {:>8}  with {} pods {:>8}  per pod {:>6}",
                f.name,
                f.memory.0,
                self.pods,
                f.memory.1,
                self.per_pod(f)
            );
            for kind in &f.memory_by_kind {
                println!(
                    "    {:<16} {:>4} processes {:>8} kB ({} kB each)",
                    kind.name,
                    kind.count,
                    kind.pss,
                    kind.pss / kind.count.max(1)
                );
            }
        }
        self.print_goals();
    }

    fn per_pod(&self, f: &Figures) -> u64 {
        f.memory.1.saturating_sub(f.memory.0) / self.pods.max(1) as u64
    }

    /// The ratios the project set out to reach (issues #11 and #15), each
    /// against this run's figure: a change that slows a path shows here.
    #[allow(clippy::print_stdout, reason = "the report is what a benchmark prints")]
    fn print_goals(&self) {
        let [a, b] = [&self.figures[0], &self.figures[1]];
        let median_ratio = |x: &[Duration], y: &[Duration]| {
            percentile(x, 0.5).as_secs_f64() / percentile(y, 0.5).as_secs_f64().max(1e-9)
        };
        let op = |name: &str| median_ratio(&a.containers[name], &b.containers[name]);
        let goals = [
            ("ExecSync p50", op("ExecSync"), 0.2),
            (
                "Create+Start p50",
                median_ratio(
                    &pair(&a.containers, "CreateContainer", "StartContainer"),
                    &pair(&b.containers, "CreateContainer", "StartContainer"),
                ),
                0.7,
            ),
            ("RemoveContainer p50", op("RemoveContainer"), 1.0),
            (
                "memory per pod",
                self.per_pod(a) as f64 / self.per_pod(b).max(1) as f64,
                0.05,
            ),
        ];
        println!(
            "
goals, {} / {}",
            a.name, b.name
        );
        for (name, ratio, goal) in goals {
            let verdict = if ratio <= goal { "met" } else { "MISSED" };
            println!("{name:<20} {ratio:>6.3}  goal <= {goal:<5} {verdict}");
        }
    }
}

/// The exec CPU and node probe figures of both runtimes, and their ratios
/// (below 1: the first runtime is cheaper).
#[allow(clippy::print_stdout, reason = "the report is what a benchmark prints")]
pub fn print_probes(
    figures: &[(
        &'static str,
        crate::probes::ExecCpu,
        Option<crate::probes::NodeProbes>,
    )],
) {
    let [(a, ax, an), (b, bx, bn)] = figures else {
        return;
    };
    let per =
        |x: &crate::probes::ExecCpu| x.cpu.as_secs_f64() * 1000.0 / x.latencies.len().max(1) as f64;
    let (ap, bp) = (per(ax), per(bx));
    println!(
        "\nExecSync of `true`, {} in a row: latency and runtime CPU per exec (daemon, monitors or shims, runc, helpers), ms",
        ax.latencies.len()
    );
    println!(
        "{:<12} {:>8} {:>8} {:>10}",
        "runtime", "p50", "p95", "CPU/exec"
    );
    for (name, x, p) in [(a, ax, ap), (b, bx, bp)] {
        println!(
            "{name:<12} {:>8} {:>8} {p:>10.2}",
            ms(percentile(&x.latencies, 0.5)),
            ms(percentile(&x.latencies, 0.95))
        );
    }
    let p50 = |x: &crate::probes::ExecCpu| percentile(&x.latencies, 0.5).as_secs_f64();
    println!(
        "ratio {a}/{b}: p50 {:.2}, CPU per exec {:.2}",
        p50(ax) / p50(bx).max(1e-9),
        ap / bp.max(1e-9)
    );
    if let (Some(an), Some(bn)) = (an, bn) {
        println!(
            "\nnode: {} pods, ExecSync of `true` in each every second for {} s",
            an.pods, an.seconds
        );
        println!(
            "{:<12} {:>8} {:>8} {:>12} {:>8} {:>8}",
            "runtime", "execs", "failed", "CPU seconds", "p50 ms", "p95 ms"
        );
        for (name, n) in [(a, an), (b, bn)] {
            println!(
                "{name:<12} {:>8} {:>8} {:>12.1} {:>8} {:>8}",
                n.execs,
                n.failed,
                n.cpu.as_secs_f64(),
                ms(percentile(&n.latencies, 0.5)),
                ms(percentile(&n.latencies, 0.95))
            );
        }
        println!(
            "ratio {a}/{b}: CPU seconds {:.2}",
            an.cpu.as_secs_f64() / bn.cpu.as_secs_f64().max(1e-9)
        );
    }
}
