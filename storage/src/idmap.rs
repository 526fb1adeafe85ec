//! Idmapped mounts: a clone of a mount tree through which files show owned
//! as a user namespace maps them, so a pod with its own user namespace sees
//! its image and volumes owned by its own ids while nothing on disk is
//! chowned (Linux 5.12; overlayfs takes idmapped layers from 5.19). The
//! clone is made detached (`open_tree`), mapped (`mount_setattr` with
//! `MOUNT_ATTR_IDMAP`) and attached where it is wanted (`move_mount`).
//!
//! rustix wraps `open_tree` and `move_mount` but not `mount_setattr`, which
//! is called through libc here.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::mount::{MoveMountFlags, OpenTreeFlags, move_mount, open_tree};

/// `MOUNT_ATTR_IDMAP` (linux/mount.h).
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOUNT_ATTR_RDONLY`.
const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;

/// `struct mount_attr` (linux/mount.h), the argument of `mount_setattr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], attr)`.
fn set_attr(tree: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: the path is a valid NUL-terminated string, `attr` points to a
    // live struct of the size passed, and the fd is open for the call.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            std::ptr::from_ref(attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel has `mount_setattr` (Linux 5.12), which runc's `rro`
/// and idmapped mounts need. Asked with a bad fd: only a kernel without the
/// call answers `ENOSYS`.
pub fn mount_setattr_supported() -> bool {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: as in `set_attr`; the fd is -1, which the kernel refuses.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MountAttr>(),
        )
    };
    done == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// A detached clone of the mount tree at `source` (with its submounts when
/// `recursive`), idmapped by the user namespace `userns` (an open nsfs
/// file). Dropping the fd without attaching it discards the clone.
pub fn clone_idmapped(
    source: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = open_tree(rustix::fs::CWD, source, flags)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    set_attr(std::os::fd::AsFd::as_fd(&tree), recursive, &attr)?;
    Ok(tree)
}

/// Attaches a detached tree at `target`, which exists (a directory for a
/// directory, a file for a file).
pub fn attach(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    move_mount(
        tree,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// [`clone_idmapped`] and [`attach`] in one: `source`, idmapped, at `target`.
pub fn mount_idmapped(
    source: &Path,
    target: &Path,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> io::Result<()> {
    attach(&clone_idmapped(source, userns, recursive)?, target)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_is_asked_without_harm() {
        // Either answer is fine; the probe must not fail or change anything.
        let _ = super::mount_setattr_supported();
    }
}
