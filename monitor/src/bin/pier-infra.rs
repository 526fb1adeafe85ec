//! `pier-infra`: the first process of a pod's shared PID namespace.
//!
//! A PID namespace dies with its first process, so a pod whose containers
//! share one needs a process that outlives them all. This is it: it drops
//! every privilege it can, then does nothing but reap the orphans the
//! namespace hands it until pierd ends it. Containers see it as PID 1.
//!
//! Usage: `pier-infra <empty-dir>`. It chroots into `<empty-dir>`, becomes
//! uid/gid 65535 with no capabilities, no new privileges and not dumpable (so
//! no container can reach the host's filesystem through `/proc/1/root`),
//! writes `ready\n` to stdout and then detaches from its stdio.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Uid};

/// The ids pause containers conventionally run as.
const NOBODY: u32 = 65535;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(root), None) = (args.next(), args.next()) else {
        report("usage: pier-infra <empty-dir>");
        return ExitCode::from(2);
    };
    // Signals are taken synchronously below; block them before anything can
    // arrive so none is lost or acted on by default.
    let signals = signals();
    if let Err(e) = signals.thread_block() {
        report(&format!("block signals: {e}"));
        return ExitCode::FAILURE;
    }
    if let Err(e) = harden(&root) {
        report(&e);
        return ExitCode::FAILURE;
    }
    if let Err(e) = announce_and_detach() {
        report(&format!("detach from stdio: {e}"));
        return ExitCode::FAILURE;
    }
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(_) => return ExitCode::SUCCESS,
            Err(_) => {}
        }
    }
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(signal);
    }
    set
}

/// Leaves the host's filesystem, session and privileges behind.
fn harden(root: &OsString) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    nix::unistd::chroot(root.as_os_str()).map_err(|e| format!("chroot {root:?}: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    let gid = Gid::from_raw(NOBODY);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    // Leaving uid 0 for good clears every capability set.
    let uid = Uid::from_raw(NOBODY);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    // After the uid change: changing credentials resets dumpability.
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("set not dumpable: {e}"))?;
    Ok(())
}

/// Tells the launcher setup is done, then points stdio at /dev/null so the
/// launcher's pipes close and no later write can block or fail.
fn announce_and_detach() -> nix::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(b"ready\n")
        .and_then(|()| stdout.flush())
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    // /dev/null is not inside the chroot: stdin is already /dev/null (the
    // launcher gives it that), so duplicate it over stdout and stderr.
    let null = std::io::stdin();
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

/// Collects every exited child, ours by birth or by reparenting.
fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn report(message: &str) {
    let _ = writeln!(std::io::stderr(), "pier-infra: {message}");
}
