//! Reaping: as child subreaper the monitor inherits the container's init
//! and any orphan the runtime leaves; every one of them is reaped so no
//! zombie outlives its parent.

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Exit code as the CRI reports it: the status, or 128+signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Reap every child that has exited; calls `on_exit(pid, code)` for each.
pub fn reap_all(mut on_exit: impl FnMut(i32, i32)) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                if let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) {
                    on_exit(pid.as_raw(), code);
                }
            }
        }
    }
}
