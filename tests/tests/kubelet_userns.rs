//! Pods with a user namespace of their own (KEP-127, `hostUsers: false`)
//! through a real pierd and runc: mapped ids on the node, the pod's own ids
//! inside, idmapped volumes and image, and everything kubelet does with a
//! running pod (exec, attach, stats, logs, a pierd restart); and mappings
//! pier cannot honour refused up front.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::streams::{read_channels, spdy, websocket};
use pier_tests::workload::*;
use pier_tests::{ImageSpec as TestImage, Pierd};
use tonic::Code;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

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
