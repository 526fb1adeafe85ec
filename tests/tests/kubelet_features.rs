//! What kubelets from 1.30 on ask of a runtime beyond critest v1.26, each
//! through a real pierd, runc and busybox containers: user namespaces
//! (KEP-127, `hostUsers: false`), recursive read-only mounts (KEP-3857),
//! image volumes (KEP-4639), the supplemental groups policy (KEP-3619), and
//! `Status` advertising them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::streams::{read_channels, spdy, websocket};
use pier_tests::workload::*;
use pier_tests::{ImageSpec as TestImage, Layer, Pierd};
use tonic::Code;

/// A container that says it started, then sleeps.
const SLEEP: &[&str] = &["sh", "-c", "echo started; exec sleep 100000"];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The container's first process as the node sees it.
async fn host_pid(cri: &mut Runtime, id: &str) -> i32 {
    let info = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .info;
    let info: serde_json::Value =
        serde_json::from_str(info.get("info").expect("verbose info")).expect("info is JSON");
    info["pid"].as_i64().expect("pid") as i32
}

/// A field of `/proc/<pid>/status`, as the node reads it.
fn proc_status(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Runs `script` in the container; returns (exit code, stdout, stderr).
async fn sh(cri: &mut Runtime, id: &str, script: &str) -> (i32, String, String) {
    let out = exec(cri, id, &["sh", "-c", script], 30).await;
    (out.exit_code, text(&out.stdout), text(&out.stderr))
}

/// Runs `script`, which must succeed; returns its stdout.
async fn sh_ok(cri: &mut Runtime, id: &str, script: &str) -> String {
    let (code, out, err) = sh(cri, id, script).await;
    assert_eq!(code, 0, "{script}: {err}");
    out
}

fn numbers(text: &str) -> Vec<i64> {
    let mut out: Vec<i64> = text
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    out.sort_unstable();
    out
}

/// The host paths of the node's current mounts.
fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
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

// ---- User namespaces ----------------------------------------------------

/// kubelet gives each pod 65536 ids at a multiple of 65536; this test's
/// pods take a range no other test process uses at the same time.
fn mapping_base() -> u32 {
    65536 * (1024 + std::process::id() % 4096)
}

fn userns(base: u32) -> UserNamespace {
    let range = vec![IdMapping {
        host_id: base,
        container_id: 0,
        length: 65536,
    }];
    UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: range.clone(),
        gids: range,
    }
}

