//! The few filesystem calls std lacks: extended attributes, device nodes,
//! timestamps of symlinks, overlay whiteouts.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;

/// The xattr overlayfs reads to hide everything below a directory.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

/// Sets an extended attribute on `path` itself, never on a symlink's target.
#[allow(unsafe_code)]
pub fn lsetxattr(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let c_path = cstring(path.as_os_str().as_bytes())?;
    let c_name = cstring(name.as_bytes())?;
    // SAFETY: both strings are NUL-terminated and outlive the call; `value`
    // is a valid slice of `value.len()` bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an extended attribute of `path` itself; `None` when absent.
#[allow(unsafe_code)]
pub fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c_path = cstring(path.as_os_str().as_bytes())?;
    let c_name = cstring(name.as_bytes())?;
    let mut buf = vec![0u8; 256];
    // SAFETY: the strings are NUL-terminated, `buf` is writable for its length.
    let rc = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) => Ok(None),
            _ => Err(err),
        };
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

/// Marks a directory opaque for overlayfs.
pub fn set_opaque(dir: &Path) -> io::Result<()> {
    lsetxattr(dir, OsStr::new(OPAQUE_XATTR), b"y")
}

/// Creates the overlayfs form of a whiteout: a 0/0 character device.
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(io::Error::from)
}

/// Kinds of special files a layer may carry.
#[derive(Debug, Clone, Copy)]
pub enum NodeKind {
    Char,
    Block,
    Fifo,
}

pub fn make_node(path: &Path, kind: NodeKind, mode: u32, major: u64, minor: u64) -> io::Result<()> {
    let flag = match kind {
        NodeKind::Char => SFlag::S_IFCHR,
        NodeKind::Block => SFlag::S_IFBLK,
        NodeKind::Fifo => SFlag::S_IFIFO,
    };
    mknod(
        path,
        flag,
        Mode::from_bits_truncate(mode & 0o7777),
        makedev(major, minor),
    )
    .map_err(io::Error::from)
}

/// Sets access and modification time of `path` itself (symlinks included).
pub fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Whether this process may create devices and chown files.
pub fn is_privileged() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Flushes the filesystem holding `path` to disk.
pub fn syncfs(path: &Path) -> io::Result<()> {
    let dir = std::fs::File::open(path)?;
    nix::unistd::syncfs(&dir).map_err(io::Error::from)
}
