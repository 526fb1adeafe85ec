//! pierd out of file descriptors, and its database locked by another
//! process or damaged.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::workload::{self, Runtime};
use pier_tests::{ImageSpec as TestImage, Pierd, Registry};
use tonic::Code;

/// Descriptors a process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `after_name` starts at field 3.
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

/// Sets the soft RLIMIT_NOFILE of a running process; puts the old one
/// back when dropped.
struct NofileLimit {
    pid: u32,
    old: String,
}

impl NofileLimit {
    fn set(pid: u32, soft: usize) -> Self {
        let old = Command::new("prlimit")
            .args([
                "--pid",
                &pid.to_string(),
                "--nofile",
                "--raw",
                "--noheadings",
                "--output=SOFT,HARD",
            ])
            .output()
            .expect("run prlimit");
        let old = String::from_utf8_lossy(&old.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(":");
        assert!(!old.is_empty(), "prlimit reads the limit");
        let limit = Self { pid, old };
        limit.apply(&format!("{soft}:"));
        limit
    }

    fn apply(&self, value: &str) {
        let done = Command::new("prlimit")
            .args(["--pid", &self.pid.to_string(), &format!("--nofile={value}")])
            .status()
            .expect("run prlimit");
        assert!(done.success(), "prlimit --nofile={value}");
    }
}

impl Drop for NofileLimit {
    fn drop(&mut self) {
        let _ = Command::new("prlimit")
            .args([
                "--pid",
                &self.pid.to_string(),
                &format!("--nofile={}", self.old),
            ])
            .status();
    }
}

async fn try_run_pod(
    cri: &mut Runtime,
    config: &PodSandboxConfig,
) -> Result<String, tonic::Status> {
    cri.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_file_descriptors_calls_are_resource_exhausted_and_pierd_recovers() {
    let registry = Registry::start();
    let (pierd, _image) = workload::setup(&registry).await;
    let pid = pierd.pid().expect("pierd runs");
    // The test's own connection is made before descriptors run out.
    let mut cri = pierd.cri().await.runtime;
    let logs = tempfile::tempdir().expect("tempdir");
    let pod = workload::pod("nofile", logs.path());

    // Room for what RunPodSandbox needs at once (files, pipes to the
    // namespace helper and the CNI plugins), which idle connections take.
    let idle = open_fds(pid);
    let limit = idle + 32;
    let guard = NofileLimit::set(pid, limit);
    // Each accepted connection costs pierd a descriptor; the ones beyond
    // its limit wait in the socket's backlog.
    let hogs: Vec<UnixStream> = (0..48)
        .map(|_| UnixStream::connect(pierd.socket()).expect("connect"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < limit {
        assert!(Instant::now() < deadline, "pierd took the connections");
        std::thread::sleep(Duration::from_millis(20));
    }

    let refused = try_run_pod(&mut cri, &pod)
        .await
        .expect_err("no descriptor left");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("Too many open files"),
        "{}",
        refused.message()
    );
    // Connections wait in the backlog; the accept loop does not spin.
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(pid) - before;
    assert!(
        used < 20,
        "pierd used {used} ticks of CPU in a second while out of descriptors"
    );
    // Calls that need no new descriptor are still served.
    cri.version(VersionRequest::default())
        .await
        .expect("Version");

    drop(hogs);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > idle + 2 {
        assert!(Instant::now() < deadline, "pierd closed the connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    let listed = cri
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert!(
        listed.is_empty(),
        "the refused pod left nothing: {listed:?}"
    );
    let pod_id = try_run_pod(&mut cri, &pod)
        .await
        .expect("RunPodSandbox once load dropped");
    drop(guard);
    workload::remove_pod(&mut cri, &pod_id).await;
    // New connections are accepted again.
    let mut fresh = pierd.cri().await.runtime;
    fresh
        .version(VersionRequest::default())
        .await
        .expect("Version on a new connection");
    assert!(
        pierd.log().contains("out of file descriptors"),
        "the accept loop said why it waited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_locked_by_another_process_fails_calls_as_unavailable_after_a_bounded_wait() {
    let registry = Registry::start();
    let (pierd, image) = workload::setup(&registry).await;
    let db_path = pierd.root().join("pier.db");
    let holder = rusqlite::Connection::open(&db_path).expect("open the database");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    let mut images = pierd.cri().await.images;
    // Reads go on beside the writer (WAL).
    let listed = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages while locked")
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);
    let started = Instant::now();
    let refused = images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("RemoveImage cannot write");
    let waited = started.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let message = refused.message();
    assert!(message.contains("locked by another process"), "{message}");
    assert!(message.contains("retry"), "{message}");
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(20),
        "a bounded wait: {waited:?}"
    );

    holder.execute_batch("ROLLBACK").expect("release the lock");
    drop(holder);
    let status = images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    assert!(
        status.image.is_some(),
        "nothing changed on the refused call"
    );
    images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image,
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage once the lock is gone");
}

/// The digest of a file's bytes, `None` if it does not exist.
fn digest(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|bytes| pier_tests::image::sha256(&bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_database_stops_pierd_naming_the_file_and_is_left_as_it_was() {
    let registry = Registry::start();
    let pushed = TestImage::default()
        .push(&registry, "tests/busybox:1")
        .await;
    let mut pierd = Pierd::start_with(pier_tests::PierdOptions {
        args: vec!["--insecure-registry".into(), registry.host()],
        ..Default::default()
    })
    .await;
    workload::pull(&pierd, &pushed.reference).await;
    assert!(pierd.terminate().success());
    let db = pierd.root().join("pier.db");
    let good = std::fs::read(&db).expect("read the database");
    assert!(good.len() >= 8192, "{} bytes", good.len());

    // A damaged header, then damaged pages behind an intact header.
    let mut damaged_header = good.clone();
    damaged_header[..16].copy_from_slice(b"not a database!!");
    let mut damaged_pages = good.clone();
    for byte in &mut damaged_pages[100..4096] {
        *byte = 0xa5;
    }
    for damaged in [damaged_header, damaged_pages] {
        std::fs::write(&db, &damaged).expect("damage the database");
        let wal = db.with_extension("db-wal");
        let (db_before, wal_before) = (digest(&db), digest(&wal));
        let (status, log) = pierd.restart_refused();
        assert!(!status.success(), "pierd refuses a damaged database: {log}");
        assert!(
            log.contains(&db.display().to_string()),
            "the error names the file: {log}"
        );
        assert!(log.contains("does not modify"), "{log}");
        assert_eq!(
            digest(&db),
            db_before,
            "the file is left byte for byte: {log}"
        );
        // SQLite's read-only open of a WAL database may create an empty
        // log beside it; one that held anything must be left as it was.
        if wal_before.is_some() || digest(&wal) != Some(pier_tests::image::sha256(b"")) {
            assert_eq!(digest(&wal), wal_before, "the WAL is left as it was: {log}");
        }
    }

    std::fs::write(&db, &good).expect("restore the database");
    pierd.restart().await;
    let mut images = pierd.cri().await.images;
    let listed = images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1, "the restored database serves as before");
}
