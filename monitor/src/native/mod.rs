//! Native exec: the monitor starts an exec'd process itself, applying what
//! `runc exec` would, from the exec profile the daemon wrote beside the
//! bundle's config.json. It saves a Go binary start and runc's own
//! re-exec per exec (docs/security.md, "Native exec", has every step).
//!
//! The monitor is single-threaded (no thread is ever spawned in it), so a
//! fork here copies one thread in a known state. A container whose spec
//! uses a feature this path does not reproduce, or whose profile is
//! missing, keeps `runc exec`; the monitor says why once.

mod cgroups;
mod child;
mod pty;
mod seccomp;

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use caps::Capability;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use pier_proto::args::MonitorArgs;
use pier_proto::monitor::{ExecProfile, StartFailure};
use pier_proto::{files, proc_stat};
use prost::Message;

use child::{CapSets, Plan, RECORD_ERROR, RECORD_PID};
pub use pty::Pty;

/// Longest the monitor waits for an exec'd process to be set up and exec.
/// Setup is a handful of syscalls; only an exec that hangs (a binary on a
/// stuck filesystem) comes near it.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The namespaces an exec'd process joins, in the order it joins them:
/// mount last, so the paths of the others still resolve on the host.
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// The container's init, as the monitor knows it.
#[derive(Clone, Copy)]
pub struct Init {
    pub pid: i32,
    pub start_time: u64,
}

/// How an exec request ended up.
pub enum Outcome {
    /// Running, as the monitor's child.
    Started { pid: i32 },
    /// It never ran; nothing of it is left.
    Failed { kind: StartFailure, text: String },
    /// This one goes through `runc exec`.
    Runtime,
}

/// The per-container state of the native path.
#[derive(Default)]
pub struct Native {
    state: State,
    /// Tty execs go through the runtime (said once in the log): no pty
    /// could be made in the container's devpts.
    tty_off: bool,
}

#[derive(Default)]
enum State {
    #[default]
    Unloaded,
    /// Every exec goes through the runtime (said once in the log).
    Off,
    On(Box<Ready>),
}

struct Ready {
    profile: ExecProfile,
    caps: CapSets,
    hierarchies: Vec<cgroups::Hierarchy>,
    filter: Option<seccomp::Filter>,
}

impl Native {
    /// Loads the container's profile on first use; whether execs can be
    /// started natively.
    fn ready(&mut self, cfg: &MonitorArgs, init: Init) -> bool {
        if matches!(self.state, State::Unloaded) {
            self.state = match load(cfg, init) {
                Ok(ready) => State::On(Box::new(ready)),
                Err(why) => {
                    crate::diag!("exec runs through the runtime for this container: {why}");
                    State::Off
                }
            };
        }
        matches!(self.state, State::On(_))
    }

    /// A pty for a tty exec, in the container's devpts; `None` when tty
    /// execs go through the runtime.
    pub fn open_pty(&mut self, cfg: &MonitorArgs, init: Init) -> Option<Pty> {
        if !self.ready(cfg, init) || self.tty_off {
            return None;
        }
        match pty::open_in(init.pid) {
            Ok(pty) => Some(pty),
            Err(why) => {
                crate::diag!("tty exec runs through the runtime for this container: {why}");
                self.tty_off = true;
                None
            }
        }
    }

    /// Starts `argv` natively with the given stdio, or says to use runc.
    /// With `tty`, stdin is a pty's slave, which becomes the process's
    /// controlling terminal.
    pub fn start(
        &mut self,
        cfg: &MonitorArgs,
        init: Init,
        argv: &[String],
        env: &[String],
        stdio: [RawFd; 3],
        tty: bool,
    ) -> Outcome {
        if !self.ready(cfg, init) {
            return Outcome::Runtime;
        }
        let State::On(ready) = &self.state else {
            return Outcome::Runtime;
        };
        match spawn(ready, cfg, init, argv, env, stdio, tty) {
            Ok(outcome) => outcome,
            Err(Fallback(why)) => {
                crate::diag!("exec runs through the runtime for this container: {why}");
                self.state = State::Off;
                Outcome::Runtime
            }
        }
    }
}

