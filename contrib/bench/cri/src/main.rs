//! pier-cri-bench: the same CRI client drives pier and Debian's containerd
//! (same runc, CNI plugins and local registry) in one run and prints medians,
//! p95s and ratios. Run as root from the workspace:
//!
//!     cargo build --release --workspace --bins && contrib/static-bins.sh --release
//!     target/release/pier-cri-bench [ITERATIONS] [PARALLEL] [PODS] [EXECS] [PROBE_PODS] [PROBE_SECONDS]
//!
//! ITERATIONS sequential pod lifecycles (default 20), PARALLEL pods at once
//! (default 20), PODS held running for the memory figure (default 50),
//! EXECS sequential ExecSync of `true` for the CPU per exec (default 200),
//! PROBE_PODS pods exec-probed every second for PROBE_SECONDS s for the
//! node figure (default 100 for 60 s; 0 pods skips it).

use std::path::PathBuf;

use k8s_cri::v1::{ImageSpec as CriImage, PullImageRequest};
use pier_tests::{Cri, Pierd, Registry, TestNetwork};

use pier_cri_bench::measure::{self, Figures, Report};
use pier_cri_bench::{arg, containerd, pierd_dir, probes, use_sibling_binaries};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (iterations, parallel, pods) = (arg(1, 20), arg(2, 20), arg(3, 50));
    let (execs, probe_pods, probe_seconds) = (arg(4, 200), arg(5, 100), arg(6, 60) as u64);
    use_sibling_binaries();
    let registry = Registry::start();
    let (pause, busybox) = pier_cri_bench::bench_images(&registry).await;

    let pier =
        Pierd::start_with(pier_cri_bench::pierd_options(&registry, TestNetwork::new())).await;
    let containerd = containerd::Containerd::start(&registry.host(), &pause).await;
    for socket in [containerd.socket(), pier.socket().to_owned()] {
        let mut cri = Cri::connect(&socket).await.expect("connect");
        for image in [&pause, &busybox] {
            let request = PullImageRequest {
                image: Some(CriImage {
                    image: image.clone(),
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

    let pier_dir = pierd_dir(&pier);
    let runs: [(&str, PathBuf, u32, PathBuf); 2] = [
        (
            "pier",
            pier.socket().to_owned(),
            pier.pid().unwrap_or(0),
            pier_dir,
        ),
        (
            "containerd",
            containerd.socket(),
            containerd.pid(),
            containerd.root().to_owned(),
        ),
    ];
    let mut figures: Vec<Figures> = Vec::new();
    let mut exec_figures = Vec::new();
    for (name, socket, pid, dir) in runs {
        eprintln!("measuring {name}...");
        let image = &busybox;
        figures
            .push(measure::run(name, &socket, image, pid, &dir, iterations, parallel, pods).await);
        eprintln!("measuring {name}: exec CPU and probes...");
        let mut cri = Cri::connect(&socket).await.expect("connect");
        let exec = probes::exec_cpu(&mut cri, image, pid, &dir, execs).await;
        let node = if probe_pods > 0 {
            Some(probes::node(&mut cri, image, pid, &dir, probe_pods, probe_seconds).await)
        } else {
            None
        };
        exec_figures.push((name, exec, node));
    }
    Report {
        iterations,
        parallel,
        pods,
        figures,
    }
    .print();
    measure::print_probes(&exec_figures);
}
