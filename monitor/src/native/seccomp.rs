//! The container's seccomp filter, copied from its init.
//!
//! runc compiles the spec's profile for the init and again, identically,
//! for every `runc exec`. Copying the init's program (PTRACE_SECCOMP_GET_FILTER)
//! gives the exec'd process that very BPF, without a seccomp compiler in the
//! monitor. The init is held in a ptrace stop only for the copy (a
//! PTRACE_INTERRUPT stop; an interrupted syscall restarts as after any
//! signal stop), once per container.
#![allow(unsafe_code)]

use std::io;
use std::time::{Duration, Instant};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

/// How long the init may take to reach its ptrace stop.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// linux/ptrace.h; the libc crate does not have it.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

/// A BPF program, as `seccomp(2)` and `PR_SET_SECCOMP` take it.
pub struct Filter(Vec<libc::sock_filter>);

/// Why the init's filter could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("ptrace the container's init {pid}: {source}")]
    Ptrace { pid: i32, source: io::Error },
    #[error("the container's init {pid} exited while its seccomp filter was copied")]
    Exited { pid: i32 },
    #[error(
        "the container's init {pid} did not stop for the seccomp filter copy within {STOP_WAIT:?}"
    )]
    NoStop { pid: i32 },
    #[error("the container's init {pid} has no seccomp filter, though its spec has a profile")]
    NoFilter { pid: i32 },
}

/// Copies the oldest filter of `pid` (the one runc installed; a filter the
/// container's own program added later is newer).
pub fn copy_from(pid: i32) -> Result<Filter, CopyError> {
    let err = |source: io::Error| CopyError::Ptrace { pid, source };
    // SAFETY: ptrace requests with integer arguments only.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    let result = stop_and_copy(pid);
    // SAFETY: as above; detaching resumes the init whatever happened.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    result
}

fn stop_and_copy(pid: i32) -> Result<Filter, CopyError> {
    let err = |source: io::Error| CopyError::Ptrace { pid, source };
    // SAFETY: integer arguments only.
    if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // WNOWAIT: an exit stays for the event loop to reap (it is the
    // container's exit code); a ptrace stop is cleared by the detach.
    // WNOHANG and a deadline: an init that cannot stop (frozen, or in an
    // uninterruptible sleep) must not hang the monitor.
    let flags =
        WaitPidFlag::WSTOPPED | WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                return Err(CopyError::Exited { pid });
            }
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(WaitStatus::StillAlive) => return Err(CopyError::NoStop { pid }),
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(err(e.into())),
        }
    }
    let mut oldest = None;
    for index in 0.. {
        // SAFETY: with a null buffer the call only returns the length.
        let len = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                pid,
                index as libc::c_ulong,
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if len < 0 {
            let e = io::Error::last_os_error();
            // ENOENT past the oldest filter; EINVAL when there is none.
            if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) {
                break;
            }
            return Err(err(e));
        }
        let mut program = vec![
            libc::sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0
            };
            len as usize
        ];
        // SAFETY: the buffer holds `len` instructions, as the kernel said.
        let got = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                pid,
                index as libc::c_ulong,
                program.as_mut_ptr().cast::<libc::c_void>(),
            )
        };
        if got != len {
            return Err(err(io::Error::last_os_error()));
        }
        oldest = Some(program);
    }
    oldest.map(Filter).ok_or(CopyError::NoFilter { pid })
}

impl Filter {
    /// Installs the filter on the calling process (between fork and exec).
    /// Without no_new_privs this needs CAP_SYS_ADMIN, which the caller
    /// still has at that point.
    pub fn install(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: u16::try_from(self.0.len()).map_err(|_| io::Error::other("filter too long"))?,
            filter: self.0.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at our instructions, alive for the call.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
