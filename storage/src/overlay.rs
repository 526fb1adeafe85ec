//! Mounting overlayfs over many layers. mount(2) takes its options in one
//! page, which holds about 45 lower dirs named `<root>/layers/<64 hex>`.
//! Past that, pier names each layer by a short symlink, `<root>/l/<12 hex>`
//! (as containers-storage does with its `l/` links, but with absolute paths:
//! pierd is multithreaded, so it cannot chdir for relative ones), which
//! fits about 140 layers under `/var/lib/pier`. Past that too, the new mount
//! API adds lower dirs one `lowerdir+` at a time (Linux 6.8 and later) up to
//! overlayfs' own stack limit.
//!
//! Every mount is `volatile` where the kernel has it (5.10 and later): the
//! overlay then skips the sync of the whole upper filesystem that its
//! unmount would otherwise do, which under write load took seconds per
//! RemoveContainer. The price is that an upper dir a host crash interrupted
//! cannot be mounted again; pier never remounts one (after a reboot every
//! container has exited, and the next start deletes their rootfs), and a
//! container's writable layer is not meant to outlive it.

use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::MsFlags;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create, fsconfig_set_flag,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

const VOLATILE_OPTION: &str = ",volatile";
/// Longest layer options, leaving room for `volatile`.
const MAX_OPTIONS: usize = MAX_MOUNT_DATA - VOLATILE_OPTION.len();
/// Cleared once the kernel refuses `volatile`; later mounts go without.
static VOLATILE: AtomicBool = AtomicBool::new(true);

/// Longest mount option string the kernel accepts (one page, with its NUL).
const MAX_MOUNT_DATA: usize = 4095;
/// Most lower layers overlayfs stacks (`OVL_MAX_STACK`).
pub const MAX_LAYERS: usize = 500;
/// Short link names are this many hex digits of the layer's name, more only
/// when two layers share the prefix.
const LINK_NAME_LENGTHS: [usize; 4] = [12, 20, 32, 64];

/// The directory of short layer links under the state root.
pub fn links_dir(root: &Path) -> PathBuf {
    root.join("l")
}

/// The writable part of an overlay.
#[derive(Debug, Clone, Copy)]
pub struct Upper<'a> {
    pub upper: &'a Path,
    pub work: &'a Path,
}

fn options(lower: &[PathBuf], upper: Option<Upper<'_>>) -> String {
    let lowerdir: Vec<String> = lower
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut options = format!("lowerdir={}", lowerdir.join(":"));
    if let Some(Upper { upper, work }) = upper {
        options.push_str(&format!(
            ",upperdir={},workdir={}",
            upper.display(),
            work.display()
        ));
    }
    options
}

/// An overlay without an upper layer is a read-only view of an image (an
/// image volume): mounted read-only, and `nosuid`, `nodev`, `noexec` as
/// KEP-4639 has it.
fn flags(upper: Option<Upper<'_>>) -> MsFlags {
    match upper {
        Some(_) => MsFlags::empty(),
        None => MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    }
}

/// Mounts an overlay of `lower` (top layer first), writable through
/// `upper` when given (a read-only view of at least two lower layers
/// otherwise), on `target`. Where the options would not fit a page, the
/// layers are named by short links in `links`, when given (lower layers
/// that are not the store's own, like an idmapped view of them, have no
/// links), or added one by one. Returns how the layers were named, for
/// the log.
pub fn mount(
    links: Option<&Path>,
    lower: &[PathBuf],
    upper: Option<Upper<'_>>,
    target: &Path,
) -> Result<&'static str, String> {
    if lower.len() > MAX_LAYERS {
        return Err(format!(
            "the image has {} layers; overlayfs stacks at most {MAX_LAYERS}",
            lower.len()
        ));
    }
    let full = options(lower, upper);
    if full.len() <= MAX_OPTIONS {
        return mount_data(&full, upper, target).map(|()| "layer paths");
    }
    if let Some(links) = links {
        let short = lower
            .iter()
            .map(|layer| link_to(links, layer))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| format!("short links for layers in {}: {e}", links.display()))?;
        let data = options(&short, upper);
        if data.len() <= MAX_OPTIONS {
            return mount_data(&data, upper, target).map(|()| "short links");
        }
    }
    mount_appending(lower, upper, target).map(|()| "lowerdir+")
}

fn mount_data(data: &str, upper: Option<Upper<'_>>, target: &Path) -> Result<(), String> {
    let mount = |data: &str| {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags(upper),
            Some(data),
        )
    };
    // `volatile` only means something for an upper layer.
    if upper.is_some() && VOLATILE.load(Ordering::Relaxed) {
        match mount(&format!("{data}{VOLATILE_OPTION}")) {
            Err(nix::Error::EINVAL) => {
                tracing::info!("overlayfs refuses `volatile`; mounting without it");
                VOLATILE.store(false, Ordering::Relaxed);
            }
            other => {
                return other.map_err(|e| format!("mount overlay on {}: {e}", target.display()));
            }
        }
    }
    mount(data).map_err(|e| format!("mount overlay on {}: {e}", target.display()))
}

