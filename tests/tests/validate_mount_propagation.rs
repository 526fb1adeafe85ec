//! critest's "Container Mount Propagation" specs: a privileged container
//! with a host directory mounted `rprivate`, `rslave` or `rshared`; a mount
//! made on the host afterwards must (or must not) appear in the container,
//! and one made in the container must (or must not) appear on the host.

use std::path::{Path, PathBuf};

use k8s_cri::v1::*;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use pier_tests::workload::*;

/// The host side: `mnt` is a bind mount of itself with the propagation
/// under test; `src` holds a flag file to mount into `mnt` later. Unmounts
/// everything below its root and removes it on drop.
struct HostDirs {
    root: tempfile::TempDir,
    mnt: PathBuf,
    propagation_mnt: PathBuf,
    src: PathBuf,
}

impl HostDirs {
    fn new(shared: bool) -> Self {
        let root = tempfile::Builder::new()
            .prefix("pier-propagation")
            .tempdir()
            .expect("tempdir");
        let mnt = root.path().join("mnt");
        let propagation_mnt = mnt.join("propagationMnt");
        let src = root.path().join("propagationSrcDir");
        std::fs::create_dir_all(&propagation_mnt).expect("mkdir propagationMnt");
        std::fs::create_dir_all(&src).expect("mkdir propagationSrcDir");
        std::fs::write(src.join("flagFile"), b"").expect("flag file");
        let dirs = Self {
            root,
            mnt,
            propagation_mnt,
            src,
        };
        let none: Option<&str> = None;
        mount(
            Some(&dirs.mnt),
            &dirs.mnt,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .expect("bind mnt onto itself");
        let kind = if shared {
            MsFlags::MS_SHARED
        } else {
            MsFlags::MS_PRIVATE
        };
        mount(none, &dirs.mnt, none, kind | MsFlags::MS_REC, none).expect("set propagation");
        dirs
    }

    /// Mounts the flag directory at `propagation_mnt`, on the host.
    fn mount_flag_dir(&self) {
        let none: Option<&str> = None;
        mount(
            Some(&self.src),
            &self.propagation_mnt,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .expect("bind the flag dir on the host");
    }
}

impl Drop for HostDirs {
    fn drop(&mut self) {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.root.path().display().to_string();
        let mut points: Vec<&str> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = umount2(point, MntFlags::MNT_DETACH);
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// What a propagation mode must show: (host mount seen in the container,
/// container mount seen on the host).
async fn check_propagation(propagation: MountPropagation, into: bool, back: bool) {
    let host = HostDirs::new(propagation != MountPropagation::PropagationPrivate);
    let mnt = host.mnt.display().to_string();
    let mut node = Node::start().await;
    let mut pod = node.pod("mount-propagation");
    pod_security(&mut pod).privileged = true;
    let pod_id = node.run_pod(&pod).await;
    let mut config = node.container("mount-propagation-test", &["sh", "-c", "top"]);
    security(&mut config).privileged = true;
    config.mounts = vec![Mount {
        host_path: mnt.clone(),
        container_path: mnt.clone(),
        propagation: propagation as i32,
        ..Default::default()
    }];
    let id = create(&mut node.cri, &pod_id, &pod, config).await;

    let verbose = node
        .cri
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(verbose.mounts.len(), 1, "{:?}", verbose.mounts);
    let reported = &verbose.mounts[0];
    assert_eq!(reported.container_path, mnt);
    assert_eq!(reported.host_path, mnt);
    assert!(!reported.readonly && !reported.selinux_relabel);
    assert_eq!(reported.propagation, propagation as i32);

    start(&mut node.cri, &id).await;
    host.mount_flag_dir();
    let inside = host.propagation_mnt.display().to_string();
    let out = exec(&mut node.cri, &id, &["ls", "-A", &inside], 30).await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let seen = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if into {
        assert_eq!(
            seen, "flagFile",
            "the host's mount did not reach the container"
        );
    } else {
        assert_eq!(seen, "", "the host's mount reached the container");
    }

    let container_mnt = host.mnt.join("containerMntPoint");
    let script = format!(
        "mkdir -p {0} && mount --bind /etc {0}",
        container_mnt.display()
    );
    let out = exec(&mut node.cri, &id, &["sh", "-c", &script], 30).await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let on_host = entries(&container_mnt);
    if back {
        assert!(
            on_host.iter().any(|e| e == "passwd"),
            "the container's mount did not reach the host: {on_host:?}"
        );
    } else {
        assert!(
            on_host.is_empty(),
            "the container's mount reached the host: {on_host:?}"
        );
    }
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rprivate_mount_propagates_nothing() {
    check_propagation(MountPropagation::PropagationPrivate, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rshared_mount_propagates_both_ways() {
    check_propagation(MountPropagation::PropagationBidirectional, true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rslave_mount_propagates_from_host_to_container_only() {
    check_propagation(MountPropagation::PropagationHostToContainer, true, false).await;
}