/// Why the native path cannot serve a container at all.
struct Fallback(String);

fn load(cfg: &MonitorArgs, init: Init) -> Result<Ready, String> {
    // Forking is only safe in a single-threaded process; nothing in the
    // monitor starts a thread, and this keeps it so should one ever do.
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
    if threads != Some(1) {
        return Err(format!(
            "the monitor is not single-threaded ({threads:?} threads)"
        ));
    }
    let path = cfg.bundle.join(files::EXEC_PROFILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("no exec profile ([exec] native was off, or not runc)".into());
        }
        Err(e) => return Err(format!("exec profile {}: {e}", path.display())),
    };
    let profile = ExecProfile::decode_length_delimited(bytes.as_slice())
        .map_err(|e| format!("exec profile {}: {e}", path.display()))?;
    if !profile.unsupported.is_empty() {
        return Err(format!("the spec uses {}", profile.unsupported));
    }
    let set = |names: &[String]| -> Result<HashSet<Capability>, String> {
        names
            .iter()
            .map(|n| n.parse().map_err(|_| format!("capability {n}")))
            .collect()
    };
    let caps = CapSets {
        bounding: set(&profile.cap_bounding)?,
        effective: set(&profile.cap_effective)?,
        permitted: set(&profile.cap_permitted)?,
        inheritable: set(&profile.cap_inheritable)?,
        ambient: set(&profile.cap_ambient)?,
    };
    if !same_namespace(init.pid, "user").map_err(|e| format!("user namespace: {e}"))? {
        return Err("the container has its own user namespace".into());
    }
    let hierarchies = cgroups::hierarchies().map_err(|e| format!("mount table: {e}"))?;
    let filter = if profile.seccomp {
        Some(seccomp::copy_from(init.pid).map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(Ready {
        profile,
        caps,
        hierarchies,
        filter,
    })
}

/// Whether `pid` shares the monitor's namespace of this kind.
fn same_namespace(pid: i32, kind: &str) -> io::Result<bool> {
    let own = std::fs::metadata(format!("/proc/self/ns/{kind}"))?;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))?;
    Ok(own.ino() == theirs.ino() && own.dev() == theirs.dev())
}

fn spawn(
    ready: &Ready,
    cfg: &MonitorArgs,
    init: Init,
    argv: &[String],
    env: &[String],
    stdio: [RawFd; 3],
    tty: bool,
) -> Result<Outcome, Fallback> {
    // The init's pid is ours until we reap it; the start time proves it is
    // still the container's init (not a pid reused after the reap).
    let alive = || proc_stat::start_time(init.pid) == Some(init.start_time);
    if !alive() {
        return Ok(Outcome::Runtime);
    }
    let mut namespaces = Vec::new();
    for (kind, flag) in NAMESPACES {
        let same = same_namespace(init.pid, kind)
            .map_err(|e| Fallback(format!("{kind} namespace of the init: {e}")))?;
        if !same {
            let fd = std::fs::File::open(format!("/proc/{}/ns/{kind}", init.pid))
                .map_err(|e| Fallback(format!("{kind} namespace of the init: {e}")))?;
            namespaces.push((OwnedFd::from(fd), flag));
        }
    }
    let cgroup_procs = cgroups::procs_files(init.pid, &ready.hierarchies)
        .map_err(|e| Fallback(format!("cgroups of the init: {e}")))?;
    // Opened after the first check: the same start time now means the fds
    // are the init's.
    if !alive() {
        return Ok(Outcome::Runtime);
    }
    let mut all_env = ready.profile.env.clone();
    all_env.extend_from_slice(env);
    let plan = Plan {
        profile: &ready.profile,
        caps: &ready.caps,
        filter: ready.filter.as_ref(),
        namespaces,
        cgroup_procs,
        argv: argv.to_vec(),
        env: all_env,
        keyring: format!("_ses.{}", cfg.id),
        stdin: stdio[0],
        stdout: stdio[1],
        stderr: stdio[2],
        tty,
    };
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Fallback(format!("pipe: {e}")))?;
    // SAFETY: the monitor is single-threaded; the child only runs
    // `child::helper`, which never returns.
    #[allow(unsafe_code)]
    let helper = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(report_r);
            child::helper(&plan, report_w.as_fd())
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(Fallback(format!("fork: {e}"))),
    };
    drop(report_w);
    drop(plan);
    let report = read_report(&report_r).unwrap_or_default();
    let (pid, error) = parse_report(&report);
    if pid.is_some() {
        // The helper exits right after the pid record; reaping it now
        // makes the process the monitor's child (we are its subreaper).
        let _ = waitpid(helper, None);
    } else {
        // It failed (and exits), or is stuck (a frozen cgroup): kill it
        // either way and leave the reaping to the event loop.
        let _ = kill(helper, Signal::SIGKILL);
    }
    Ok(match (pid, error) {
        (Some(pid), None) => Outcome::Started { pid },
        (pid, Some((kind, text))) => {
            if let Some(pid) = pid {
                // It wrote its error and exits (or hangs and was killed);
                // the event loop reaps it.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Outcome::Failed { kind, text }
        }
        (None, None) => Outcome::Failed {
            kind: StartFailure::Precondition,
            text: "exec helper ended without a word".into(),
        },
    })
}

