//! pier-pull-bench: pulls and unpacks one multi-layer image of about 100 MB
//! from a local registry with pier's PullImage, containerd's CRI PullImage
//! (both driven by the same Rust CRI client) and `skopeo copy` + `umoci
//! unpack`, cold (nothing stored) and warm (image already present), and
//! prints the medians. Run as root from the workspace:
//!
//!     cargo build --release -p pierd -p pier-monitor -p pier-pull-bench
//!     target/release/pier-pull-bench [ROUNDS]

#[path = "../../cri/src/containerd.rs"]
#[allow(dead_code)]
mod containerd;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1::{ImageSpec as CriImage, PullImageRequest, RemoveImageRequest};
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use pier_tests::{Cri, Pierd, PierdOptions, Registry};

const LAYERS: usize = 5;
const FILES_PER_LAYER: usize = 400;
const FILE_SIZE: usize = 50 * 1024;

/// Deterministic bytes: half pseudo-random (incompressible, like binaries),
/// half text-like (compressible), as real image layers are.
fn file_contents(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(FILE_SIZE);
    while out.len() < FILE_SIZE / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    let line = format!("line of configuration text number {seed} for the benchmark\n");
    while out.len() < FILE_SIZE {
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(FILE_SIZE);
    out
}

fn layer(n: usize) -> (Vec<u8>, String) {
    let mut builder = tar::Builder::new(Vec::new());
    for f in 0..FILES_PER_LAYER {
        let data = file_contents((n * FILES_PER_LAYER + f) as u64);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        let path = format!("layer{n}/dir{}/file{f}", f % 20);
        builder
            .append_data(&mut header, path, data.as_slice())
            .expect("tar");
    }
    let tar = builder.into_inner().expect("tar");
    let diff_id = pier_tests::image::sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar).expect("gzip");
    (gz.finish().expect("gzip"), diff_id)
}

async fn push_image(registry: &Registry) -> (String, u64, u64) {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let (mut compressed, mut uncompressed) = (0u64, 0u64);
    for n in 0..LAYERS {
        let (data, diff_id) = layer(n);
        compressed += data.len() as u64;
        uncompressed += (FILES_PER_LAYER * FILE_SIZE) as u64;
        layers.push(ImageLayer::new(
            data,
            pier_tests::image::LAYER_MEDIA_TYPE.into(),
            None,
        ));
        diff_ids.push(diff_id);
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":{}}}}}"#,
        serde_json_list(&diff_ids)
    );
    let config = Config::new(
        config.into_bytes(),
        pier_tests::image::CONFIG_MEDIA_TYPE.into(),
        None,
    );
    let reference = format!("{}/bench/big:1", registry.host());
    let manifest = OciImageManifest::build(&layers, &config, None);
    pier_tests::image::plain_http_client()
        .push(
            &reference.parse().expect("reference"),
            &layers,
            config,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .expect("push");
    (reference, compressed, uncompressed)
}

fn serde_json_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(","))
}

fn spec(image: &str) -> Option<CriImage> {
    Some(CriImage {
        image: image.to_owned(),
        ..Default::default()
    })
}

async fn cri_pull(cri: &mut Cri, image: &str) -> Duration {
    let started = Instant::now();
    cri.images
        .pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .expect("PullImage");
    started.elapsed()
}

async fn cri_remove(cri: &mut Cri, image: &str) {
    cri.images
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .expect("RemoveImage");
}

/// (cold, warm) pull times over `rounds` rounds through one CRI endpoint.
async fn cri_rounds(cri: &mut Cri, image: &str, rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        cri_remove(cri, image).await;
        sync();
        cold.push(cri_pull(cri, image).await);
        warm.push(cri_pull(cri, image).await);
    }
    cri_remove(cri, image).await;
    (cold, warm)
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skopeo_umoci_rounds(image: &str, rounds: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = format!("oci:{}:big", dir.path().join("layout").display());
        let copy = || {
            let mut c = Command::new("skopeo");
            c.args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{image}"))
                .arg(&layout);
            c
        };
        sync();
        let started = Instant::now();
        run(&mut copy());
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:big", dir.path().join("layout").display()))
            .arg(dir.path().join("bundle")));
        cold.push(started.elapsed());
        // Warm: the layout has every blob; skopeo only checks the manifest.
        let started = Instant::now();
        run(&mut copy());
        warm.push(started.elapsed());
    }
    (cold, warm)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[allow(clippy::print_stdout, reason = "the report is what a benchmark prints")]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    if std::env::var_os("PIER_BIN_DIR").is_none() {
        let exe = std::env::current_exe().expect("current_exe");
        pier_tests::bins::set_dir(exe.parent().expect("exe dir"));
    }
    let registry = Registry::start();
    let (image, compressed, uncompressed) = push_image(&registry).await;
    eprintln!(
        "image {image}: {LAYERS} layers, {} files, {:.1} MB compressed, {:.1} MB unpacked",
        LAYERS * FILES_PER_LAYER,
        compressed as f64 / 1e6,
        uncompressed as f64 / 1e6
    );

    let pier = Pierd::start_with(PierdOptions {
        config: format!("[registry]\ninsecure = [\"{}\"]\n", registry.host()),
        args: vec!["--log-level".into(), "warn".into()],
        ..Default::default()
    })
    .await;
    let mut cri = pier.cri().await;
    let (pier_cold, pier_warm) = cri_rounds(&mut cri, &image, rounds).await;

    let containerd = containerd::Containerd::start(&registry.host(), &image).await;
    let mut cri = Cri::connect(&containerd.socket())
        .await
        .expect("containerd");
    let (ctrd_cold, ctrd_warm) = cri_rounds(&mut cri, &image, rounds).await;

    let (sk_cold, sk_warm) = skopeo_umoci_rounds(&image, rounds);

    println!("| tool | cold pull + unpack (median of {rounds}) | warm pull (median) |");
    println!("|---|---|---|");
    for (name, cold, warm) in [
        ("pier PullImage", pier_cold, pier_warm),
        ("containerd 1.6 CRI PullImage", ctrd_cold, ctrd_warm),
        ("skopeo copy + umoci unpack", sk_cold, sk_warm),
    ] {
        println!("| {name} | {} | {} |", ms(median(cold)), ms(median(warm)));
    }
}