/// The new mount API: one `fsconfig` call per lower dir, no page limit.
fn mount_appending(
    lower: &[PathBuf],
    upper: Option<Upper<'_>>,
    target: &Path,
) -> Result<(), String> {
    let fail = |what: &str, e: rustix::io::Errno| {
        format!("mount overlay on {}: {what}: {e}", target.display())
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| fail("fsopen", e))?;
    // Lower dirs are added bottom layer last, like the order of `lowerdir=`.
    for layer in lower {
        fsconfig_set_string(&fs, "lowerdir+", layer).map_err(|e| {
            if e == rustix::io::Errno::INVAL {
                format!(
                    "the image has {} layers, more than mount options can name on this \
                     kernel (adding lower dirs one by one needs Linux 6.8 or later)",
                    lower.len()
                )
            } else {
                fail(&format!("lowerdir+ {}", layer.display()), e)
            }
        })?;
    }
    let attributes = match upper {
        Some(Upper { upper, work }) => {
            fsconfig_set_string(&fs, "upperdir", upper).map_err(|e| fail("upperdir", e))?;
            fsconfig_set_string(&fs, "workdir", work).map_err(|e| fail("workdir", e))?;
            // The mount works without it, only its unmount is slower.
            let _ = fsconfig_set_flag(&fs, "volatile");
            MountAttrFlags::empty()
        }
        None => {
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC
        }
    };
    fsconfig_create(&fs).map_err(|e| fail("create", e))?;
    let mnt =
        fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attributes).map_err(|e| fail("fsmount", e))?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount", e))
}

/// A short symlink in `links` to `layer`, made if missing. Its name is the
/// shortest prefix of the layer's name no other layer's link holds.
fn link_to(links: &Path, layer: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(links)?;
    for link in link_candidates(links, layer) {
        match symlink(layer, &link) {
            Ok(()) => return Ok(link),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if std::fs::read_link(&link)? == layer {
                    return Ok(link);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no free link name for {}",
        layer.display()
    )))
}

/// The names a link to `layer` may have, shortest first: prefixes of the
/// layer's own name.
fn link_candidates(links: &Path, layer: &Path) -> impl Iterator<Item = PathBuf> {
    let name = layer
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let links = links.to_owned();
    LINK_NAME_LENGTHS
        .into_iter()
        .map(move |len| links.join(&name[..len.min(name.len())]))
}

/// Removes the links to `layer` (it is being deleted).
pub fn unlink_layer(links: &Path, layer: &Path) {
    for link in link_candidates(links, layer) {
        if std::fs::read_link(&link).is_ok_and(|target| target == layer) {
            let _ = std::fs::remove_file(&link);
        }
    }
}

/// Removes links whose layer is gone (a crash between deleting a layer and
/// its link).
pub fn remove_dangling_links(links: &Path) {
    let Ok(entries) = std::fs::read_dir(links) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if std::fs::metadata(&path).is_err() {
            tracing::info!(link = %path.display(), "removing link to a missing layer");
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_layers_than_overlayfs_stacks_is_refused_up_front() {
        let lower = vec![PathBuf::from("/nonexistent"); MAX_LAYERS + 1];
        let p = Path::new("/nonexistent");
        let upper = Upper { upper: p, work: p };
        let err = mount(Some(p), &lower, Some(upper), p).unwrap_err();
        assert!(
            err.contains("501 layers") && err.contains("at most 500"),
            "{err}"
        );
    }

    #[test]
    fn links_share_no_name_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let links = dir.path().join("l");
        let a = dir
            .path()
            .join(format!("{}{}", "ab".repeat(8), "0".repeat(48)));
        let b = dir
            .path()
            .join(format!("{}{}", "ab".repeat(8), "1".repeat(48)));
        let la = link_to(&links, &a).unwrap();
        let lb = link_to(&links, &b).unwrap();
        assert_eq!(la.file_name().unwrap().len(), 12);
        assert_eq!(lb.file_name().unwrap().len(), 20, "prefix taken by a");
        assert_eq!(link_to(&links, &b).unwrap(), lb);
        unlink_layer(&links, &a);
        assert!(std::fs::symlink_metadata(&la).is_err());
        assert!(std::fs::symlink_metadata(&lb).is_ok());
        remove_dangling_links(&links);
        assert!(std::fs::symlink_metadata(&lb).is_err(), "b does not exist");
    }
}
