//! What runs between fork and exec: first in the helper (the monitor's
//! child), which takes the container's resource limits, OOM score, cgroups
//! and namespaces, and forks again so the process is inside the PID
//! namespace; then in that process, which takes the container's identity
//! the way runc's setns init does (libcontainer/setns_init_linux.go and
//! finalizeNamespace in init_linux.go) and execs. docs/security.md walks
//! through each step and why it is safe.
//!
//! Both run in a copy of the single-threaded monitor, so allocating is safe
//! here. They talk to the monitor through one close-on-exec pipe: the
//! helper sends the process's pid, either of them the error that stopped
//! it; EOF after the pid means the exec succeeded.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::unistd::{ForkResult, Gid, Uid, fork};
use pier_proto::monitor::{ExecProfile, StartFailure};

use super::seccomp::Filter;

/// A record on the report pipe: the process's pid.
pub const RECORD_PID: u8 = b'P';
/// A record on the report pipe: an error (kind byte, text length as u32
/// little-endian, text). The helper's pid record and the process's error
/// record may come in either order.
pub const RECORD_ERROR: u8 = b'E';

/// The capability sets, parsed once per container.
pub struct CapSets {
    pub bounding: HashSet<Capability>,
    pub effective: HashSet<Capability>,
    pub permitted: HashSet<Capability>,
    pub inheritable: HashSet<Capability>,
    pub ambient: HashSet<Capability>,
}

/// Everything the two children need, prepared by the monitor before fork.
pub struct Plan<'a> {
    pub profile: &'a ExecProfile,
    pub caps: &'a CapSets,
    pub filter: Option<&'a Filter>,
    /// The container's namespaces that differ from the monitor's, in the
    /// order to join them.
    pub namespaces: Vec<(OwnedFd, CloneFlags)>,
    pub cgroup_procs: Vec<PathBuf>,
    pub argv: Vec<String>,
    /// The spec's environment followed by the request's.
    pub env: Vec<String>,
    /// runc's name for the container's session keyring.
    pub keyring: String,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// Stdio is a pty's slave, to become the controlling terminal.
    pub tty: bool,
}

/// A step that failed, for the report.
pub struct Failure {
    kind: StartFailure,
    text: String,
}

impl Failure {
    fn new(kind: StartFailure, text: String) -> Self {
        Self { kind, text }
    }

    fn setup(step: &str, e: impl std::fmt::Display) -> Self {
        Self::new(StartFailure::Precondition, format!("{step}: {e}"))
    }
}

/// The helper: runs in the monitor's child, never returns.
pub fn helper(plan: &Plan<'_>, report: BorrowedFd<'_>) -> ! {
    match join_container(plan) {
        Ok(()) => {}
        Err(f) => send_failure(report, &f, 1),
    }
    // SAFETY: the process is single-threaded (a copy of the monitor).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let Err(f) = process(plan);
            send_failure(report, &f, 255);
        }
        Ok(ForkResult::Parent { child }) => {
            let mut record = vec![RECORD_PID];
            record.extend_from_slice(&child.as_raw().to_le_bytes());
            let _ = write_all(report, &record);
            exit(0);
        }
        Err(e) => send_failure(report, &Failure::setup("fork into the container", e), 1),
    }
}

/// Limits, OOM score and cgroups (through the host's /proc and cgroup
/// mounts, so before the mount namespace changes), then the namespaces.
fn join_container(plan: &Plan<'_>) -> Result<(), Failure> {
    let profile = plan.profile;
    for r in &profile.rlimits {
        let limit = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads one rlimit struct that outlives the call.
        if unsafe { libc::setrlimit(r.resource as _, &limit) } < 0 {
            return Err(Failure::setup(
                &format!("set rlimit {}", r.resource),
                io::Error::last_os_error(),
            ));
        }
    }
    if let Some(score) = profile.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", score.to_string())
            .map_err(|e| Failure::setup("set oom_score_adj", e))?;
    }
    for procs in &plan.cgroup_procs {
        std::fs::write(procs, "0")
            .map_err(|e| Failure::setup(&format!("join cgroup {}", procs.display()), e))?;
    }
    for (fd, kind) in &plan.namespaces {
        setns(fd, *kind).map_err(|e| Failure::setup(&format!("join namespace {kind:?}"), e))?;
    }
    Ok(())
}

