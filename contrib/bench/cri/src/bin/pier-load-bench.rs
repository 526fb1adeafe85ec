//! pier-load-bench: the same seeded mix of CRI calls (pods, containers,
//! ExecSync, PullImage, lists, status and stats) from CLIENTS clients in
//! parallel, OPS calls in all, against a private pierd and then a private
//! containerd (same runc, CNI plugins and local registry) in one run. Prints
//! per RPC the count, p50, p99 and errors by code on both, and the ratios.
//! Exits non-zero on a deadlock (calls still open at the deadline), on
//! INTERNAL or UNKNOWN from pier, or on anything left behind. Run as root
//! from the workspace:
//!
//!     cargo build --release -p pierd -p pier-monitor -p pier-cri-bench --bins
//!     target/release/pier-load-bench [CLIENTS] [OPS] [SEED] [--pier-only]
//!
//! CLIENTS defaults to 20, OPS to 2000, SEED to 1; the deadline is
//! PIER_LOAD_DEADLINE seconds per runtime (default 1200).

#![allow(clippy::print_stdout, reason = "the report is what a benchmark prints")]

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use k8s_cri::v1::{ImageSpec as CriImage, PullImageRequest};
use pier_cri_bench::measure::ms;
use pier_cri_bench::{Memory, arg, containerd::Containerd, flag, pierd_dir, use_sibling_binaries};
use pier_tests::load::{self, LoadOptions, LoadReport};
use pier_tests::{Cri, ImageSpec, Pierd, Registry, TestNetwork};

/// Distinct images PullImage draws from, besides the containers' own.
const PULL_IMAGES: usize = 3;

/// Quiet time before pierd's memory is read (it trims its heap every 5 s).
const SETTLE: Duration = Duration::from_secs(6);

