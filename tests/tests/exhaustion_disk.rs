//! A full disk under pier: the image store and a container's log on small
//! tmpfs mounts, and a decompression bomb that would fill any disk.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use k8s_cri::v1::*;
use pier_tests::image::{ImageSpec as TestImage, Layer, push_layers};
use pier_tests::workload::{self, Runtime};
use pier_tests::{Pierd, PierdOptions, Registry, Tmpfs};
use tonic::Code;

const MIB: u64 = 1 << 20;

/// A pierd whose state root (database and image store) is `root`.
async fn pierd_with_root(registry: &Registry, root: &Path, config: &str) -> Pierd {
    Pierd::start_with(PierdOptions {
        config: config.into(),
        args: vec![
            "--insecure-registry".into(),
            registry.host(),
            "--root".into(),
            root.display().to_string(),
        ],
        ..Default::default()
    })
    .await
}

/// Names in the layer store, temp and trash dirs included.
fn layer_dir_entries(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("layers"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn image_ids(pierd: &Pierd) -> Vec<String> {
    let mut images = pierd.cri().await.images;
    let listed = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    let mut ids: Vec<String> = listed.into_iter().map(|i| i.id).collect();
    ids.sort();
    ids
}

/// ImageFsInfo's image filesystem usage: (bytes, inodes).
async fn image_fs_usage(pierd: &Pierd) -> (u64, u64) {
    let mut images = pierd.cri().await.images;
    let info = images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let fs = info.image_filesystems.first().expect("an image filesystem");
    (
        fs.used_bytes.as_ref().map_or(0, |v| v.value),
        fs.inodes_used.as_ref().map_or(0, |v| v.value),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_that_fills_the_disk_is_resource_exhausted_leaves_nothing_and_works_once_space_is_freed()
 {
    let registry = Registry::start();
    let small = TestImage::default()
        .push(&registry, "tests/busybox:1")
        .await;
    // 24 MiB of zeros: a small download that needs more room than the store has.
    let big = TestImage::default()
        .layer(Layer::new().file("big", vec![0u8; 24 * MIB as usize]))
        .push(&registry, "tests/big:1")
        .await;
    let store = Tmpfs::mount(16 * MIB);
    let root = store.join("root");
    let pierd = pierd_with_root(&registry, &root, "").await;
    workload::pull(&pierd, &small.reference).await;
    let images_before = image_ids(&pierd).await;
    let layers_before = layer_dir_entries(&root);
    let usage_before = image_fs_usage(&pierd).await;

    let refused = workload::try_pull(&pierd, &big.reference)
        .await
        .expect_err("a pull bigger than the disk fails");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let message = refused.message();
    assert!(message.contains("image store is full"), "{message}");
    assert!(message.contains(&root.display().to_string()), "{message}");
    assert!(message.contains("tests/big:1"), "{message}");

    assert_eq!(
        image_ids(&pierd).await,
        images_before,
        "no image row is left"
    );
    assert_eq!(
        layer_dir_entries(&root),
        layers_before,
        "no layer or temp dir is left"
    );
    assert_eq!(image_fs_usage(&pierd).await, usage_before);

    store.resize(64 * MIB);
    let id = workload::try_pull(&pierd, &big.reference)
        .await
        .expect("the same pull works once there is room");
    assert_eq!(id, big.id);
    drop(pierd);
}

/// A gzip layer whose tar holds one file of `size` zero bytes, built a
/// MiB at a time (one gzip member each, which decoders read on), with the
/// diff id hashed by `sha256sum` as the tar streams through it: 1 GiB never
/// sits in memory or on disk.
fn gzip_bomb(size: u64) -> (Vec<u8>, String) {
    let mut header = tar::Header::new_gnu();
    header.set_path("bomb").expect("tar path");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let chunk = vec![0u8; MIB as usize];
    assert_eq!(size % MIB, 0);
    // The data ends on a block boundary; two zero blocks end the archive.
    let end = vec![0u8; 1024];
    let member = |data: &[u8]| {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    };
    let zeros = member(&chunk);
    let mut blob = member(header.as_bytes());
    let mut hasher = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut tar = hasher.stdin.take().expect("sha256sum stdin");
    tar.write_all(header.as_bytes()).expect("hash");
    for _ in 0..size / MIB {
        blob.extend_from_slice(&zeros);
        tar.write_all(&chunk).expect("hash");
    }
    blob.extend_from_slice(&member(&end));
    tar.write_all(&end).expect("hash");
    drop(tar);
    let out = hasher.wait_with_output().expect("sha256sum");
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned();
    (blob, format!("sha256:{hex}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gzip_bomb_stops_at_max_unpacked_bytes_and_leaves_nothing() {
    let (bomb, diff_id) = gzip_bomb(1 << 30);
    assert!(
        (bomb.len() as u64) < 4 * MIB,
        "the bomb is small: {}",
        bomb.len()
    );
    let registry = Registry::start();
    let pushed = push_layers(&registry, "tests/bomb:1", &[(bomb, diff_id)]).await;
    let limit = 32 * MIB;
    // Room for the limit and the database, far from the bomb's 1 GiB: an
    // unpack that went on past the limit would run out of disk instead.
    let store = Tmpfs::mount(limit + 16 * MIB);
    let root = store.join("root");
    let config = format!("[images]\nmax_unpacked_bytes = {limit}\n");
    let pierd = pierd_with_root(&registry, &root, &config).await;
    let printed = pierd.subcommand(&["config"]);
    assert!(
        String::from_utf8_lossy(&printed.stdout)
            .contains(&format!("[images]\nmax_unpacked_bytes = {limit}")),
        "pierd config shows the limit"
    );
    let (used_before, _) = store.usage();

    // Sample the store's use while the bomb unpacks.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done, path) = (peak.clone(), done.clone(), store.path().to_owned());
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::Relaxed;
            while !done.load(Relaxed) {
                if let Ok(fs) = nix::sys::statvfs::statvfs(&path) {
                    let used = (fs.blocks() - fs.blocks_free()) * fs.fragment_size();
                    peak.fetch_max(used, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let refused = workload::try_pull(&pierd, &pushed.reference)
        .await
        .expect_err("the bomb is refused");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let message = refused.message();
    assert!(message.contains("max_unpacked_bytes"), "{message}");
    assert!(message.contains(&limit.to_string()), "{message}");
    assert!(!message.contains("full"), "stopped by the limit: {message}");

    let written = peak.load(std::sync::atomic::Ordering::Relaxed) - used_before;
    assert!(
        written <= limit + MIB,
        "{written} bytes written for a limit of {limit}"
    );
    assert!(image_ids(&pierd).await.is_empty());
    assert!(
        layer_dir_entries(&root).is_empty(),
        "{:?}",
        layer_dir_entries(&root)
    );
    let (used_after, _) = store.usage();
    assert!(
        used_after <= used_before + MIB,
        "the partial layer is gone: {used_before} -> {used_after}"
    );
    drop(pierd);
}

/// The monitor's log counters of a container.
fn log_stats(pierd: &Pierd, id: &str) -> pier_proto::log_stats::LogStats {
    let path = pierd
        .runroot()
        .join("containers")
        .join(id)
        .join(pier_proto::files::LOG_STATS);
    pier_proto::log_stats::LogStats::read(&path)
        .expect("read log counters")
        .unwrap_or_default()
}

/// The container's counter. Its shell rewrites the file in place
/// (`echo $i > /tmp/progress` truncates, then writes), so a read can fall
/// between the two and find it empty: read again then.
async fn progress(cri: &mut Runtime, id: &str) -> u64 {
    for _ in 0..50 {
        let out = workload::exec(cri, id, &["/bin/cat", "/tmp/progress"], 10).await;
        if let Ok(count) = String::from_utf8_lossy(&out.stdout).trim().parse() {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    0
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The marker the monitor writes when the log takes writes again: the
/// bytes it reports lost, and the line as found.
fn marker(log: &Path) -> Option<(u64, String)> {
    let text = String::from_utf8_lossy(&std::fs::read(log).ok()?).into_owned();
    text.lines().find_map(|line| {
        let rest = line.split_once(" stderr F pier: ")?.1;
        let lost = rest.split_once(" bytes of log records were lost")?.0;
        Some((lost.parse().ok()?, line.to_owned()))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_log_disk_never_blocks_the_container_and_the_loss_is_counted_and_marked() {
    let registry = Registry::start();
    let (pierd, image) = workload::setup(&registry).await;
    let mut cri = pierd.cri().await.runtime;
    let logs = Tmpfs::mount(256 * 1024);
    let pod = workload::pod("full-log", logs.path());
    let pod_id = workload::run_pod(&mut cri, &pod).await;
    // About 1 KiB of log per line, a few hundred lines a second; the
    // counter in /tmp (the container's own layer, not the log disk) shows
    // how far it got.
    let script = "s=x; for _ in 1 2 3 4 5 6 7 8 9 10; do s=$s$s; done; i=0; \
                  while true; do i=$((i+1)); echo \"$i $s\"; echo $i > /tmp/progress; \
                  sleep 0.002; done";
    let config = workload::container("writer", &image, script);
    let log = logs.path().join(&config.log_path);
    let id = workload::run(&mut cri, &pod_id, &pod, config).await;

    wait_until("the log disk fills", Duration::from_secs(30), || async {
        log_stats(&pierd, &id).dropped_bytes > 0
    })
    .await;
    let (_, free) = logs.usage();
    assert!(free < 8 * 1024, "the log disk is full: {free} bytes free");
    // While the disk stays full, the container goes on writing.
    let first = progress(&mut cri, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = progress(&mut cri, &id).await;
    assert!(
        second > first + 20,
        "the container is not blocked: {first} -> {second}"
    );
    let size_while_full = std::fs::metadata(&log).expect("log").len();
    let dropped_while_full = log_stats(&pierd, &id).dropped_bytes;
    assert!(
        marker(&log).is_none(),
        "no marker while nothing can be written"
    );

    logs.resize(64 * MIB);
    let mut found = None;
    wait_until("the marker line", Duration::from_secs(10), || {
        found = marker(&log);
        std::future::ready(found.is_some())
    })
    .await;
    let (lost, line) = found.expect("marker");
    assert!(lost >= dropped_while_full, "{line}");
    assert!(line.contains("No space left on device"), "{line}");
    let timestamp = line.split(' ').next().unwrap_or_default();
    assert!(
        timestamp.len() > 20 && timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "the marker is a CRI log record: {line}"
    );
    // Then the log resumes with the container's newer lines.
    wait_until("lines after the marker", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let after = text.split_once(&line).map(|(_, after)| after.to_owned());
        std::future::ready(after.is_some_and(|after| after.lines().count() > 5))
    })
    .await;
    assert!(std::fs::metadata(&log).expect("log").len() > size_while_full);
    // The counter holds exactly what the marker reported, and no more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = log_stats(&pierd, &id);
    assert_eq!(stats.dropped_bytes, lost, "{line}");
    assert_eq!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("bytes of log records were lost")
            .count(),
        1
    );
    let status = workload::status(&mut cri, &id).await;
    assert_eq!(status.state(), ContainerState::ContainerRunning);
    workload::remove_pod(&mut cri, &pod_id).await;
    drop(logs);
}