/// The exec'd process, inside every namespace: runc's setns init order.
fn process(plan: &Plan<'_>) -> Result<std::convert::Infallible, Failure> {
    let profile = plan.profile;
    reset_signals();
    stdio(plan).map_err(|e| Failure::setup("set up stdio", e))?;
    // As runc's nsexec: every exec'd process leads a session of its own
    // (the monitor's session lies outside the container), and a tty exec
    // gets its pty as the controlling terminal, its own process group in
    // the foreground (so Ctrl-C reaches it).
    nix::unistd::setsid().map_err(|e| Failure::setup("setsid", e))?;
    if plan.tty {
        // SAFETY: ioctl with integer arguments on the process's own fd 0.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(Failure::setup(
                "set controlling terminal",
                io::Error::last_os_error(),
            ));
        }
    }
    // Everything but stdio closes at exec; the report pipe already does.
    // SAFETY: close_range with integer arguments only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc < 0 {
        // Never exec with the monitor's fds open.
        return Err(Failure::setup("close-on-exec", io::Error::last_os_error()));
    }
    join_session_keyring(&plan.keyring)?;
    if profile.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(|e| Failure::setup("set no_new_privs", e))?;
    }
    // No umask from the profile: runc 1.1's exec leaves the spec's umask
    // to the container's init, and the process keeps its parent's (the
    // monitor's, which runc exec would inherit too).
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: before
    // the capabilities go. With it, as late as possible (below).
    if let (Some(filter), false) = (plan.filter, profile.no_new_privileges) {
        filter
            .install()
            .map_err(|e| Failure::setup("install seccomp filter", e))?;
    }
    let env = finalize(plan)?;
    let path = look_path(&plan.argv[0], &env)?;
    if let (Some(filter), true) = (plan.filter, profile.no_new_privileges) {
        filter
            .install()
            .map_err(|e| Failure::setup("install seccomp filter", e))?;
    }
    let cstr =
        |s: &str| CString::new(s).map_err(|_| Failure::setup("exec", format!("NUL byte in {s:?}")));
    let path_c = cstr(&path)?;
    let argv: Vec<CString> = plan
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?;
    let e = nix::unistd::execve(&path_c, &argv, &envp).unwrap_err();
    let kind = if e == Errno::ENOENT {
        StartFailure::NotFound
    } else {
        StartFailure::Precondition
    };
    Err(Failure::new(
        kind,
        format!("exec {path:?}: {}", io::Error::from(e)),
    ))
}

/// No signal blocked or ignored (the monitor blocks the ones its signalfd
/// reads, and Rust ignores SIGPIPE), as in a process runc starts.
fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        // SAFETY: resetting a disposition to the default installs no handler.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let empty = nix::sys::signal::SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&empty),
        None,
    );
}

fn stdio(plan: &Plan<'_>) -> io::Result<()> {
    for (from, to) in [(plan.stdin, 0), (plan.stdout, 1), (plan.stderr, 2)] {
        // SAFETY: dup2 onto the standard fds of this (child) process.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // dup2 onto itself keeps the flags: clear close-on-exec explicitly.
        // SAFETY: fcntl with integer arguments.
        unsafe { libc::fcntl(to, libc::F_SETFD, 0) };
    }
    Ok(())
}

/// runc joins (or creates) the container's session keyring `_ses.<id>`
/// rather than keep its parent's.
fn join_session_keyring(name: &str) -> Result<(), Failure> {
    let name = CString::new(name).map_err(|_| Failure::setup("keyring", "NUL in name"))?;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl reads the NUL-terminated name, alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        // As runc: a kernel without keyrings is no error.
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(Failure::setup("join session keyring", e));
        }
    }
    Ok(())
}