fn userns_pod(node: &Node, name: &str, userns: UserNamespace) -> PodSandboxConfig {
    let mut pod = node.pod(name);
    pod.hostname = format!("{name}-pod");
    // A shared PID namespace: its `pier-infra` runs in the pod's user
    // namespace too.
    pod_security(&mut pod).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        userns_options: Some(userns),
        ..Default::default()
    });
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_users_false_pod_runs_with_its_own_ids_everywhere() {
    let mut node = Node::start().await;
    let base = mapping_base();
    let data = node
        .add_image(
            &TestImage::default().file("/data/hello.txt", "hello\n", 0o644),
            "tests/userns-data:1",
        )
        .await;
    let pod = userns_pod(&node, "userns", userns(base));
    let pod_id = node.run_pod(&pod).await;

    // A volume with a file of root's and one of uid 1000's, as on disk.
    let volume = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(volume.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(volume.path().join("by-root"), "r").expect("write");
    std::fs::write(volume.path().join("by-1000"), "u").expect("write");
    std::os::unix::fs::chown(volume.path().join("by-1000"), Some(1000), Some(1000)).expect("chown");

    let mut config = node.container("userns", SLEEP);
    config.log_path = "userns.log".into();
    config.mounts = vec![
        Mount {
            container_path: "/vol".into(),
            host_path: volume.path().display().to_string(),
            ..Default::default()
        },
        Mount {
            container_path: "/img".into(),
            image: Some(ImageSpec {
                image: data,
                ..Default::default()
            }),
            readonly: true,
            ..Default::default()
        },
    ];
    // kubelet sends the pod's user namespace again with each container.
    security(&mut config).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        userns_options: Some(userns(base)),
        ..Default::default()
    });
    let log = Node::log_path(&pod, &config);
    let id = node.run(&pod_id, &pod, config).await;
    wait_for_log_line(&log, "stdout", |t| t == "started", Duration::from_secs(30)).await;
    let cri = &mut node.cri;

    // On the node: mapped, unprivileged ids.
    let pid = host_pid(cri, &id).await;
    let mapped = format!("0 {base} 65536");
    for file in ["uid_map", "gid_map"] {
        let map = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("map");
        assert_eq!(map.split_whitespace().collect::<Vec<_>>().join(" "), mapped);
    }
    for field in ["Uid", "Gid"] {
        let ids = proc_status(pid, field);
        assert_eq!(ids, vec![base.to_string(); 4].join("\t"), "{field}");
    }
    // ContainerStatus reports the ids inside the pod.
    let user = status(cri, &id).await.user.and_then(|u| u.linux);
    let user = user.expect("status.user.linux");
    assert_eq!(
        (user.uid, user.gid, user.supplemental_groups),
        (0, 0, vec![0])
    );

    // Inside: root, files owned as on disk, the pod's own hostname, and
    // /sys of a network namespace the user namespace owns.
    assert_eq!(sh_ok(cri, &id, "id -u; id -g").await, "0\n0\n");
    assert_eq!(
        sh_ok(cri, &id, "cat /proc/self/uid_map")
            .await
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", &base.to_string(), "65536"]
    );
    let owners = "stat -c '%u %g' /vol/by-root /vol/by-1000 /img/data/hello.txt / /bin/busybox";
    assert_eq!(
        sh_ok(cri, &id, owners).await,
        "0 0\n1000 1000\n0 0\n0 0\n0 0\n"
    );
    assert_eq!(sh_ok(cri, &id, "cat /img/data/hello.txt").await, "hello\n");
    assert_eq!(sh_ok(cri, &id, "hostname").await, "userns-pod\n");
    assert!(
        sh_ok(cri, &id, "cat /sys/class/net/lo/mtu")
            .await
            .trim()
            .parse::<u32>()
            .is_ok()
    );
    // PID 1 of the shared PID namespace is the pod's pier-infra, as 65535.
    assert_eq!(
        sh_ok(cri, &id, "grep Uid /proc/1/status | cut -f2").await,
        "65535\n"
    );

    // Written from inside: the volume keeps the pod's ids (nothing is
    // chowned, the mount is idmapped); the writable layer holds what the
    // node sees.
    sh_ok(
        cri,
        &id,
        "echo new > /vol/new && mkdir /made && chown 1000:1000 /vol/by-root",
    )
    .await;
    let on_disk = |name: &str| {
        let meta = std::fs::metadata(volume.path().join(name)).expect("stat");
        (meta.uid(), meta.gid())
    };
    assert_eq!(on_disk("new"), (0, 0));
    assert_eq!(on_disk("by-root"), (1000, 1000));
    let upper = node.pierd.root().join("containers").join(&id).join("upper");
    let made = std::fs::metadata(upper.join("made")).expect("stat the writable layer");
    assert_eq!((made.uid(), made.gid()), (base, base));
    let stages = node.pierd.runroot().join("mounts").display().to_string();
    assert!(
        !mount_points().iter().any(|m| m.starts_with(&stages)),
        "staged mounts are released once runc has created the container"
    );

    // Stats, a streaming exec with a terminal, and attach.
    let stats = cri
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                id: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(stats.len(), 1);
    assert!(
        stats[0]
            .memory
            .as_ref()
            .is_some_and(|m| m.working_set_bytes.is_some())
    );
    let url = cri
        .exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec!["id".into(), "-u".into()],
            tty: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let (mut ws, _) = websocket(&url, "v4.channel.k8s.io").await;
    let got = read_channels(&mut ws, |_| false).await;
    assert_eq!(got.text(1).trim(), "0");

    let mut reader = node.container(
        "reader",
        &["sh", "-c", "read line; echo got $line $(id -u)"],
    );
    reader.stdin = true;
    reader.stdin_once = true;
    security(&mut reader).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Pod as i32,
        ..Default::default()
    });
    let reader = node.run(&pod_id, &pod, reader).await;
    let url = node
        .cri
        .attach(AttachRequest {
            container_id: reader.clone(),
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        })
        .await
        .expect("Attach")
        .into_inner()
        .url;
    let out = spdy(&["exec", &url, "-stdin", "-stdout", "-stderr"], b"hi\n").await;
    assert_eq!(text(&out.stdout), "got hi 0\n", "{}", text(&out.stderr));

    // pierd restarts; the container runs on and is reached again.
    node.pierd.terminate();
    node.pierd.restart().await;
    node.cri = node.pierd.cri().await.runtime;
    let cri = &mut node.cri;
    let pod_status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(pod_status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(
        status(cri, &id).await.state,
        ContainerState::ContainerRunning as i32
    );
    assert_eq!(sh_ok(cri, &id, "id -u").await, "0\n");

    remove_pod(cri, &pod_id).await;
    let runroot = node.pierd.runroot();
    assert!(
        !runroot.join("userns").join(&pod_id).exists(),
        "userns pin left"
    );
    let stages = std::fs::read_dir(runroot.join("mounts"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(stages, 0, "stage directories left");
}

/// A name, a change to valid namespace options, and the field the refusal
/// must name.
type RefusedCase<'a> = (&'a str, &'a dyn Fn(&mut NamespaceOption), &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespaces_pier_cannot_honour_are_refused_up_front() {
    let pierd = Pierd::start().await;
    let mut cri = pierd.cri().await.runtime;
    let logs = tempfile::tempdir().expect("tempdir");
    let refused = |mut pod: PodSandboxConfig, edit: &dyn Fn(&mut NamespaceOption)| {
        let mut options = NamespaceOption {
            userns_options: Some(userns(mapping_base())),
            ..Default::default()
        };
        edit(&mut options);
        pod_security(&mut pod).namespace_options = Some(options);
        pod
    };
    let cases: [RefusedCase<'_>; 4] = [
        (
            "overlap",
            &|o| {
                let u = o.userns_options.as_mut().expect("userns");
                u.uids.push(IdMapping {
                    host_id: u.uids[0].host_id + 10,
                    container_id: 70_000,
                    length: 10,
                });
            },
            "userns_options.uids",
        ),
        (
            "hostnet",
            &|o| o.network = NamespaceMode::Node as i32,
            "network",
        ),
        (
            "noroot",
            &|o| o.userns_options.as_mut().expect("userns").gids[0].container_id = 1,
            "userns_options.gids",
        ),
        (
            "container-mode",
            &|o| o.userns_options.as_mut().expect("userns").mode = NamespaceMode::Container as i32,
            "userns_options",
        ),
    ];
    for (name, edit, field) in cases {
        let pod = refused(pod(name, logs.path()), edit);
        let err = cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod),
                runtime_handler: String::new(),
            })
            .await
            .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        assert!(err.message().contains(field), "{name}: {}", err.message());
    }
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "refused pods must leave nothing: {pods:?}");
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
