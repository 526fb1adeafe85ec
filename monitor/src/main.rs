//! pier-monitor: one per container. It owns the container's stdio or pty,
//! writes the CRI log, serves attach/resize/reopen/exec/status on its
//! control socket, reaps the container's init and leaves the exit file.
//! See docs/monitor.md for the contract with the daemon.

#![deny(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

use pier_proto::args::{ArgsError, MonitorArgs, USAGE};
use pier_proto::monitor::{Created, SyncResult, sync_result::Result as SyncKind};
use pier_proto::{files, proc_stat};
use prost::Message;

static DIAG_PREFIX: OnceLock<String> = OnceLock::new();

/// The monitor's own diagnostics go to its stderr (the daemon points it at
/// a file). A write error is ignored: diagnostics must never take the
/// monitor down.
macro_rules! diag {
    ($($t:tt)*) => {{
        let prefix = $crate::DIAG_PREFIX.get().map_or("pier-monitor", |s| s.as_str());
        let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("{}: {}\n", prefix, format_args!($($t)*)));
    }};
}
pub(crate) use diag;

mod child_reaper;
mod control;
mod cri_log;
mod daemonize;
mod exec;
mod failpoint;
mod native;
mod oom;
mod pipe_size;
mod proc_tree;
mod runtime;
mod server;
mod sys;
mod terminal;
mod timestamp;
mod writeback;

#[allow(clippy::print_stdout, reason = "--help and --version answer on stdout")]
fn main() -> ExitCode {
    sys::tune_malloc();
    let args = match MonitorArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Version) => {
            println!("pier-monitor {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            diag!("{e}");
            return ExitCode::from(2);
        }
    };
    let _ = DIAG_PREFIX.set(format!("pier-monitor[{}]", args.id));
    ExitCode::from(run(args))
}

fn run(cfg: MonitorArgs) -> u8 {
    #[cfg(feature = "failpoints")]
    let _failpoints = failpoint::arm_from_env();
    if let Some(fd) = cfg.start_gate_fd
        && let Err(e) = daemonize::wait_gate(fd)
    {
        diag!("{e}");
        return 1;
    }
    failpoint::crash_point("monitor.start_gate_opened");
    if let Err(e) = daemonize::detach() {
        diag!("{e}");
        return 1;
    }
    let keep: Vec<i32> = [0, 1, 2].into_iter().chain(cfg.sync_fd).collect();
    sys::close_fds_except(&keep);
    sys::stdio_to_devnull();
    let mut sync = cfg.sync_fd.map(|fd| {
        let _ = sys::set_cloexec(fd);
        // SAFETY: the daemon hands us this fd; it is ours alone after the
        // walk above closed everything else.
        #[allow(unsafe_code)]
        unsafe {
            File::from_raw_fd(fd)
        }
    });
    // Whether the daemon got the message (or there is no daemon to tell).
    let mut report = |result: SyncKind| -> bool {
        // Taking the file closes it after this one message.
        let Some(mut f) = sync.take() else {
            return true;
        };
        let msg = SyncResult {
            result: Some(result),
        };
        match f.write_all(&msg.encode_length_delimited_to_vec()) {
            Ok(()) => true,
            Err(e) => {
                diag!("sync fd: {e}");
                false
            }
        }
    };
    if let Err(e) = daemonize::become_monitor() {
        diag!("{e}");
        let _ = report(SyncKind::Error(e.to_string()));
        return 1;
    }
    match start(&cfg) {
        Ok((server, created)) => {
            if report(SyncKind::Created(created)) {
                return server.run();
            }
            // The daemon died before it heard of the container: its next
            // start removes the half-made container, so none must run here.
            diag!("daemon gone before the create was reported; deleting the container");
            drop(server);
            runtime::delete_force(&cfg);
            child_reaper::reap_all(|_, _| {});
            1
        }
        Err(e) => {
            diag!("{e}");
            // The runtime's own text is in the message: the daemon shows it.
            let _ = report(SyncKind::Error(e.to_string()));
            // Reap whatever the runtime left, so no zombie remains.
            child_reaper::reap_all(|_, _| {});
            1
        }
    }
}

/// Why the monitor could not get as far as a created container.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("bundle {}: no config.json", .0.display())]
    NoConfig(PathBuf),
    #[error("runtime dir {}: {source}", path.display())]
    RuntimeDir { path: PathBuf, source: io::Error },
    #[error("exit dir {}: {source}", path.display())]
    ExitDir { path: PathBuf, source: io::Error },
    #[error("log file {}: {source}", path.display())]
    LogFile { path: PathBuf, source: io::Error },
    #[error("control socket {}: {source}", path.display())]
    ControlSocket { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Runtime(#[from] runtime::CreateError),
    #[error("monitor setup: {0}")]
    Setup(#[source] io::Error),
}

/// Everything up to a created container and a listening control socket.
fn start(cfg: &MonitorArgs) -> Result<(server::Server, Created), StartError> {
    if !cfg.bundle.join("config.json").is_file() {
        return Err(StartError::NoConfig(cfg.bundle.clone()));
    }
    std::fs::create_dir_all(&cfg.runtime_dir).map_err(|source| StartError::RuntimeDir {
        path: cfg.runtime_dir.clone(),
        source,
    })?;
    for dir in &cfg.exit_dirs {
        std::fs::create_dir_all(dir).map_err(|source| StartError::ExitDir {
            path: dir.clone(),
            source,
        })?;
    }
    // A record needs room for at least one byte of content.
    let max_line = usize::try_from(cfg.log_max_line.max(1)).unwrap_or(usize::MAX);
    let mut log =
        cri_log::CriLog::open(&cfg.log_path, max_line, cfg.log_max_size).map_err(|source| {
            StartError::LogFile {
                path: cfg.log_path.clone(),
                source,
            }
        })?;
    let stats_path = cfg.runtime_dir.join(files::LOG_STATS);
    if let Err(e) = log.keep_stats(&stats_path) {
        diag!("log counters {}: {e}", stats_path.display());
    }
    let socket_path = cfg.runtime_dir.join(files::CONTROL_SOCKET);
    let _ = std::fs::remove_file(&socket_path);
    let listener = pier_proto::socket_path::bind(&socket_path).map_err(|source| {
        StartError::ControlSocket {
            path: socket_path.clone(),
            source,
        }
    })?;
    let created = runtime::create(cfg)?;
    let me = std::process::id() as i32;
    let ident = server::Identity {
        pid: created.pid,
        start_time: proc_stat::start_time(created.pid).unwrap_or(0),
        monitor_pid: me,
        monitor_start_time: proc_stat::start_time(me).unwrap_or(0),
    };
    // A second record of our identity, for a daemon that died before it
    // read the sync message.
    let _ = std::fs::write(
        cfg.runtime_dir.join(files::MONITOR_PID),
        files::monitor_pid_content(ident.monitor_pid, ident.monitor_start_time),
    );
    let server = server::Server::new(
        cfg.clone(),
        ident,
        created,
        log,
        listener,
        socket_path.clone(),
    )
    .map_err(|e| {
        runtime::delete_force(cfg);
        StartError::Setup(e)
    })?;
    let msg = Created {
        pid: ident.pid,
        start_time: ident.start_time,
        monitor_pid: ident.monitor_pid,
        monitor_start_time: ident.monitor_start_time,
    };
    Ok((server, msg))
}
