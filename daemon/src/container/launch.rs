//! Starting a container's monitor: spawn `pier-monitor` with its sync and
//! start-gate pipes, move it out of pierd's cgroup, open the gate, and read
//! the one message it reports once `runc create` is done.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use pier_proto::args::MonitorArgs;
use pier_proto::files;
use pier_proto::monitor::{Created, SyncResult, sync_result::Result as SyncKind};
use prost::Message;

/// The fds the monitor finds its pipes on.
const SYNC_FD: i32 = 3;
const GATE_FD: i32 = 4;

/// How long `runc create` may take before the container is given up on.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);

/// The cgroup monitors are moved into, in each hierarchy that tracks
/// services (the unified one and systemd's named v1 one): outside pierd's own
/// cgroup, so stopping or restarting pierd's service leaves monitors alone.
const MONITOR_CGROUP: &str = "pier-monitors";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("create pipe: {0}")]
    Pipe(#[source] nix::Error),
    #[error("open monitor log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spawn monitor {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("open the monitor's start gate: {0}")]
    Gate(#[source] std::io::Error),
    #[error("the container's setup failed before its monitor was let go")]
    Cancelled,
    #[error("monitor did not report within {0:?}")]
    Timeout(Duration),
    #[error("monitor exited without reporting (see {log})")]
    NoReport { log: PathBuf },
    #[error("monitor report unreadable: {0}")]
    BadReport(String),
    #[error("{0}")]
    Runtime(String),
}

impl LaunchError {
    /// Whether runc got as far as exec'ing the container's command and the
    /// command could not run (not in the image or its volumes, not
    /// executable): the request's fault, not the node's. runc resolves the
    /// command only once the mounts are in place, so pierd cannot check it
    /// first; runc 1.1 and later word it `exec: "<cmd>": ...` (quoted again
    /// in its log line).
    pub fn command_cannot_run(&self) -> bool {
        matches!(self, LaunchError::Runtime(stderr)
            if stderr.contains("unable to start container process: exec: "))
    }
}

/// The monitor binary and what it is told.
#[derive(Debug, Clone)]
pub struct Launch {
    pub monitor: PathBuf,
    /// Its command line. The sync and start-gate fds are the launcher's
    /// business: whatever `args` says, they are where it places its pipes.
    pub args: MonitorArgs,
}

impl Launch {
    fn command(&self) -> Command {
        let args = MonitorArgs {
            sync_fd: Some(SYNC_FD),
            start_gate_fd: Some(GATE_FD),
            ..self.args.clone()
        };
        let mut cmd = Command::new(&self.monitor);
        cmd.args(args.to_args());
        cmd
    }
}

/// Told once the bundle is ready for `runc create`; dropped unsent when
/// the container's setup failed.
pub type BundleReady = tokio::sync::oneshot::Receiver<()>;

/// Launches the monitor, opens its start gate once `ready` says so, and
/// waits for its report. Blocking: run it on a blocking thread.
pub fn launch(launch: &Launch, ready: BundleReady) -> Result<Created, LaunchError> {
    let (sync_read, sync_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    let (gate_read, gate_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    let log = launch.args.runtime_dir.join(files::MONITOR_LOG);
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|source| LaunchError::Log {
            path: log.clone(),
            source,
        })?;

    let mut cmd = launch.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file));
    let (sync_raw, gate_raw) = (sync_write.as_raw_fd(), gate_read.as_raw_fd());
    // SAFETY: runs in the child between fork and exec, and calls only
    // fcntl and dup2, which are async-signal-safe. The pipes were made
    // close-on-exec so that no other process spawned concurrently by this
    // multithreaded daemon inherits them; here they are first lifted above
    // the target numbers (so placing one cannot clobber the other), then
    // placed at 3 and 4, where dup2 clears close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            let sync = fcntl_dup_above(sync_raw)?;
            let gate = fcntl_dup_above(gate_raw)?;
            if libc_dup2(sync, SYNC_FD) < 0 || libc_dup2(gate, GATE_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        path: launch.monitor.clone(),
        source,
    })?;
    drop((sync_write, gate_read));
    move_to_monitor_cgroup(child.id());

    let mut gate = File::from(gate_write);
    if ready.blocking_recv().is_err() {
        // The gate closes unopened, and the monitor exits at once.
        drop(gate);
        let _ = child.wait();
        return Err(LaunchError::Cancelled);
    }
    gate.write_all(&[1]).map_err(LaunchError::Gate)?;
    drop(gate);
    crate::failpoint::crash_point("create_container.monitor_started");
    let report = read_report(sync_read, &log);
    // The first monitor process exits right after its double fork.
    let _ = child.wait();
    match report?.result {
        Some(SyncKind::Created(created)) => Ok(created),
        Some(SyncKind::Error(text)) => Err(LaunchError::Runtime(text)),
        None => Err(LaunchError::BadReport("empty result".into())),
    }
}

fn fcntl_dup_above(fd: i32) -> std::io::Result<i32> {
    // SAFETY: `fd` is open in this process; F_DUPFD only allocates a new fd.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_DUPFD(GATE_FD + 1))
        .map(|fd| fd.as_raw_fd())
        .map_err(std::io::Error::from)
}

fn libc_dup2(from: i32, to: i32) -> i32 {
    // SAFETY: plain dup2 on fds owned by this (child) process.
    unsafe { nix::libc::dup2(from, to) }
}

/// Reads the length-delimited report; EOF before it means the monitor died.
fn read_report(sync: OwnedFd, log: &Path) -> Result<SyncResult, LaunchError> {
    let fd = PollFd::new(std::os::fd::AsFd::as_fd(&sync), PollFlags::POLLIN);
    let timeout = PollTimeout::try_from(CREATE_TIMEOUT).unwrap_or(PollTimeout::MAX);
    match poll(&mut [fd], timeout) {
        Ok(0) => return Err(LaunchError::Timeout(CREATE_TIMEOUT)),
        Ok(_) => {}
        Err(e) => return Err(LaunchError::BadReport(e.to_string())),
    }
    let mut bytes = Vec::new();
    File::from(sync)
        .read_to_end(&mut bytes)
        .map_err(|e| LaunchError::BadReport(e.to_string()))?;
    if bytes.is_empty() {
        return Err(LaunchError::NoReport {
            log: log.to_owned(),
        });
    }
    SyncResult::decode_length_delimited(bytes.as_slice())
        .map_err(|e| LaunchError::BadReport(e.to_string()))
}

/// Moves the monitor into its own cgroup in the hierarchies a service
/// manager uses to find what belongs to pierd. Best effort: where there is no
/// such hierarchy there is nothing to escape from.
fn move_to_monitor_cgroup(pid: u32) {
    for hierarchy in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup",
    ] {
        let root = Path::new(hierarchy);
        let is_tracking = root.join("cgroup.procs").exists()
            && (hierarchy != "/sys/fs/cgroup" || root.join("cgroup.controllers").exists());
        if !is_tracking {
            continue;
        }
        let dir = root.join(MONITOR_CGROUP);
        let moved = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
        if let Err(e) = moved {
            tracing::warn!(cgroup = %dir.display(), error = %e, "could not move monitor out of pierd's cgroup");
        }
    }
}