/// The report pipe's content up to EOF, or up to [`SETUP_TIMEOUT`]; past
/// that, a hung setup is killed and reported.
fn read_report(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    crate::sys::set_nonblocking(fd)?;
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut out = Vec::new();
    loop {
        match child::read_report(fd, &mut out) {
            Ok(()) => return Ok(out),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if let (Some(pid), None) = parse_report(&out) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let text = format!("exec did not start within {SETUP_TIMEOUT:?}");
            out.extend(error_record(StartFailure::Precondition, &text));
            return Ok(out);
        }
        let mut fds = [libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
        let _ = crate::sys::poll(&mut fds, ms);
    }
}

/// The pid record and the error record of a report, where present.
fn parse_report(mut data: &[u8]) -> (Option<i32>, Option<(StartFailure, String)>) {
    let (mut pid, mut error) = (None, None);
    while let Some((&tag, rest)) = data.split_first() {
        match tag {
            RECORD_PID if rest.len() >= 4 => {
                let (n, rest) = rest.split_at(4);
                pid = n.try_into().ok().map(i32::from_le_bytes);
                data = rest;
            }
            RECORD_ERROR if rest.len() >= 5 => {
                let kind = StartFailure::try_from(i32::from(rest[0]))
                    .unwrap_or(StartFailure::Precondition);
                let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                let text = &rest[5..];
                let text = &text[..len.min(text.len())];
                error = Some((kind, String::from_utf8_lossy(text).into_owned()));
                data = &rest[5 + text.len()..];
            }
            _ => break,
        }
    }
    (pid, error)
}

/// An error record, as the children write it.
fn error_record(kind: StartFailure, text: &str) -> Vec<u8> {
    let mut record = vec![RECORD_ERROR, kind as i32 as u8];
    record.extend_from_slice(&(text.len() as u32).to_le_bytes());
    record.extend_from_slice(text.as_bytes());
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_records_parse() {
        let mut data = vec![RECORD_PID];
        data.extend_from_slice(&1234i32.to_le_bytes());
        assert_eq!(parse_report(&data).0, Some(1234));
        data.extend(error_record(
            StartFailure::NotFound,
            "exec \"x\": not found",
        ));
        let (pid, err) = parse_report(&data);
        assert_eq!(pid, Some(1234));
        let (kind, text) = err.expect("error record");
        assert_eq!(kind, StartFailure::NotFound);
        assert_eq!(text, "exec \"x\": not found");
        // The process's error may come before the helper's pid.
        let mut data = error_record(StartFailure::Precondition, "chdir");
        data.push(RECORD_PID);
        data.extend_from_slice(&77i32.to_le_bytes());
        let (pid, err) = parse_report(&data);
        assert_eq!(pid, Some(77));
        assert_eq!(err.map(|e| e.1).as_deref(), Some("chdir"));
    }
}