/// Rounds of the mix on pier for its memory figure (the first is timed),
/// unless PIER_LOAD_MEMORY_ROUNDS says otherwise.
const MEMORY_ROUNDS: usize = 3;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let (clients, ops, seed) = (arg(1, 20usize), arg(2, 2000usize), arg(3, 1u64));
    let deadline = std::env::var("PIER_LOAD_DEADLINE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1200), Duration::from_secs);
    use_sibling_binaries();
    let registry = Registry::start();
    let (pause, busybox) = pier_cri_bench::bench_images(&registry).await;
    let mut pulls = vec![busybox.clone()];
    for n in 0..PULL_IMAGES {
        let image = ImageSpec::default()
            .file("/load", format!("image {n}"), 0o644)
            .push(&registry, &format!("bench/load-{n}:1"))
            .await;
        pulls.push(image.reference);
    }
    let logs = tempfile::tempdir().expect("tempdir");
    let options = LoadOptions {
        clients,
        ops,
        seed,
        image: busybox.clone(),
        pulls,
        log_dir: logs.path().to_owned(),
        deadline,
    };

    let pier =
        Pierd::start_with(pier_cri_bench::pierd_options(&registry, TestNetwork::new())).await;
    // The containers' image is there before the load: its first unpack is
    // not what the mix measures. The other images are pulled by the mix.
    pull(pier.socket(), &[&pause, &busybox]).await;
    eprintln!("load on pier: {clients} clients, {ops} calls, seed {seed}...");
    let pid = pier.pid().unwrap_or(0);
    tokio::time::sleep(SETTLE).await;
    let before = Memory::of(pid);
    let on_pier = load::run(pier.socket(), &pierd_dir(&pier), pid, &options).await;
    tokio::time::sleep(SETTLE).await;
    let mut after = vec![Memory::of(pid)];
    // The same mix again, for memory only: what the first round left may be
    // caches that fill once; memory that grows with every round is a leak.
    let rounds = std::env::var("PIER_LOAD_MEMORY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MEMORY_ROUNDS);
    for round in 1..rounds {
        let again = LoadOptions {
            seed: seed + round as u64 * 1000,
            ..options.clone()
        };
        let report = load::run(pier.socket(), &pierd_dir(&pier), pid, &again).await;
        if !report.stuck.is_empty()
            || !report.internal_errors().is_empty()
            || !report.leaks.is_empty()
        {
            eprintln!("round {} of the memory load went wrong", round + 1);
        }
        tokio::time::sleep(SETTLE).await;
        after.push(Memory::of(pid));
    }
    drop(pier);

    let on_containerd = if flag("pier-only") {
        None
    } else {
        let containerd = Containerd::start(&registry.host(), &pause).await;
        pull(&containerd.socket(), &[&pause, &busybox]).await;
        eprintln!("load on containerd...");
        let report = load::run(
            &containerd.socket(),
            containerd.root(),
            containerd.pid(),
            &options,
        )
        .await;
        Some(report)
    };

    print(&options, &on_pier, on_containerd.as_ref());
    // Everything the load made is removed by then: what pierd still holds
    // beyond its state before is what the load left in it.
    println!("\npierd before the load: {before}");
    for (round, memory) in after.iter().enumerate() {
        println!(
            "pierd {} s after round {} (all removed): {memory}; PSS {:.2}x",
            SETTLE.as_secs(),
            round + 1,
            memory.pss as f64 / before.pss.max(1) as f64
        );
    }
    let mut failed = verdict("pier", &on_pier, true);
    if let Some(report) = &on_containerd {
        failed |= verdict("containerd", report, false);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn pull(socket: &std::path::Path, images: &[&String]) {
    let mut cri = Cri::connect(socket).await.expect("connect");
    for image in images {
        let request = PullImageRequest {
            image: Some(CriImage {
                image: (*image).clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        cri.images
            .pull_image(request)
            .await
            .expect("pull a bench image");
    }
}

fn print(options: &LoadOptions, pier: &LoadReport, containerd: Option<&LoadReport>) {
    println!(
        "\nload: {} clients, {} calls drawn (+ each client's final clean-up), seed {}",
        options.clients, options.ops, options.seed
    );
    println!(
        "wall time: pier {:.1} s ({} calls){}",
        pier.elapsed.as_secs_f64(),
        pier.total_calls(),
        containerd.map_or(String::new(), |c| format!(
            ", containerd {:.1} s ({} calls)",
            c.elapsed.as_secs_f64(),
            c.total_calls()
        ))
    );
    let mut header = format!(
        "\n{:<20} {:>6} {:>9} {:>9}",
        "RPC, ms", "pier n", "p50", "p99"
    );
    if containerd.is_some() {
        header += &format!(
            "   {:>6} {:>9} {:>9}   {:>6} {:>6}",
            "ctrd n", "p50", "p99", "p50 x", "p99 x"
        );
    }
    println!("{header}");
    let names: BTreeSet<&str> = pier
        .calls
        .keys()
        .chain(containerd.into_iter().flat_map(|c| c.calls.keys()))
        .copied()
        .collect();
    let empty = Default::default();
    for name in &names {
        let a = pier.calls.get(name).unwrap_or(&empty);
        let mut line = format!(
            "{name:<20} {:>6} {:>9} {:>9}",
            a.times.len(),
            ms(a.percentile(0.5)),
            ms(a.percentile(0.99))
        );
        if let Some(c) = containerd {
            let b = c.calls.get(name).unwrap_or(&empty);
            let ratio = |p| {
                a.percentile(p).as_secs_f64() / b.percentile(p).as_secs_f64().max(f64::MIN_POSITIVE)
            };
            line += &format!(
                "   {:>6} {:>9} {:>9}   {:>6.2} {:>6.2}",
                b.times.len(),
                ms(b.percentile(0.5)),
                ms(b.percentile(0.99)),
                ratio(0.5),
                ratio(0.99)
            );
        }
        println!("{line}");
    }
    println!("\nerrors by code (first message)");
    let sides = [Some(("pier", pier)), containerd.map(|c| ("containerd", c))];
    let mut any = false;
    for (side, report) in sides.into_iter().flatten() {
        for (rpc, figures) in &report.calls {
            for (code, count) in &figures.errors {
                any = true;
                let message = figures.messages.get(code).map_or("", String::as_str);
                println!("{side:<11} {rpc:<20} {code:<18} {count:>5}  {message}");
            }
        }
    }
    if !any {
        println!("none");
    }
}

/// Prints what fails the run; true if anything does.
fn verdict(side: &str, report: &LoadReport, internal_fails: bool) -> bool {
    let mut failed = false;
    if !report.stuck.is_empty() {
        failed = true;
        println!("{side}: DEADLOCK, calls still open at the deadline (client, RPC):");
        for (client, rpc) in &report.stuck {
            println!("  {client} {rpc}");
        }
    }
    let internal = report.internal_errors();
    if internal_fails && !internal.is_empty() {
        failed = true;
        println!("{side}: INTERNAL/UNKNOWN answers: {}", internal.join(", "));
    }
    if !report.leaks.is_empty() {
        failed = true;
        println!("{side}: LEFT BEHIND after every pod was removed:");
        for leak in &report.leaks {
            println!("  {leak}");
        }
    }
    failed
}
