//! Thin safe wrappers over the few syscalls std and nix do not cover the way
//! the monitor needs them. Every `unsafe` block of the crate that is not a
//! fork or an fd receive lives here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Mark `fd` non-blocking (the event loop must never block on one stream).
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set close-on-exec on an inherited fd so runc never sees it.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments; a bad fd yields EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Queue the writeback of the dirty pages of `fd` in `[offset, offset +
/// len)` and return without waiting for the disk (sync_file_range with
/// SYNC_FILE_RANGE_WRITE alone: no data-integrity wait, no metadata).
pub fn start_writeback(fd: &impl AsRawFd, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: sync_file_range takes an fd and integers only.
    let r =
        unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Position of the first `needle` in `hay` (glibc's vectorised memchr: the
/// log hot path spends most of its time here).
#[inline]
pub fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    if hay.is_empty() {
        return None;
    }
    // SAFETY: the pointer and length describe a live, initialised slice.
    let p = unsafe { libc::memchr(hay.as_ptr().cast(), i32::from(needle), hay.len()) };
    if p.is_null() {
        None
    } else {
        Some(p as usize - hay.as_ptr() as usize)
    }
}

/// poll(2) over a caller-owned array; returns the number of ready entries.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Make large buffers come from mmap and go back to the kernel when freed,
/// so an idle monitor does not keep the dirty pages of its last burst; and
/// keep one malloc arena (the monitor is single-threaded).
pub fn tune_malloc() {
    // SAFETY: mallopt only adjusts allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A pidfd for `pid` (Linux 5.3+): readable once the process exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Return the heap's free pages to the kernel, wherever they lie in the
/// heap (glibc's trim at `free` only shrinks its top). Costs a walk of the
/// free lists: microseconds for a monitor's small heap.
pub fn trim_heap() {
    // SAFETY: malloc_trim takes the allocator's own lock; the monitor has
    // one thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Become the child subreaper: the container's init is re-parented to us
/// when `runc create` exits, so we can reap it and read its status.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set a terminal's window size (TIOCSWINSZ on the pty master).
pub fn set_winsize(fd: &impl AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct that outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close every fd not in `keep`, found by walking /proc/self/fd (the
/// daemon may have leaked any number of them into us).
pub fn close_fds_except(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if !keep.contains(&fd) {
            // SAFETY: closing an fd number no Rust object owns at this point
            // (called right after fork, before anything is opened).
            unsafe { libc::close(fd) };
        }
    }
}

/// Replace fd 0 and 1 with /dev/null: the daemon's pipes must not be kept
/// open by a monitor that outlives it.
pub fn stdio_to_devnull() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in [0, 1] {
            // SAFETY: dup2 onto the standard fds, which we own.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

/// Writes as much of `pending` as the nonblocking `out` takes now, draining
/// what was written. `Ok(true)`: all written; `Ok(false)`: `out` is full,
/// try again when it is writable; `Err`: `out` is unusable.
pub fn write_pending(out: &mut impl io::Write, pending: &mut Vec<u8>) -> io::Result<bool> {
    while !pending.is_empty() {
        match out.write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Feeds a process's stdin from `pending` without blocking. On a write
/// error `stdin` is closed and the error returned; once all is written it is
/// closed if `close_when_done` (the client's stdin close). Without `stdin`
/// the bytes are dropped.
pub fn feed_stdin(
    stdin: &mut Option<File>,
    pending: &mut Vec<u8>,
    close_when_done: bool,
) -> io::Result<()> {
    let Some(f) = stdin.as_mut() else {
        pending.clear();
        return Ok(());
    };
    match write_pending(f, pending) {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(e) => {
            *stdin = None;
            *pending = Vec::new();
            return Err(e);
        }
    }
    if close_when_done {
        *stdin = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memchr_finds_first_match() {
        assert_eq!(memchr(b'\n', b"ab\ncd\n"), Some(2));
        assert_eq!(memchr(b'\n', b"abc"), None);
        assert_eq!(memchr(b'\n', b""), None);
    }
}
