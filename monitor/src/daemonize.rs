//! Getting out of the daemon's way: wait for the start gate, double-fork,
//! new session, subreaper, signal dispositions, fd hygiene. All of this runs
//! before any thread exists, so fork is safe.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, RawFd};

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{ForkResult, fork, setsid};

#[derive(Debug, thiserror::Error)]
pub enum DaemonizeError {
    #[error("start gate fd {fd}: {source}")]
    Gate { fd: RawFd, source: io::Error },
    #[error("start gate fd {0}: closed before the start byte (daemon gone)")]
    GateClosed(RawFd),
    #[error("fork: {0}")]
    Fork(#[source] nix::Error),
    #[error("setsid: {0}")]
    Setsid(#[source] nix::Error),
    #[error("cannot become child subreaper: {0}")]
    Subreaper(#[source] io::Error),
    #[error("cannot block signals: {0}")]
    Signals(#[source] nix::Error),
}

/// Block until the daemon writes one byte on the gate fd: it first moves us
/// into our own cgroup, so a restart of pierd's unit cannot take us down.
pub fn wait_gate(fd: RawFd) -> Result<(), DaemonizeError> {
    // SAFETY: the daemon hands this fd to us for our exclusive use; nothing
    // else in this process owns it.
    let mut gate = unsafe { File::from_raw_fd(fd) };
    let mut b = [0u8; 1];
    loop {
        match gate.read(&mut b) {
            Ok(0) => return Err(DaemonizeError::GateClosed(fd)),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(DaemonizeError::Gate { fd, source }),
        }
    }
}

/// Double-fork: the first child's parent (the process the daemon spawned)
/// exits at once, the first child starts a session and exits after forking
/// again, and the grandchild, re-parented to init or the nearest
/// subreaper, carries on as the monitor. Returns only in the grandchild.
pub fn detach() -> Result<(), DaemonizeError> {
    // SAFETY: single-threaded here (no thread is ever started before this).
    match unsafe { fork() }.map_err(DaemonizeError::Fork)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(DaemonizeError::Setsid)?;
    // SAFETY: still single-threaded.
    match unsafe { fork() }.map_err(DaemonizeError::Fork)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    Ok(())
}

/// Signals the monitor handles through its signalfd instead of their
/// default action: SIGCHLD, and SIGHUP (the daemon's session going away),
/// blocked rather than ignored because an ignored disposition would be
/// inherited by runc and the container, while std resets the mask when it
/// spawns runc. SIGPIPE is left alone: std already ignores it in the
/// monitor and restores the default for runc; blocking it here leaks into
/// the container (seen with runc 1.1: a `yes | head` never ended).
pub fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGHUP);
    set
}

/// Ignored dispositions survive exec, so whatever the daemon's own
/// environment ignores (a shell's SIGQUIT, say) would reach runc and the
/// container. Start every standard signal at its default; SIGPIPE stays as
/// std set it (ignored here, reset by std in every child it spawns).
fn reset_ignored_signals() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGPIPE) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code of ours.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
    }
}

/// Subreaper + blocked signals; called in the grandchild.
pub fn become_monitor() -> Result<(), DaemonizeError> {
    crate::sys::set_child_subreaper().map_err(DaemonizeError::Subreaper)?;
    reset_ignored_signals();
    signal_set()
        .thread_block()
        .map_err(DaemonizeError::Signals)?;
    Ok(())
}
