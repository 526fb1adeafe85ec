//! The container's mounts: the usual kernel filesystems, the pod's shared
//! files, and the CRI mounts kubelet asks for.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{Mount as CriMount, MountPropagation};
use serde_json::{Value, json};

use super::SpecError;
use crate::sandbox::SandboxRuntime;

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({ "destination": destination, "type": kind, "source": source, "options": options })
}

fn bind(destination: &str, source: &Path, options: &[&str]) -> Value {
    json!({ "destination": destination, "type": "bind", "source": source, "options": options })
}

/// All mounts, in the order runc should make them, and the rootfs
/// propagation the CRI mounts need (`rshared`/`rslave`), if any.
pub fn mounts(
    cri: &[CriMount],
    sandbox: &SandboxRuntime,
    privileged: bool,
) -> Result<(Vec<Value>, Option<&'static str>), SpecError> {
    let sys = if privileged { "rw" } else { "ro" };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys],
        ),
    ];
    let taken = |dest: &str| cri.iter().any(|m| m.container_path == dest);
    if !taken("/dev/shm") {
        match &sandbox.shm {
            Some(shm) => out.push(bind("/dev/shm", shm, &["rbind", "rprivate", "rw"])),
            None => out.push(bind(
                "/dev/shm",
                Path::new("/dev/shm"),
                &["rbind", "rprivate", "rw"],
            )),
        }
    }
    if !sandbox.dir.as_os_str().is_empty() {
        for name in ["hostname", "resolv.conf", "hosts"] {
            let dest = format!("/etc/{name}");
            if !taken(&dest) {
                out.push(bind(
                    &dest,
                    &sandbox.dir.join(name),
                    &["rbind", "rprivate", "rw"],
                ));
            }
        }
    }

    // Parents before children, whatever order kubelet sent them in.
    let mut cri: Vec<&CriMount> = cri.iter().collect();
    cri.sort_by_key(|m| Path::new(&m.container_path).components().count());
    let mut propagation = None;
    for m in cri {
        const FIELD: &str = "config.mounts";
        if !m.container_path.starts_with('/') {
            return Err(SpecError::invalid(
                FIELD,
                format!("container path {:?} is not absolute", m.container_path),
            ));
        }
        let source = host_path(&m.host_path)?;
        let mode = match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationHostToContainer) => {
                propagation.get_or_insert("rslave");
                "rslave"
            }
            Ok(MountPropagation::PropagationBidirectional) => {
                propagation = Some("rshared");
                "rshared"
            }
            _ => "rprivate",
        };
        let access = if m.readonly { "ro" } else { "rw" };
        out.push(bind(&m.container_path, &source, &["rbind", mode, access]));
    }
    Ok((out, propagation))
}

/// The host side of a CRI mount: symlinks resolved (runc would otherwise
/// mount the link's target relative to the container), a missing path
/// created as a directory, as kubelet's DirectoryOrCreate expects.
fn host_path(path: &str) -> Result<PathBuf, SpecError> {
    const FIELD: &str = "config.mounts.host_path";
    if !path.starts_with('/') {
        return Err(SpecError::invalid(
            FIELD,
            format!("{path:?} is not absolute"),
        ));
    }
    match std::fs::canonicalize(path) {
        Ok(resolved) => Ok(resolved),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)
                .map_err(|e| SpecError::invalid(FIELD, format!("create missing {path}: {e}")))?;
            Ok(PathBuf::from(path))
        }
        Err(e) => Err(SpecError::invalid(FIELD, format!("{path}: {e}"))),
    }
}
