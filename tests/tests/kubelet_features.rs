//! What kubelets from 1.30 on ask of a runtime beyond critest v1.26, each
//! through a real pierd, runc and busybox containers: recursive read-only
//! mounts (KEP-3857), image volumes (KEP-4639), the supplemental groups
//! policy (KEP-3619), and `Status` advertising what the node supports. User
//! namespaces (KEP-127) are in `kubelet_userns.rs`.

use std::path::{Path, PathBuf};

use k8s_cri::v1::*;
use pier_tests::workload::*;
use pier_tests::{ImageSpec as TestImage, Layer, Pierd};
use tonic::Code;

fn numbers(text: &str) -> Vec<i64> {
    let mut out: Vec<i64> = text
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    out.sort_unstable();
    out
}

// ---- Status -------------------------------------------------------------

/// (major, minor) of the running kernel.
fn kernel() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_advertises_what_this_node_and_runc_support() {
    let pierd = Pierd::start().await;
    let mut cri = pierd.cri().await.runtime;
    let status = cri
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let features = status.features.expect("features");
    assert!(features.supplemental_groups_policy);

    // What runc says of itself, and the kernel: the detection the CRI's
    // own comment on RuntimeHandlerFeatures describes.
    let runc = std::process::Command::new("runc")
        .arg("features")
        .output()
        .expect("runc features");
    let runc: serde_json::Value = serde_json::from_slice(&runc.stdout).expect("features JSON");
    let lists = |list: &serde_json::Value, word: &str| {
        list.as_array()
            .is_some_and(|l| l.iter().any(|w| w.as_str() == Some(word)))
    };
    let rro = kernel() >= (5, 12) && lists(&runc["mountOptions"], "rro");
    // Idmapped tmpfs (the pod's /dev/shm, kubelet's secrets) came last, in 6.3.
    let userns = kernel() >= (6, 3) && lists(&runc["linux"]["namespaces"], "user");
    let names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["", "runc"]);
    for handler in &status.runtime_handlers {
        let got = handler.features.expect("handler features");
        assert_eq!(
            (got.recursive_read_only_mounts, got.user_namespaces),
            (rro, userns),
            "handler {:?}",
            handler.name
        );
    }
}

// ---- Recursive read-only mounts -----------------------------------------

/// A host directory with a tmpfs mounted below it, unmounted on drop.
struct WithSubmount {
    dir: tempfile::TempDir,
    sub: PathBuf,
}

