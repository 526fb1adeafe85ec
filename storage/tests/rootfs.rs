//! Container root filesystems and what a restart cleans up.

mod common;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use common::{Blob, Registry, TarLayer, TestStore, config_json};
use pier_storage::{Auth, ErrorKind, ImageError, PullError};

fn is_mounted(path: &Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

async fn pull_layered(reg: &Registry, t: &TestStore) -> pier_storage::Image {
    let base = TarLayer::new()
        .dir("bin")
        .file("bin/busybox", b"#!busybox")
        .dir("etc")
        .file("etc/motd", b"hello")
        .dir("var/cache")
        .file("var/cache/old", b"old")
        .finish();
    let top = TarLayer::new()
        .file("etc/.wh.motd", b"")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"new")
        .finish();
    let layers = vec![Blob::gzip(&base), Blob::gzip(&top)];
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = config_json(&diff_ids, "amd64", "");
    reg.push_image("test/rootfs:v1", &layers, &config, false)
        .await;
    t.store
        .pull(&format!("{}/test/rootfs:v1", reg.host()), &Auth::default())
        .await
        .unwrap()
}

fn add_container(t: &TestStore, id: &str, image_id: &str) {
    let db = t.db.lock().unwrap();
    if db.sandbox("s1").unwrap().is_none() {
        db.insert_sandbox(&pier_storage::SandboxRecord {
            id: "s1".into(),
            name: "pod".into(),
            namespace: "default".into(),
            uid: "u".into(),
            attempt: 0,
            state: "ready".into(),
            created_at: 1,
            runtime_handler: String::new(),
            config: vec![],
            runtime: vec![],
        })
        .unwrap();
    }
    db.insert_container(&pier_storage::ContainerRecord {
        id: id.into(),
        sandbox_id: "s1".into(),
        name: id.into(),
        image_id: image_id.into(),
        state: "created".into(),
        ..Default::default()
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rootfs_overlays_the_layers_with_a_private_writable_layer() {
    let reg = Registry::start();
    let t = TestStore::new(&[reg.host()]).await;
    let image = pull_layered(&reg, &t).await;
    add_container(&t, "c1", &image.id);

    let merged = t.store.create_rootfs("c1", &image.id, None).await.unwrap();
    assert!(is_mounted(&merged));
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == merged.to_str())
        .unwrap();
    // This machine's kernel has it (5.10+): unmounting then skips a sync.
    assert!(line.contains("volatile"), "{line}");
    assert_eq!(fs::read(merged.join("bin/busybox")).unwrap(), b"#!busybox");
    assert!(
        !merged.join("etc/motd").exists(),
        "whiteout hides the lower file"
    );
    assert!(
        !merged.join("var/cache/old").exists(),
        "opaque dir hides the lower dir"
    );
    assert!(merged.join("var/cache/new").exists());

    fs::write(merged.join("written"), b"by the container").unwrap();
    let upper = t.root().join("containers/c1/upper");
    assert_eq!(
        fs::read(upper.join("written")).unwrap(),
        b"by the container"
    );
    fs::remove_file(merged.join("bin/busybox")).unwrap();
    assert!(
        fs::symlink_metadata(upper.join("bin/busybox"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let lower = t
        .root()
        .join("layers")
        .join(image.layers[0].trim_start_matches("sha256:"));
    assert!(
        lower.join("bin/busybox").exists(),
        "layers are never written"
    );

    assert_eq!(
        t.store.create_rootfs("c1", &image.id, None).await.unwrap(),
        merged
    );
    t.store.remove_container_files("c1").await.unwrap();
    assert!(!is_mounted(&merged));
    assert!(!t.root().join("containers/c1").exists());
    t.store.remove_container_files("c1").await.unwrap();

    let err = t
        .store
        .create_rootfs("../escape", &image.id, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid container id"), "{err}");
    let err = t
        .store
        .create_rootfs("c2", &"0".repeat(64), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// More layers than mount options name even by short links: the layers are
/// added one by one through the new mount API, and their links go with them.
#[tokio::test(flavor = "multi_thread")]
async fn rootfs_of_two_hundred_layers_mounts_and_its_links_go_with_the_image() {
    let reg = Registry::start();
    let t = TestStore::new(&[reg.host()]).await;
    let layers: Vec<Blob> = (0..200)
        .map(|i| {
            Blob::gzip(
                &TarLayer::new()
                    .dir("layers")
                    .file(&format!("layers/{i}"), format!("layer {i}").as_bytes())
                    .file("stack", format!("{i}").as_bytes())
                    .finish(),
            )
        })
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    reg.push_image(
        "test/tall:200",
        &layers,
        &config_json(&diff_ids, "amd64", ""),
        false,
    )
    .await;
    let image = t
        .store
        .pull(&format!("{}/test/tall:200", reg.host()), &Auth::default())
        .await
        .unwrap();
    assert_eq!(image.layers.len(), 200);
    add_container(&t, "tall", &image.id);

    let merged = t
        .store
        .create_rootfs("tall", &image.id, None)
        .await
        .unwrap();
    assert!(is_mounted(&merged));
    assert_eq!(
        fs::read(merged.join("stack")).unwrap(),
        b"199",
        "top layer wins"
    );
    assert_eq!(fs::read(merged.join("layers/0")).unwrap(), b"layer 0");
    assert_eq!(fs::read_dir(merged.join("layers")).unwrap().count(), 200);

    t.store.remove_container_files("tall").await.unwrap();
    t.db.lock().unwrap().delete_container("tall").unwrap();
    t.store.remove(&image.id).await.unwrap();
    assert!(t.layer_dirs().is_empty());
    assert!(
        common::list_dir(&t.root().join("l")).is_empty(),
        "no link outlives its layer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_removes_leftover_mounts_and_partial_pulls_but_keeps_live_ones() {
    let reg = Registry::start();
    let mut t = TestStore::new(&[reg.host()]).await;
    let image = pull_layered(&reg, &t).await;
    add_container(&t, "live", &image.id);
    let live = t
        .store
        .create_rootfs("live", &image.id, None)
        .await
        .unwrap();
    let ghost = t
        .store
        .create_rootfs("ghost", &image.id, None)
        .await
        .unwrap();

    // What a crash mid-pull leaves behind.
    let layers = t.root().join("layers");
    fs::create_dir_all(layers.join(".tmp-0123")).unwrap();
    fs::write(layers.join(".tmp-0123/half"), b"x").unwrap();
    fs::create_dir_all(layers.join("ab".repeat(32))).unwrap();
    fs::write(t.root().join("blobs/tmp/partial"), b"x").unwrap();
    fs::write(t.root().join("blobs/sha256").join("cd".repeat(32)), b"x").unwrap();
    // A removal whose background deletion a crash cut short.
    fs::create_dir_all(t.root().join("containers/.trash-gone/upper")).unwrap();
    let layers_before = t.layer_dirs().len();

    t.reopen().await;
    assert!(!is_mounted(&ghost), "a crash's mount is removed");
    assert!(!t.root().join("containers/ghost").exists());
    assert!(!t.root().join("containers/.trash-gone").exists());
    assert!(is_mounted(&live), "a recorded container keeps its rootfs");
    assert_eq!(t.layer_dirs().len(), layers_before - 2);
    assert!(common::list_dir(&t.root().join("blobs/tmp")).is_empty());
    assert!(!t.root().join("blobs/sha256").join("cd".repeat(32)).exists());
    assert!(t.store.status(&image.id).await.unwrap().is_some());
    t.store.remove_container_files("live").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_pull_cleanly() {
    let reg = Registry::start();
    let zeros = vec![0u8; 4 << 20];
    let layer = Blob::gzip(&TarLayer::new().file("big", &zeros).finish());
    let config = config_json(std::slice::from_ref(&layer.diff_id), "amd64", "");
    reg.push_image("test/big:v1", &[layer], &config, false)
        .await;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let mut config = pier_storage::StoreConfig::new(&root);
    config.registry.insecure = vec![reg.host()];
    let t = TestStore::with_config(dir, config).await;
    let err = t
        .store
        .pull(&format!("{}/test/big:v1", reg.host()), &Auth::default())
        .await;
    let err = err.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("image store is full"), "{err}");
    assert!(matches!(
        err,
        ImageError::Pull {
            cause: PullError::DiskFull { .. },
            ..
        }
    ));
    assert!(t.layer_dirs().is_empty());
    assert!(t.store.list(None).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_info_counts_layers_and_writable_layers() {
    let reg = Registry::start();
    let t = TestStore::new(&[reg.host()]).await;
    let empty = t.store.fs_info().await.unwrap();
    let image = pull_layered(&reg, &t).await;
    let pulled = t.store.fs_info().await.unwrap();
    assert!(pulled.images.bytes > empty.images.bytes);
    assert!(pulled.images.inodes >= empty.images.inodes + 8);
    assert_eq!(pulled.images.path, t.root());

    add_container(&t, "c1", &image.id);
    let merged = t.store.create_rootfs("c1", &image.id, None).await.unwrap();
    fs::write(merged.join("blob"), vec![1u8; 1 << 20]).unwrap();
    let written = t.store.fs_info().await.unwrap();
    assert!(written.containers.bytes >= pulled.containers.bytes + (1 << 20));
    assert_eq!(
        written.images.bytes, pulled.images.bytes,
        "the merged view is not counted"
    );
    t.store.remove_container_files("c1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volume_is_a_read_only_view_that_holds_its_image() {
    let reg = Registry::start();
    let t = TestStore::new(&[reg.host()]).await;
    let only = TarLayer::new()
        .dir("data")
        .file("data/hello", b"hello")
        .finish();
    let layers = vec![Blob::gzip(&only)];
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    reg.push_image(
        "test/volume:v1",
        &layers,
        &config_json(&diff_ids, "amd64", ""),
        false,
    )
    .await;
    let image = t
        .store
        .pull(&format!("{}/test/volume:v1", reg.host()), &Auth::default())
        .await
        .unwrap();
    // The container itself runs another image.
    add_container(&t, "c1", "sha256:another");
    let target = tempfile::tempdir().unwrap();
    let mounted = t
        .store
        .mount_image_volume("c1", &image.id, target.path(), None)
        .await
        .unwrap();
    assert_eq!(mounted.id, image.id);
    assert_eq!(
        fs::read(target.path().join("data/hello")).unwrap(),
        b"hello"
    );
    let err = fs::write(target.path().join("data/new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
    let flags = nix::sys::statvfs::statvfs(target.path()).unwrap().flags();
    use nix::sys::statvfs::FsFlags;
    for flag in [
        FsFlags::ST_RDONLY,
        FsFlags::ST_NOSUID,
        FsFlags::ST_NODEV,
        FsFlags::ST_NOEXEC,
    ] {
        assert!(flags.contains(flag), "{flag:?} missing from {flags:?}");
    }

    let err = t.store.remove(&image.id).await.unwrap_err();
    assert!(
        matches!(&err, ImageError::InUse { containers, .. } if containers == &["c1"]),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    nix::mount::umount2(target.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
    // The use goes with the container's row.
    t.db.lock().unwrap().delete_container("c1").unwrap();
    t.store.remove(&image.id).await.unwrap();
    assert!(t.store.status(&image.id).await.unwrap().is_none());
}

/// `EROFS`, a read-only filesystem refusing a write.
fn libc_erofs() -> i32 {
    nix::errno::Errno::EROFS as i32
}
