//! The terminal of a native tty exec: a pty from the container's own devpts
//! instance, as `runc exec --tty` makes it (runc opens `/dev/ptmx` inside
//! the container), so the process sees a `/dev/pts/N` that exists in its
//! container.
//!
//! The monitor opens the container's `/dev/ptmx` through the init's root,
//! every path component resolved inside that root (`openat2` with
//! `RESOLVE_IN_ROOT`): the container owns its `/dev`, and a symlink there
//! must not lead to a node path. The monitor is not in the container's
//! devices cgroup, so what it opens is first looked at through an `O_PATH`
//! fd (which opens nothing) and must be the ptmx device (char 5:2); only
//! that inode is then opened for real. The slave comes from the master
//! itself (`TIOCGPTPEER`), never from a path the container could replace.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The ptmx device: character major 5, minor 2.
const PTMX: (u32, u32) = (5, 2);

/// A new pty: the monitor keeps the master, the process gets the slave.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Why a pty could not be made in the container; the tty execs of that
/// container then go through the runtime.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("root of the init: {0}")]
    Root(#[source] io::Error),
    #[error("the container's /dev/ptmx: {0}")]
    Lookup(#[source] io::Error),
    #[error(
        "the container's /dev/ptmx is not the ptmx device (mode {mode:o}, device {major}:{minor})"
    )]
    NotPtmx { mode: u32, major: u32, minor: u32 },
    #[error("open the container's ptmx: {0}")]
    Open(#[source] io::Error),
    #[error("unlock the pty: {0}")]
    Unlock(#[source] io::Error),
    #[error("open the pty's slave: {0}")]
    Peer(#[source] io::Error),
}

/// A pty in the devpts instance of the container whose init is `pid`.
pub fn open_in(pid: i32) -> Result<Pty, PtyError> {
    let root = open(
        &format!("/proc/{pid}/root"),
        libc::O_PATH | libc::O_DIRECTORY,
    )
    .map_err(PtyError::Root)?;
    let path = openat2_in_root(&root, "dev/ptmx", libc::O_PATH).map_err(PtyError::Lookup)?;
    let st = nix::sys::stat::fstat(&path).map_err(|e| PtyError::Lookup(e.into()))?;
    let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || (major, minor) != PTMX {
        return Err(PtyError::NotPtmx {
            mode: st.st_mode,
            major,
            minor,
        });
    }
    // Reopening the O_PATH fd opens that very inode, with its place in
    // the container's /dev: the kernel allocates the pty in the devpts
    // mounted beside it (or the one it belongs to).
    let master = open(
        &format!("/proc/self/fd/{}", path.as_raw_fd()),
        libc::O_RDWR | libc::O_NOCTTY,
    )
    .map_err(PtyError::Open)?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int that outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(PtyError::Unlock(io::Error::last_os_error()));
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if slave < 0 {
        return Err(PtyError::Peer(io::Error::last_os_error()));
    }
    // SAFETY: the kernel just installed this fd for us; nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok(Pty { master, slave })
}

fn open(path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open reads the NUL-terminated path, alive for the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `path` below `root`, every component (symlinks included) resolved as if
/// `root` were `/`, without magic links.
fn openat2_in_root(root: &OwnedFd, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the path and the open_how struct, both alive
    // for the call, and is given the struct's true size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_from_a_processs_root_is_a_terminal_pair() {
        // Our own root stands in for a container's: its /dev/ptmx is the
        // node's ptmx.
        let pty = open_in(std::process::id() as i32).expect("pty");
        assert!(nix::unistd::isatty(&pty.slave).expect("isatty"));
        let st = nix::sys::stat::fstat(&pty.slave).expect("fstat slave");
        // Unix98 pty slaves have majors 136 to 143.
        assert!((136..=143).contains(&libc::major(st.st_rdev)), "{st:?}");
        // What is written to the slave reads back from the master.
        nix::unistd::write(&pty.slave, b"x").expect("write slave");
        let mut buf = [0u8; 8];
        let n = nix::unistd::read(&pty.master, &mut buf).expect("read master");
        assert_eq!(&buf[..n], b"x");
    }
}