/// runc's finalizeNamespace: working directory, bounding set, user and
/// groups, capabilities. Returns the final environment (HOME added as runc
/// adds it).
fn finalize(plan: &Plan<'_>) -> Result<Vec<String>, Failure> {
    let profile = plan.profile;
    let cwd_failure = |e: Errno| {
        Failure::new(
            StartFailure::Precondition,
            format!("chdir to cwd {:?}: {}", profile.cwd, io::Error::from(e)),
        )
    };
    // As root first (it may reach what the user cannot); on a permission
    // error again as the user.
    let mut chdir_later = false;
    if !profile.cwd.is_empty() {
        match nix::unistd::chdir(profile.cwd.as_str()) {
            Ok(()) => {}
            Err(Errno::EACCES | Errno::EPERM) => chdir_later = true,
            Err(e) => return Err(cwd_failure(e)),
        }
    }
    for cap in caps::all() {
        if !plan.caps.bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| Failure::setup("drop bounding capability", e))?;
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| Failure::setup("keep capabilities", e))?;
    let home = home_of(profile.uid);
    fix_stdio_owner(profile.uid).map_err(|e| Failure::setup("chown stdio", e))?;
    let groups: Vec<Gid> = profile
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| Failure::setup("setgroups", e))?;
    nix::unistd::setgid(Gid::from_raw(profile.gid)).map_err(|e| Failure::setup("setgid", e))?;
    nix::unistd::setuid(Uid::from_raw(profile.uid)).map_err(|e| Failure::setup("setuid", e))?;
    if chdir_later {
        nix::unistd::chdir(profile.cwd.as_str()).map_err(cwd_failure)?;
    }
    // The working directory must be inside the container's root.
    match nix::unistd::getcwd() {
        Ok(_) => {}
        Err(e) => return Err(Failure::setup("working directory outside the container", e)),
    }
    nix::sys::prctl::set_keepcaps(false).map_err(|e| Failure::setup("clear keepcaps", e))?;
    let set = |which: CapSet, value: &HashSet<Capability>| {
        caps::set(None, which, value).map_err(|e| Failure::setup("set capabilities", e))
    };
    // Effective first (it must stay within permitted), permitted last.
    set(CapSet::Effective, &plan.caps.effective)?;
    set(CapSet::Inheritable, &plan.caps.inheritable)?;
    set(CapSet::Permitted, &plan.caps.permitted)?;
    // As runc: ambient capabilities are raised in ascending order up to
    // the first the kernel refuses (one not both permitted and
    // inheritable), and a refusal is no error.
    caps::clear(None, CapSet::Ambient).map_err(|e| Failure::setup("clear ambient", e))?;
    let mut ambient: Vec<Capability> = plan.caps.ambient.iter().copied().collect();
    ambient.sort_by_key(|c| c.index());
    for cap in ambient {
        if caps::raise(None, CapSet::Ambient, cap).is_err() {
            break;
        }
    }
    Ok(environment(&plan.env, home))
}

/// The environment as runc's init builds it: each variable at its first
/// position with its last value, then HOME from the user's passwd entry
/// (or "/") when it is unset or empty.
fn environment(pairs: &[String], home: Option<String>) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v.to_owned(),
            None => env.push((k.to_owned(), v.to_owned())),
        }
    }
    let home = home.unwrap_or_else(|| "/".to_owned());
    match env.iter_mut().find(|(k, _)| k == "HOME") {
        Some(e) if e.1.is_empty() => e.1 = home,
        Some(_) => {}
        None => env.push(("HOME".to_owned(), home)),
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The home directory of `uid` in the container's /etc/passwd, read as
/// runc reads it (first entry with that uid; a uid field that is not a
/// number counts as 0). Only a regular file is read, without blocking.
fn home_of(uid: u32) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open("/etc/passwd")
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.by_ref().take(4 << 20).read_to_string(&mut text).ok()?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let entry_uid = f.get(2).and_then(|u| u.parse::<u32>().ok()).unwrap_or(0);
            (entry_uid == uid).then(|| f.get(5).copied().unwrap_or("").to_owned())
        })
}

