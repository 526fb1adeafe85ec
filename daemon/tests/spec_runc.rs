//! Generated OCI specs run under the real runc: the spec is accepted, and the
//! process sees the identity, capabilities and read-only rootfs asked for.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use k8s_cri::v1::*;
use pierd::container::spec::{ImageConfig, SpecInput, UserDb, generate};
use pierd::sandbox::SandboxRuntime;

const RUNC: &str = "/usr/sbin/runc";

/// A rootfs with busybox and a passwd/group database.
fn rootfs(dir: &Path) {
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "id", "grep", "touch", "echo"] {
        symlink("busybox", dir.join("bin").join(applet)).expect("link applet");
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .expect("passwd");
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
    )
    .expect("group");
}

/// Runs `script` in a container made from a generated spec; returns stdout.
fn run(name: &str, script: &str, edit: impl FnOnce(&mut LinuxContainerSecurityContext)) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rootfs");
    rootfs(&root);
    let mut context = LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    edit(&mut context);
    let config = ContainerConfig {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        linux: Some(LinuxContainerConfig {
            security_context: Some(context),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = format!("pier-spec-{name}-{}", std::process::id());
    let users = UserDb::read(&root);
    let input = SpecInput {
        config: &config,
        sandbox_config: &PodSandboxConfig::default(),
        sandbox: &SandboxRuntime::default(),
        image: &ImageConfig::default(),
        rootfs: &root,
        users: &users,
        target_pid_namespace: None,
        image_volumes: &[],
        // Top level, so runc delete leaves no parent cgroup behind.
        cgroups_path: format!("/{id}"),
    };
    let spec = generate(&input).expect("generate spec");
    spec.save(dir.path().join("config.json"))
        .expect("write config.json");
    let state = dir.path().join("runc-state");
    let out = Command::new(RUNC)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(dir.path())
        .arg(&id)
        .output()
        .expect("run runc");
    let _ = Command::new(RUNC)
        .arg("--root")
        .arg(&state)
        .args(["delete", "-f", &id])
        .output();
    assert!(
        out.status.success(),
        "runc run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn user_and_groups_come_from_the_image_database() {
    let out = run("user", "id", |c| c.run_as_username = "app".into());
    assert!(out.contains("uid=1000"), "{out}");
    assert!(out.contains("2000"), "member group from /etc/group: {out}");
}

#[test]
fn readonly_rootfs_refuses_writes() {
    let out = run("ro", "touch /probe 2>&1 || echo refused", |c| {
        c.readonly_rootfs = true
    });
    assert!(out.contains("refused"), "{out}");
}

#[test]
fn dropped_capabilities_are_gone_from_the_process() {
    let out = run("caps", "grep CapEff /proc/self/status", |c| {
        c.capabilities = Some(Capability {
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
    });
    assert!(out.contains("0000000000000000"), "{out}");
}

#[test]
fn default_seccomp_profile_is_accepted_by_runc() {
    let out = run("seccomp", "echo ran", |c| {
        c.seccomp = Some(SecurityProfile {
            profile_type: security_profile::ProfileType::RuntimeDefault as i32,
            ..Default::default()
        });
    });
    assert_eq!(out.trim(), "ran");
}
