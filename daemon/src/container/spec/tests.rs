use k8s_cri::v1::*;

use super::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\npier:x:1000:1000::/home/pier:/bin/sh\n";
const GROUP: &str = "root:x:0:\npier:x:1000:\nextra:x:2000:pier\nwheel:x:10:root\n";

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["default-arg".into()],
        env: vec![
            "PATH=/bin".into(),
            "FROM_IMAGE=1".into(),
            "OVERRIDE=image".into(),
        ],
        user: String::new(),
        working_dir: "/srv".into(),
        ..Default::default()
    }
}

fn context(f: impl FnOnce(&mut LinuxContainerSecurityContext)) -> ContainerConfig {
    let mut context = LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    f(&mut context);
    ContainerConfig {
        linux: Some(LinuxContainerConfig {
            security_context: Some(context),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn users() -> UserDb {
    UserDb::from_text(PASSWD, GROUP)
}

#[test]
fn argv_follows_kubernetes_command_and_args_semantics() {
    let image = image();
    let mut config = ContainerConfig::default();
    assert_eq!(
        process::argv(&config, &image).expect("argv"),
        ["/entry", "default-arg"]
    );
    config.args = vec!["mine".into()];
    assert_eq!(
        process::argv(&config, &image).expect("argv"),
        ["/entry", "mine"]
    );
    config.command = vec!["/bin/cmd".into()];
    assert_eq!(
        process::argv(&config, &image).expect("argv"),
        ["/bin/cmd", "mine"]
    );
    config.args.clear();
    assert_eq!(
        process::argv(&config, &image).expect("argv"),
        ["/bin/cmd"],
        "command drops image cmd"
    );
    let err =
        process::argv(&ContainerConfig::default(), &ImageConfig::default()).expect_err("empty");
    assert!(err.to_string().contains("config.command"));
}

#[test]
fn container_env_overrides_the_image_env() {
    let config = ContainerConfig {
        envs: vec![KeyValue {
            key: "OVERRIDE".into(),
            value: "mine".into(),
        }],
        ..Default::default()
    };
    let env = process::env(&config, &image());
    assert_eq!(env, ["PATH=/bin", "FROM_IMAGE=1", "OVERRIDE=mine"]);
}

#[test]
fn identity_from_image_user_name_with_member_groups() {
    let mut image = image();
    image.user = "pier".into();
    let id = process::identity(&ContainerConfig::default(), &image, &users()).expect("identity");
    assert_eq!((id.uid, id.gid), (1000, 1000));
    assert_eq!(
        id.additional_gids,
        [1000, 2000],
        "the image's groups listing pier are added"
    );
}

#[test]
fn identity_from_image_uid_and_group() {
    let mut image = image();
    image.user = "1000:extra".into();
    let id = process::identity(&ContainerConfig::default(), &image, &users()).expect("identity");
    assert_eq!((id.uid, id.gid), (1000, 2000));
}

#[test]
fn run_as_user_username_group_and_supplemental_groups() {
    let config = context(|c| {
        c.run_as_user = Some(Int64Value { value: 1000 });
        c.run_as_group = Some(Int64Value { value: 3000 });
        c.supplemental_groups = vec![4000];
    });
    let id = process::identity(&config, &image(), &users()).expect("identity");
    assert_eq!((id.uid, id.gid), (1000, 3000));
    assert_eq!(id.additional_gids, [2000, 3000, 4000]);

    let config = context(|c| c.run_as_username = "pier".into());
    let id = process::identity(&config, &image(), &users()).expect("identity");
    assert_eq!(id.uid, 1000);

    let config = context(|c| c.run_as_username = "nobody-here".into());
    assert!(process::identity(&config, &image(), &users()).is_err());
}

#[test]
fn strict_policy_leaves_the_image_groups_out() {
    let merge = context(|c| {
        c.run_as_user = Some(Int64Value { value: 1000 });
        c.supplemental_groups = vec![4000];
    });
    let id = process::identity(&merge, &image(), &users()).expect("identity");
    assert_eq!(
        id.additional_gids,
        [1000, 2000, 4000],
        "Merge adds extra (2000)"
    );

    let strict = context(|c| {
        c.run_as_user = Some(Int64Value { value: 1000 });
        c.supplemental_groups = vec![4000];
        c.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
    });
    let id = process::identity(&strict, &image(), &users()).expect("identity");
    assert_eq!(
        id.additional_gids,
        [1000, 4000],
        "Strict: primary and asked-for groups only"
    );
}

#[test]
fn run_as_group_without_user_is_refused() {
    let config = context(|c| c.run_as_group = Some(Int64Value { value: 10 }));
    let err = process::identity(&config, &image(), &users()).expect_err("accepted");
    assert!(err.to_string().contains("run_as_group"), "{err}");
}

fn sandbox() -> SandboxRuntime {
    SandboxRuntime {
        dir: "/run/pier/sandboxes/p".into(),
        netns: Some("/run/pier/netns/p".into()),
        ipcns: Some("/run/pier/ipcns/p".into()),
        utsns: Some("/run/pier/utsns/p".into()),
        shm: Some("/run/pier/sandboxes/p/shm".into()),
        hostname: "pod-host".into(),
        ..Default::default()
    }
}

fn spec_for(
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
) -> Result<serde_json::Value, SpecError> {
    let mut sandbox = sandbox();
    // As RunPodSandbox does: a pod sharing its PID namespace has one pinned.
    if Namespaces::of(pod).shared_pid() {
        sandbox.pidns = Some("/run/pier/pidns/p".into());
    }
    let image = image();
    let users = users();
    let input = SpecInput {
        config,
        sandbox_config: pod,
        sandbox: &sandbox,
        image: &image,
        rootfs: Path::new("/var/lib/pier/containers/c/merged"),
        users: &users,
        target_pid_namespace: None,
        image_volumes: &[],
        cgroups_path: "/pier/pier-c".into(),
    };
    generate(&input).map(|spec| serde_json::to_value(spec).expect("serialize"))
}

#[test]
fn spec_joins_the_pod_namespaces_and_mounts_its_files() {
    let mut config = context(|c| c.readonly_rootfs = true);
    config.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: "/tmp".into(),
        readonly: true,
        ..Default::default()
    }];
    let spec = spec_for(&config, &PodSandboxConfig::default()).expect("spec");
    assert_eq!(spec["root"]["readonly"], true);
    assert_eq!(spec["hostname"], "pod-host");
    assert_eq!(spec["process"]["cwd"], "/srv");
    let namespaces = spec["linux"]["namespaces"].as_array().expect("namespaces");
    assert!(
        namespaces
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/pier/netns/p")
    );
    assert!(
        namespaces
            .iter()
            .any(|n| n["type"] == "pid" && n.get("path").is_none())
    );
    let mounts = spec["mounts"].as_array().expect("mounts");
    let data = mounts
        .iter()
        .find(|m| m["destination"] == "/data")
        .expect("/data");
    assert!(
        data["options"]
            .as_array()
            .expect("options")
            .contains(&json!("ro"))
    );
    assert!(
        mounts
            .iter()
            .any(|m| m["destination"] == "/etc/resolv.conf")
    );
    assert!(mounts.iter().any(|m| m["destination"] == "/dev/shm"));
    assert!(
        spec["linux"]["maskedPaths"]
            .as_array()
            .is_some_and(|p| p.contains(&json!("/proc/kcore")))
    );
    assert_eq!(spec["linux"]["cgroupsPath"], "/pier/pier-c");
}

#[test]
fn privileged_needs_a_privileged_pod_and_drops_masks_and_seccomp() {
    let config = context(|c| {
        c.privileged = true;
        c.seccomp = Some(SecurityProfile {
            profile_type: security_profile::ProfileType::RuntimeDefault as i32,
            ..Default::default()
        });
    });
    let err = spec_for(&config, &PodSandboxConfig::default()).expect_err("accepted");
    assert!(err.to_string().contains("privileged"), "{err}");
    let pod = PodSandboxConfig {
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = spec_for(&config, &pod).expect("spec");
    assert!(
        spec["linux"]
            .get("maskedPaths")
            .is_none_or(|p| p.as_array().is_none_or(Vec::is_empty))
    );
    assert!(spec["linux"].get("seccomp").is_none_or(|s| s.is_null()));
    let caps = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .expect("caps");
    assert!(caps.contains(&json!("CAP_SYS_ADMIN")));
}

fn pod_with_pid(mode: NamespaceMode) -> PodSandboxConfig {
    PodSandboxConfig {
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pid_namespace(spec: &serde_json::Value) -> Option<serde_json::Value> {
    spec["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .find(|n| n["type"] == "pid")
        .cloned()
}

#[test]
fn pod_pid_mode_joins_the_pods_shared_namespace() {
    let config = context(|c| {
        c.namespace_options = Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        })
    });
    let spec = spec_for(&config, &pod_with_pid(NamespaceMode::Pod)).expect("spec");
    assert_eq!(
        pid_namespace(&spec),
        Some(json!({ "type": "pid", "path": "/run/pier/pidns/p" }))
    );
}

#[test]
fn unspecified_pid_mode_follows_the_pod() {
    let config = ContainerConfig::default();
    let shared = spec_for(&config, &pod_with_pid(NamespaceMode::Pod)).expect("spec");
    assert_eq!(
        pid_namespace(&shared),
        Some(json!({ "type": "pid", "path": "/run/pier/pidns/p" }))
    );
    let own = spec_for(&config, &pod_with_pid(NamespaceMode::Container)).expect("spec");
    assert_eq!(pid_namespace(&own), Some(json!({ "type": "pid" })));
    let host = spec_for(&config, &pod_with_pid(NamespaceMode::Node)).expect("spec");
    assert_eq!(pid_namespace(&host), None);
}

#[test]
fn shared_pid_namespace_without_one_to_join_is_refused() {
    let config = context(|c| {
        c.namespace_options = Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        })
    });
    let err = spec_for(&config, &pod_with_pid(NamespaceMode::Container)).expect_err("accepted");
    assert!(err.to_string().contains("namespace_options.pid"), "{err}");
    assert!(err.to_string().contains("the pod has none"), "{err}");
}
