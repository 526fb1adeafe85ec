//! Terminal mode: the console socket runc sends the pty master over
//! (SCM_RIGHTS), and window resizes.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use pier_proto::socket_path::ShortPath;

pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The path runc connects to: `path` itself, or one through this
    /// process's `/proc` entry where `path` is too long for an address.
    for_runc: ShortPath,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        // One short path serves both: the monitor binds through it and runc
        // connects through it, so the directory is opened once.
        let for_runc = ShortPath::for_others(path)?;
        let listener = UnixListener::bind(for_runc.as_path())?;
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            for_runc,
        })
    }

    /// What to give runc as `--console-socket`.
    pub fn path(&self) -> &Path {
        self.for_runc.as_path()
    }

    /// The pty master, if runc has connected; never blocks on accept.
    pub fn try_receive(&self) -> io::Result<Option<OwnedFd>> {
        let (conn, _) = match self.listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut master = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed this fd in our table
                    // for us; nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if master.is_none() {
                        master = Some(owned);
                    }
                }
            }
        }
        master
            .map(Some)
            .ok_or_else(|| io::Error::other("console socket message carried no fd"))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Resize the container's terminal.
pub fn resize(master: &impl AsRawFd, rows: u32, cols: u32) -> io::Result<()> {
    let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    crate::sys::set_winsize(master, clamp(rows), clamp(cols))
}
