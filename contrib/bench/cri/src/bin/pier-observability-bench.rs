//! pier-observability-bench: what metrics and tracing cost. Three pierds
//! in one run: one with neither, one with the metrics endpoint, one with
//! the endpoint and OTLP export of every span (sampling 1.0, to an
//! in-process collector), driven by the same client in rotating rounds;
//! then the time of one scrape with CONTAINERS containers running. Run as root from the workspace:
//!
//!     cargo build --release --workspace --bins
//!     target/release/pier-observability-bench [ROUNDS] [CALLS] [CONTAINERS]
//!
//! ROUNDS (default 5) rotating rounds of CALLS (default 200) calls per
//! kind; CONTAINERS (default 100) sleeping containers for the scrape figure.

#![allow(clippy::print_stdout, reason = "the report is what a benchmark prints")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::otlp::Receiver;
use pier_tests::prometheus::scrape;
use pier_tests::workload::{container, pod, pod_security, pull, remove_pod, run, run_pod};
use pier_tests::{Cri, ImageSpec as TestImage, Pierd, PierdOptions, Registry, TestNetwork};

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

async fn start(registry: &Registry, extra: Vec<String>) -> Pierd {
    let mut args = vec![
        "--log-level".into(),
        "warn".into(),
        "--insecure-registry".into(),
        registry.host(),
    ];
    args.extend(extra);
    Pierd::start_with(PierdOptions {
        network: Some(TestNetwork::new()),
        args,
        ..Default::default()
    })
    .await
}

/// A container that sleeps until removed.
fn sleeper(name: &str, image: &str) -> ContainerConfig {
    container(name, image, "exec sleep 100000")
}

/// A host-network pod (no CNI: the calls, not the plugins, are measured).
fn host_pod(name: &str, logs: &std::path::Path) -> PodSandboxConfig {
    let mut config = pod(name, logs);
    pod_security(&mut config).namespace_options = Some(NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    });
    config
}

/// One round on one pierd: `calls` ContainerStatus and ListContainers, and
/// a tenth as many pod lifecycles, each call timed.
async fn round(
    cri: &mut Cri,
    container_id: &str,
    calls: usize,
    logs: &std::path::Path,
    into: &mut HashMap<&'static str, Vec<Duration>>,
) {
    for _ in 0..calls {
        let t = Instant::now();
        cri.runtime
            .container_status(ContainerStatusRequest {
                container_id: container_id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus");
        into.entry("ContainerStatus").or_default().push(t.elapsed());
        let t = Instant::now();
        cri.runtime
            .list_containers(ListContainersRequest::default())
            .await
            .expect("ListContainers");
        into.entry("ListContainers").or_default().push(t.elapsed());
    }
    for n in 0..calls / 10 {
        let config = host_pod(&format!("cycle-{n}"), logs);
        let t = Instant::now();
        let id = run_pod(&mut cri.runtime, &config).await;
        into.entry("RunPodSandbox").or_default().push(t.elapsed());
        let t = Instant::now();
        remove_pod(&mut cri.runtime, &id).await;
        into.entry("Stop+RemovePodSandbox")
            .or_default()
            .push(t.elapsed());
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (rounds, calls, containers) = (arg(1, 5), arg(2, 200), arg(3, 100));
    if std::env::var_os("PIER_BIN_DIR").is_none() {
        let exe = std::env::current_exe().expect("current_exe");
        pier_tests::bins::set_dir(exe.parent().expect("exe dir"));
    }
    let registry = Registry::start();
    let image = TestImage::default()
        .push(&registry, "bench/busybox:1")
        .await
        .reference;
    let receiver = Receiver::start().await;
    let metrics = SocketAddr::from(([127, 0, 0, 1], pier_tests::free_port()));
    let off = start(&registry, Vec::new()).await;
    let metrics_only_address = SocketAddr::from(([127, 0, 0, 1], pier_tests::free_port()));
    let metrics_only = start(
        &registry,
        vec!["--metrics-address".into(), metrics_only_address.to_string()],
    )
    .await;
    let on = start(
        &registry,
        vec![
            "--metrics-address".into(),
            metrics.to_string(),
            "--tracing-endpoint".into(),
            receiver.endpoint(),
            "--tracing-sampling-rate".into(),
            "1".into(),
        ],
    )
    .await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut sides = Vec::new();
    for pierd in [&off, &metrics_only, &on] {
        pull(pierd, &image).await;
        let mut cri = pierd.cri().await;
        let config = host_pod("bench", logs.path());
        let pod_id = run_pod(&mut cri.runtime, &config).await;
        let id = run(&mut cri.runtime, &pod_id, &config, sleeper("c", &image)).await;
        sides.push((cri, pod_id, id, config, HashMap::new()));
    }
    for r in 0..rounds {
        // Rotate which side goes first, so drift on a noisy machine falls
        // on all three.
        for k in 0..3 {
            let (cri, _, id, _, figures) = &mut sides[(r + k) % 3];
            round(cri, id, calls, logs.path(), figures).await;
        }
    }
    println!(
        "CRI call p50, {rounds} rotating rounds of {calls} calls ({} lifecycles)",
        calls / 10
    );
    println!(
        "{:<24} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "call", "off", "metrics", "both", "m/off", "both/off"
    );
    let names = [
        "ContainerStatus",
        "ListContainers",
        "RunPodSandbox",
        "Stop+RemovePodSandbox",
    ];
    for name in names {
        let mut p50 = |side: usize| {
            median(
                sides[side]
                    .4
                    .get_mut(name)
                    .map(Vec::as_mut_slice)
                    .unwrap_or_default(),
            )
        };
        let (a, m, b) = (p50(0), p50(1), p50(2));
        let ratio = |x: Duration| x.as_secs_f64() / a.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "{name:<24} {:>12} {:>12} {:>12} {:>9.2} {:>9.2}",
            ms(a),
            ms(m),
            ms(b),
            ratio(m),
            ratio(b)
        );
    }

    // Scrapes: first with one container, then with `containers`.
    let scrape_times = |n: usize, wait: Duration| async move {
        let mut times = Vec::new();
        for _ in 0..n {
            tokio::time::sleep(wait).await;
            let t = Instant::now();
            scrape(metrics).await.expect("scrape");
            times.push(t.elapsed());
        }
        times
    };
    let (cri, pod_id, _, config, _) = &mut sides[2];
    let mut small = scrape_times(20, Duration::from_millis(1100)).await;
    for n in 1..containers {
        run(
            &mut cri.runtime,
            pod_id,
            config,
            sleeper(&format!("c{n}"), &image),
        )
        .await;
    }
    // Each scrape more than a second after the last takes a census.
    let mut census = scrape_times(20, Duration::from_millis(1100)).await;
    let mut cached = scrape_times(50, Duration::from_millis(20)).await;
    println!(
        "scrape p50 (pierd on), with a census: 1 container {}, {containers} containers {}; census fresh, {containers} containers {}",
        ms(median(&mut small)),
        ms(median(&mut census)),
        ms(median(&mut cached))
    );
    for (cri, pod_id, _, _, _) in &mut sides {
        remove_pod(&mut cri.runtime, pod_id).await;
    }
    println!(
        "spans received by the collector: {}",
        receiver.spans().len()
    );
}
