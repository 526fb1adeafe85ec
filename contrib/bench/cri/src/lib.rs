//! What the CRI benchmarks share: a private containerd to compare with,
//! timing and memory helpers.

pub mod containerd;
pub mod measure;
pub mod probes;
pub mod procs;

use std::path::Path;

/// The `n`th command-line argument that is not a flag, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .nth(n.saturating_sub(1))
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Whether `--name` is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a.strip_prefix("--") == Some(name))
}

/// The images every benchmark pushes to its registry: containerd's pause
/// image (a sleeper) and the busybox image the containers run; their
/// references.
pub async fn bench_images(registry: &pier_tests::Registry) -> (String, String) {
    let pause = pier_tests::ImageSpec::default()
        .cmd(&["sleep", "2147483647"])
        .push(registry, "bench/pause:1")
        .await
        .reference;
    let busybox = pier_tests::ImageSpec::default()
        .push(registry, "bench/busybox:1")
        .await
        .reference;
    (pause, busybox)
}

/// A benchmark's pierd: quiet logs, pulling from the benchmark's registry.
pub fn pierd_options(
    registry: &pier_tests::Registry,
    network: pier_tests::TestNetwork,
) -> pier_tests::PierdOptions {
    pier_tests::PierdOptions {
        network: Some(network),
        args: vec![
            "--log-level".into(),
            "warn".into(),
            "--insecure-registry".into(),
            registry.host(),
        ],
        ..Default::default()
    }
}

/// Runs pierd and pier-monitor from the benchmark's own directory (cargo
/// builds them next to it) unless PIER_BIN_DIR says otherwise.
pub fn use_sibling_binaries() {
    if std::env::var_os("PIER_BIN_DIR").is_none() {
        let exe = std::env::current_exe().expect("current_exe");
        pier_tests::bins::set_dir(exe.parent().expect("exe dir"));
    }
}

/// A process's memory in kB, from `/proc/PID/smaps_rollup`: resident,
/// proportional, and the anonymous part of the proportional (heap and
/// stacks, as opposed to the pages of its binary and libraries, which the
/// kernel can drop and read again).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub pss_anon: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Self {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Self {
            rss: field("Rss:"),
            pss: field("Pss:"),
            pss_anon: field("Pss_Anon:"),
        }
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {} PSS {} (anonymous {}) kB",
            self.rss, self.pss, self.pss_anon
        )
    }
}

/// The private directory of a test pierd (the parent of its state root).
pub fn pierd_dir(pierd: &pier_tests::Pierd) -> std::path::PathBuf {
    pierd
        .root()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