impl WithSubmount {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        nix::mount::mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount a tmpfs below the volume");
        Self { dir, sub }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for WithSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.sub, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn read_only_mount(host: &Path, recursive: bool) -> Mount {
    Mount {
        container_path: "/ro".into(),
        host_path: host.display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_volume_refuses_writes_in_its_submounts_too() {
    let mut node = Node::start().await;
    let volume = WithSubmount::new();
    let pod = node.pod("rro");
    let pod_id = node.run_pod(&pod).await;
    let mut rro = node.container("rro", SLEEP);
    rro.mounts = vec![read_only_mount(volume.path(), true)];
    let mut plain = node.container("plain-ro", SLEEP);
    plain.mounts = vec![read_only_mount(volume.path(), false)];
    let rro = node.run(&pod_id, &pod, rro).await;
    let plain = node.run(&pod_id, &pod, plain).await;
    let cri = &mut node.cri;

    for id in [&rro, &plain] {
        let (code, _, err) = sh(cri, id, "touch /ro/top").await;
        assert_ne!(code, 0);
        assert!(err.contains("Read-only file system"), "{err}");
    }
    let (code, _, err) = sh(cri, &rro, "touch /ro/sub/below").await;
    assert_ne!(
        code, 0,
        "a submount of a recursively read-only volume took a write"
    );
    assert!(err.contains("Read-only file system"), "{err}");
    // Without `recursive_read_only` the submount stays writable: what the
    // feature is for.
    sh_ok(cri, &plain, "touch /ro/sub/below").await;
    assert!(volume.sub.join("below").exists());

    // Only read-only, privately propagated mounts can be recursively
    // read-only, as kubelet's own validation has it.
    let mut not_ro = read_only_mount(volume.path(), true);
    not_ro.readonly = false;
    let mut shared = read_only_mount(volume.path(), true);
    shared.propagation = MountPropagation::PropagationHostToContainer as i32;
    for (name, mount) in [("not-ro", not_ro), ("slave", shared)] {
        let mut config = node.container(name, SLEEP);
        config.mounts = vec![mount];
        let err = try_create(&mut node.cri, &pod_id, &pod, config)
            .await
            .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(
            err.message().contains("recursive_read_only"),
            "{}",
            err.message()
        );
    }
    remove_pod(&mut node.cri, &pod_id).await;
}

// ---- Image volumes -------------------------------------------------------

type Images = k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>;

async fn image_status(images: &mut Images, image: &str) -> Option<Image> {
    let request = ImageStatusRequest {
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        verbose: false,
    };
    images
        .image_status(request)
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volume_is_readable_read_only_and_keeps_its_image() {
    let mut node = Node::start().await;
    let spec = TestImage::default()
        .file("/data/hello.txt", "hello from the image\n", 0o644)
        .file("/data/run.sh", "#!/bin/sh\necho ran\n", 0o755)
        .layer(Layer::new().file("/data/top.txt", "top layer\n"));
    let pushed = spec.push(&node.registry, "tests/volume:1").await;
    let mut images = node.pierd.cri().await.images;
    // kubelet mounts what PullImage returned.
    let image_ref = images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: pushed.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("PullImage")
        .into_inner()
        .image_ref;
    let fs_info = |info: ImageFsInfoResponse| {
        let fs = &info.image_filesystems[0];
        (
            fs.used_bytes.as_ref().map(|u| u.value),
            fs.inodes_used.as_ref().map(|u| u.value),
        )
    };
    let before = fs_info(
        images
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("ImageFsInfo")
            .into_inner(),
    );

    let pod = node.pod("image-volume");
    let pod_id = node.run_pod(&pod).await;
    let mut config = node.container("image-volume", SLEEP);
    config.mounts = vec![Mount {
        container_path: "/volume".into(),
        image: Some(ImageSpec {
            image: image_ref.clone(),
            ..Default::default()
        }),
        readonly: true,
        ..Default::default()
    }];
    let id = node.run(&pod_id, &pod, config).await;
    let cri = &mut node.cri;

    assert_eq!(
        sh_ok(cri, &id, "cat /volume/data/hello.txt /volume/data/top.txt").await,
        "hello from the image\ntop layer\n"
    );
    let (code, _, err) = sh(cri, &id, "touch /volume/data/new").await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let (code, _, err) = sh(cri, &id, "/volume/data/run.sh").await;
    assert_ne!(code, 0, "noexec: the image's script must not run");
    assert!(err.contains("Permission denied"), "{err}");
    let options = sh_ok(cri, &id, "grep ' /volume ' /proc/self/mountinfo").await;
    for option in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            options.split([' ', ',']).any(|o| o == option),
            "{option} missing: {options}"
        );
    }
    let stages = node.pierd.runroot().join("mounts").display().to_string();
    assert!(
        !mount_points().iter().any(|m| m.starts_with(&stages)),
        "the volume is the container's alone: nothing stays mounted on the node"
    );

    // In use: RemoveImage refuses it; status and usage are as they were.
    let err = images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image_ref.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("RemoveImage of an image a volume uses");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains(&id), "{}", err.message());
    assert!(image_status(&mut images, &image_ref).await.is_some());
    let during = fs_info(
        images
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("ImageFsInfo")
            .into_inner(),
    );
    assert_eq!(
        during, before,
        "an image volume takes no space of the image store"
    );

    // Gone with its container.
    remove_pod(cri, &pod_id).await;
    assert!(!node.pierd.runroot().join("mounts").join(&id).exists());
    images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image_ref.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage once the container is gone");
    assert!(image_status(&mut images, &image_ref).await.is_none());
}

// ---- Supplemental groups policy -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_groups_leave_the_images_groups_out_and_merge_keeps_them() {
    // The test image's user `pier` (1000) is in group `extra` (2000).
    let mut node = Node::start().await;
    let pod = node.pod("groups");
    let pod_id = node.run_pod(&pod).await;
    let mut ids = Vec::new();
    for (name, policy) in [
        ("merge", SupplementalGroupsPolicy::Merge),
        ("strict", SupplementalGroupsPolicy::Strict),
    ] {
        let mut config = node.container(name, SLEEP);
        let context = security(&mut config);
        context.run_as_user = Some(Int64Value { value: 1000 });
        context.supplemental_groups = vec![1234];
        context.supplemental_groups_policy = policy as i32;
        ids.push(node.run(&pod_id, &pod, config).await);
    }
    let cri = &mut node.cri;
    for (id, expected) in ids.iter().zip([vec![1000, 1234, 2000], vec![1000, 1234]]) {
        // What the kernel gave the processes, inside and as the node sees it.
        let inside = sh_ok(cri, id, "grep Groups /proc/self/status | cut -d: -f2").await;
        assert_eq!(numbers(&inside), expected, "inside {id}");
        let pid = host_pid(cri, id).await;
        assert_eq!(
            numbers(&proc_status(pid, "Groups")),
            expected,
            "host view of {id}"
        );
        let user = status(cri, id)
            .await
            .user
            .and_then(|u| u.linux)
            .expect("user");
        let mut groups = user.supplemental_groups.clone();
        groups.sort_unstable();
        assert_eq!((user.uid, user.gid, groups), (1000, 1000, expected));
    }
    remove_pod(cri, &pod_id).await;
}
