//! The size of the container's stdout and stderr pipes. A larger pipe lets
//! a chatty container run ahead of the monitor for longer before its write
//! blocks, and lets each of the monitor's reads take more at once.
//!
//! Growing is best effort. The kernel refuses (EPERM) a size above
//! `fs.pipe-max-size` to a process without CAP_SYS_RESOURCE, and any growth
//! once the user's pipes hold more than `fs.pipe-user-pages-soft` pages
//! (unless it has CAP_SYS_RESOURCE or CAP_SYS_ADMIN). Sizes are powers of
//! two pages, and so is `fs.pipe-max-size`, so halving the request finds the
//! largest size allowed in a few calls.

use std::io;
use std::os::fd::AsFd;

use nix::fcntl::{FcntlArg, fcntl};

/// What the monitor asks for: the kernel's default `fs.pipe-max-size`.
pub const WANT: usize = 1 << 20;

/// The size a new pipe gets: asking for less gains nothing.
const KERNEL_DEFAULT: usize = 64 << 10;

/// Grow the pipe `fd` to `want` bytes, or to the largest size below it the
/// kernel allows. Returns the size the pipe has.
pub fn grow(fd: impl AsFd, want: usize) -> io::Result<usize> {
    let fd = fd.as_fd();
    grow_with(
        want,
        |n| {
            let n = i32::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            Ok(fcntl(fd, FcntlArg::F_SETPIPE_SZ(n))? as usize)
        },
        || Ok(fcntl(fd, FcntlArg::F_GETPIPE_SZ)? as usize),
    )
}

/// The size of the pipe `fd`.
#[cfg(test)]
pub fn size(fd: impl AsFd) -> io::Result<usize> {
    Ok(fcntl(fd.as_fd(), FcntlArg::F_GETPIPE_SZ)? as usize)
}

/// The policy of [`grow`] over any setter (which returns the size it set)
/// and getter.
fn grow_with(
    want: usize,
    mut set: impl FnMut(usize) -> io::Result<usize>,
    get: impl FnOnce() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut ask = want;
    while ask > KERNEL_DEFAULT {
        match set(ask) {
            Ok(n) => return Ok(n),
            // Over the node's or the user's limit: a smaller size may pass.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => ask /= 2,
            Err(e) => return Err(e),
        }
    }
    get()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eperm() -> io::Error {
        io::Error::from_raw_os_error(libc::EPERM)
    }

    fn node_max() -> usize {
        std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(WANT)
    }

    fn has_cap_sys_resource() -> bool {
        caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap_or(false)
    }

    #[test]
    fn a_real_pipe_grows_to_the_size_asked() {
        let (r, _w) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
        let want = node_max().min(256 << 10);
        assert_eq!(grow(&r, want).ok(), Some(want));
        assert_eq!(size(&r).ok(), Some(want));
    }

    #[test]
    fn past_the_node_maximum_a_real_pipe_gets_the_largest_size_allowed() {
        let (r, _w) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
        let max = node_max();
        let got = grow(&r, 2 * max).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(size(&r).ok(), Some(got));
        if has_cap_sys_resource() {
            // The maximum does not bind this process.
            assert_eq!(got, 2 * max);
        } else {
            assert_eq!(got, max);
        }
    }

    #[test]
    fn refusals_halve_the_request_until_one_passes() {
        let mut asked = Vec::new();
        let got = grow_with(
            1 << 20,
            |n| {
                asked.push(n);
                if n > 128 << 10 { Err(eperm()) } else { Ok(n) }
            },
            || panic!("not needed once a size passed"),
        );
        assert_eq!(got.ok(), Some(128 << 10));
        assert_eq!(asked, [1 << 20, 512 << 10, 256 << 10, 128 << 10]);
    }

    #[test]
    fn a_pipe_that_cannot_grow_keeps_its_size() {
        let mut calls = 0;
        let got = grow_with(
            1 << 20,
            |_| {
                calls += 1;
                Err(eperm())
            },
            || Ok(8 << 10),
        );
        // Down to the kernel default, then the size it has.
        assert_eq!((got.ok(), calls), (Some(8 << 10), 4));
    }

    #[test]
    fn an_error_other_than_a_refusal_is_returned() {
        let got = grow_with(
            1 << 20,
            |_| Err(io::Error::from_raw_os_error(libc::EBADF)),
            || Ok(64 << 10),
        );
        assert_eq!(got.err().and_then(|e| e.raw_os_error()), Some(libc::EBADF));
    }
}
