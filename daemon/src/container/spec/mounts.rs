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

const FIELD: &str = "config.mounts";

/// Checks what can be checked of the CRI mounts before anything is made:
/// absolute container paths, `image` and `host_path` not both, and
/// recursive read-only only where kubelet's API validation allows it (read-
/// only, private propagation: `validateMountRecursiveReadOnly` in
/// pkg/apis/core/validation), which runc's `rro` also needs.
pub fn check(cri: &[CriMount]) -> Result<(), SpecError> {
    for m in cri {
        if !m.container_path.starts_with('/') {
            return Err(SpecError::invalid(
                FIELD,
                format!("container path {:?} is not absolute", m.container_path),
            ));
        }
        if let Some(image) = &m.image {
            if image.image.is_empty() {
                return Err(SpecError::invalid(
                    "config.mounts.image.image",
                    format!("the image volume at {} names no image", m.container_path),
                ));
            }
            if !m.host_path.is_empty() {
                return Err(SpecError::invalid(
                    "config.mounts.host_path",
                    format!(
                        "{} has both host_path and image; they are mutually exclusive",
                        m.container_path
                    ),
                ));
            }
        }
        if m.recursive_read_only {
            const RRO: &str = "config.mounts.recursive_read_only";
            if !m.readonly {
                return Err(SpecError::invalid(
                    RRO,
                    format!(
                        "{} is recursively read-only but not readonly",
                        m.container_path
                    ),
                ));
            }
            if m.propagation != MountPropagation::PropagationPrivate as i32 {
                return Err(SpecError::invalid(
                    RRO,
                    format!(
                        "{} is recursively read-only, which needs private propagation",
                        m.container_path
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// All mounts, in the order runc should make them, and the rootfs
/// propagation the CRI mounts need (`rshared`/`rslave`), if any. Image
/// volumes are bound from where they were mounted for this create
/// (`image_volumes`: container path, mount point).
pub fn mounts(
    cri: &[CriMount],
    sandbox: &SandboxRuntime,
    privileged: bool,
    image_volumes: &[(String, PathBuf)],
) -> Result<(Vec<Value>, Option<&'static str>), SpecError> {
    check(cri)?;
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
        if m.image.is_some() {
            let staged = image_volumes
                .iter()
                .find(|(path, _)| *path == m.container_path)
                .map(|(_, staged)| staged)
                .ok_or_else(|| {
                    SpecError::invalid(
                        "config.mounts.image",
                        format!("the image volume at {} was not mounted", m.container_path),
                    )
                })?;
            let mut options = vec!["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"];
            if m.recursive_read_only {
                options.push("rro");
            }
            out.push(bind(&m.container_path, staged, &options));
            continue;
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
        let mut options = vec!["rbind", mode, access];
        // runc 1.1 makes every submount read-only too (mount_setattr with
        // AT_RECURSIVE), KEP-3857's recursive read-only.
        if m.recursive_read_only {
            options.push("rro");
        }
        out.push(bind(&m.container_path, &source, &options));
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
