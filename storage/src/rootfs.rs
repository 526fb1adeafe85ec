//! Container root filesystems: an overlayfs of the image's layers (read-only,
//! shared) with `containers/<id>/upper` as the container's writable layer,
//! mounted on `containers/<id>/merged`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use crate::error::ImageError;
use crate::layout::{ContainerDir, containers_dir};
use crate::overlay;

/// Prefix of container directories being deleted.
const TRASH_PREFIX: &str = ".trash-";

fn rootfs_err(id: &str, cause: impl Into<String>) -> ImageError {
    ImageError::Rootfs {
        container: id.to_owned(),
        cause: cause.into(),
    }
}

/// Mount points (decoded) currently in this mount namespace.
fn mount_points() -> io::Result<Vec<PathBuf>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        if bytes[i] == b'\\'
            && let Some(v) = octal
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mounted(path: &Path) -> io::Result<bool> {
    Ok(mount_points()?.iter().any(|p| p == path))
}

/// How a container of a pod with its own user namespace sees the image's
/// layers: through `layers`, an idmapped view of the layer store (each layer
/// under its usual name), so that files show owned by the pod's ids with
/// nothing chowned on disk. Its writable layer is not idmapped (overlayfs
/// writes it as the mounter): what the container writes is stored as the
/// node sees the container's ids, and the writable layer's root, an empty
/// directory of pier's own, is owned by the pod's root (`root_owner`, as
/// the node sees it), as the image's root is inside the pod.
#[derive(Debug, Clone, Copy)]
pub struct LayerView<'a> {
    pub layers: &'a Path,
    pub root_owner: (u32, u32),
}

/// Mounts the rootfs of container `id` over `lower` (bottom layer first),
/// which are `view`'s paths when given.
pub fn mount(
    root: &Path,
    id: &str,
    lower: &[PathBuf],
    view: Option<LayerView<'_>>,
) -> Result<PathBuf, ImageError> {
    let dir = ContainerDir::new(root, id)?;
    let (upper, work, merged) = (dir.upper(), dir.work(), dir.merged());
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).map_err(|e| ImageError::io("create", d, e))?;
    }
    if is_mounted(&merged).map_err(|e| ImageError::io("read mounts for", &merged, e))? {
        return Ok(merged);
    }
    let mut lower: Vec<PathBuf> = lower.iter().rev().cloned().collect();
    if lower.is_empty() {
        // overlayfs needs a lower layer; an image without layers gets an empty one.
        let empty = dir.empty_lower();
        fs::create_dir_all(&empty).map_err(|e| ImageError::io("create", &empty, e))?;
        lower.push(empty);
    }
    for path in lower.iter().chain([&upper, &work]) {
        let s = path.to_string_lossy();
        if s.contains([',', ':']) || !path.is_dir() {
            return Err(rootfs_err(
                id,
                format!("layer dir {s} is missing or unusable in a mount"),
            ));
        }
    }
    if let Some(view) = view {
        let (uid, gid) = view.root_owner;
        std::os::unix::fs::chown(&upper, Some(uid), Some(gid))
            .map_err(|e| ImageError::io("give the pod's root", &upper, e))?;
    }
    // Short links name the store's own layer paths, not a view's.
    let links = view.is_none().then(|| overlay::links_dir(root));
    let upper_layer = overlay::Upper {
        upper: &upper,
        work: &work,
    };
    let named = overlay::mount(links.as_deref(), &lower, Some(upper_layer), &merged)
        .map_err(|cause| rootfs_err(id, cause))?;
    tracing::debug!(
        container = id,
        layers = lower.len(),
        named,
        "rootfs mounted"
    );
    Ok(merged)
}

/// Unmounts the rootfs of container `id` (every mount stacked there).
pub fn unmount(root: &Path, id: &str) -> Result<(), ImageError> {
    let merged = ContainerDir::new(root, id)?.merged();
    unmount_path(&merged).map_err(|e| rootfs_err(id, format!("unmount {}: {e}", merged.display())))
}

fn unmount_path(path: &Path) -> io::Result<()> {
    // Unmount until the kernel says nothing is mounted there (EINVAL, or
    // ENOENT for a path already gone) rather than reading mountinfo first:
    // that table grows with every container on the node.
    for _ in 0..16 {
        // Detach: a process still holding a file open must not make the
        // removal of a container fail; the kernel finishes when it closes.
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("still mounted after 16 unmounts"))
}

/// Unmounts and deletes everything of container `id`.
pub fn remove(root: &Path, id: &str) -> Result<(), ImageError> {
    match detach(root, id)? {
        Some(trash) => delete_trash(&trash),
        None => Ok(()),
    }
}

/// Unmounts the rootfs of container `id` and moves its directory out of
/// sight (a rename: cheap). Returns where it went, for [`delete_trash`],
/// or `None` if there was nothing. A crash before the deletion leaves a
/// `.trash-` directory that the startup cleanup deletes.
pub fn detach(root: &Path, id: &str) -> Result<Option<PathBuf>, ImageError> {
    let dir = ContainerDir::new(root, id)?.path().to_owned();
    unmount(root, id)?;
    let trash = containers_dir(root).join(format!("{TRASH_PREFIX}{id}"));
    // A trash dir of the same id left by an earlier, interrupted removal.
    delete_trash(&trash)?;
    match fs::rename(&dir, &trash) {
        Ok(()) => Ok(Some(trash)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ImageError::io("move to trash", dir, e)),
    }
}

/// Deletes a directory [`detach`] moved out of sight.
pub fn delete_trash(trash: &Path) -> Result<(), ImageError> {
    match fs::remove_dir_all(trash) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("remove", trash, e)),
    }
}

/// Unmounts and deletes the rootfs of every container `exists` denies.
pub fn cleanup(root: &Path, exists: impl Fn(&str) -> bool) -> Result<(), ImageError> {
    let dir = containers_dir(root);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if id.starts_with(TRASH_PREFIX) {
            if let Err(e) = delete_trash(&entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove trash");
            }
            continue;
        }
        if exists(&id) {
            continue;
        }
        tracing::info!(container = %id, "removing rootfs of a container that no longer exists");
        if let Err(e) = remove(root, &id) {
            tracing::warn!(container = %id, error = %e, "cannot remove leftover rootfs");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(super::unescape(r"/a\040b/c"), "/a b/c");
        assert_eq!(super::unescape(r"/plain"), "/plain");
    }
}