/// runc gives the process's stdio to its user (owner only), unless it is
/// /dev/null or already theirs; a chown the filesystem refuses is skipped.
fn fix_stdio_owner(uid: u32) -> io::Result<()> {
    let null = nix::sys::stat::stat("/dev/null").map_err(io::Error::from)?;
    for fd in 0..=2 {
        // SAFETY: fds 0-2 are open (set up above) for the rest of the call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
        if st.st_uid == uid || st.st_rdev == null.st_rdev {
            continue;
        }
        match nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), None) {
            Ok(()) | Err(Errno::EINVAL | Errno::EPERM | Errno::EROFS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The executable for `file` as Go's exec.LookPath finds it (runc uses it):
/// a name with a slash as is, else the first executable in $PATH.
fn look_path(file: &str, env: &[String]) -> Result<String, Failure> {
    let not_found = |text: String| Failure::new(StartFailure::NotFound, text);
    if file.contains('/') {
        return match executable(file) {
            Ok(()) => Ok(file.to_owned()),
            Err(e) if e == Errno::ENOENT => Err(not_found(format!(
                "exec {file:?}: stat {file}: {}",
                io::Error::from(e)
            ))),
            Err(e) => Err(Failure::new(
                StartFailure::Precondition,
                format!("exec {file:?}: {}", io::Error::from(e)),
            )),
        };
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{}/{file}", dir.trim_end_matches('/'));
        if executable(&candidate).is_ok() {
            if !candidate.starts_with('/') {
                return Err(Failure::new(
                    StartFailure::Precondition,
                    format!(
                        "exec {file:?}: cannot run executable found relative to current directory"
                    ),
                ));
            }
            return Ok(candidate);
        }
    }
    Err(not_found(format!(
        "exec {file:?}: executable file not found in $PATH"
    )))
}

/// A file that is not a directory and has an execute bit.
fn executable(path: &str) -> Result<(), Errno> {
    let st = nix::sys::stat::stat(path)?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if !is_dir && st.st_mode & 0o111 != 0 {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

fn send_failure(report: BorrowedFd<'_>, f: &Failure, code: i32) -> ! {
    let text = &f.text.as_bytes()[..f.text.len().min(4096)];
    let mut record = vec![RECORD_ERROR, f.kind as i32 as u8];
    record.extend_from_slice(&(text.len() as u32).to_le_bytes());
    record.extend_from_slice(text);
    let _ = write_all(report, &record);
    exit(code)
}

fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Leave without running the monitor's destructors or atexit handlers:
/// they belong to the monitor, not to this copy of it.
fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; nothing else runs.
    unsafe { libc::_exit(code) }
}

/// Reads the report pipe into `out` until EOF (`Ok`) or until it would
/// block (`WouldBlock`), in the monitor.
pub fn read_report(fd: &impl AsFd, out: &mut Vec<u8>) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_keeps_first_position_and_last_value_and_adds_home() {
        let pairs = ["A=1", "PATH=/bin", "A=2", "novalue", "B="].map(String::from);
        assert_eq!(
            environment(&pairs, Some("/root".into())),
            ["A=2", "PATH=/bin", "B=", "HOME=/root"]
        );
        let with_home = ["HOME=/h".to_owned()];
        assert_eq!(environment(&with_home, None), ["HOME=/h"]);
        let empty_home = ["HOME=".to_owned(), "X=1".to_owned()];
        assert_eq!(environment(&empty_home, None), ["HOME=/", "X=1"]);
    }
}
