//! pier-monitor: one per container. It owns the container's stdio or pty,
//! writes the CRI log, serves attach/resize/reopen/exec/status on its
//! control socket, reaps the container's init and leaves the exit file.
//! See docs/monitor.md for the contract with the daemon.

#![deny(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::process::ExitCode;
use std::sync::OnceLock;

use pier_proto::monitor::{Created, SyncResult, sync_result::Result as SyncKind};
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

mod args;
mod child_reaper;
mod control;
mod cri_log;
mod daemonize;
mod exec;
mod oom;
mod runtime;
mod server;
mod sys;
mod terminal;
mod timestamp;

#[allow(clippy::print_stdout, reason = "--help and --version answer on stdout")]
fn main() -> ExitCode {
    sys::tune_malloc();
    let cfg = match args::parse(std::env::args_os()) {
        Ok(args::Command::Run(cfg)) => cfg,
        Ok(args::Command::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(args::Command::Version) => {
            println!("pier-monitor {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            diag!("{e}");
            return ExitCode::from(2);
        }
    };
    let _ = DIAG_PREFIX.set(format!("pier-monitor[{}]", cfg.id));
    ExitCode::from(run(*cfg))
}

fn run(cfg: args::Config) -> u8 {
    if let Some(fd) = cfg.start_gate_fd
        && let Err(e) = daemonize::wait_gate(fd)
    {
        diag!("{e}");
        return 1;
    }
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
    let mut report = |result: SyncKind| {
        // Taking the file closes it after this one message.
        if let Some(mut f) = sync.take() {
            let msg = SyncResult {
                result: Some(result),
            };
            if let Err(e) = f.write_all(&msg.encode_length_delimited_to_vec()) {
                diag!("sync fd: {e}");
            }
        }
    };
    if let Err(e) = daemonize::become_monitor() {
        diag!("{e}");
        report(SyncKind::Error(e.to_string()));
        return 1;
    }
    match start(&cfg) {
        Ok((server, created)) => {
            report(SyncKind::Created(created));
            server.run()
        }
        Err(e) => {
            diag!("{e}");
            report(SyncKind::Error(e));
            // Reap whatever the runtime left, so no zombie remains.
            child_reaper::reap_all(|_, _| {});
            1
        }
    }
}

/// Everything up to a created container and a listening control socket.
fn start(cfg: &args::Config) -> Result<(server::Server, Created), String> {
    if !cfg.bundle.join("config.json").is_file() {
        return Err(format!("bundle {}: no config.json", cfg.bundle.display()));
    }
    std::fs::create_dir_all(&cfg.runtime_dir)
        .map_err(|e| format!("runtime dir {}: {e}", cfg.runtime_dir.display()))?;
    for dir in &cfg.exit_dirs {
        std::fs::create_dir_all(dir).map_err(|e| format!("exit dir {}: {e}", dir.display()))?;
    }
    let log = cri_log::CriLog::open(&cfg.log_path, cfg.max_line, cfg.max_size)
        .map_err(|e| format!("log file {}: {e}", cfg.log_path.display()))?;
    let socket_path = cfg.runtime_dir.join(pier_proto::CONTROL_SOCKET);
    let _ = std::fs::remove_file(&socket_path);
    let listener = pier_proto::socket_path::bind(&socket_path)
        .map_err(|e| format!("control socket {}: {e}", socket_path.display()))?;
    let created = runtime::create(cfg)?;
    let me = std::process::id() as i32;
    let ident = server::Identity {
        pid: created.pid,
        start_time: sys::process_start_time(created.pid).unwrap_or(0),
        monitor_pid: me,
        monitor_start_time: sys::process_start_time(me).unwrap_or(0),
    };
    // A second record of our identity, for a daemon that died before it
    // read the sync message.
    let _ = std::fs::write(
        cfg.runtime_dir.join("monitor.pid"),
        format!("{} {}\n", ident.monitor_pid, ident.monitor_start_time),
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
        format!("monitor setup: {e}")
    })?;
    let msg = Created {
        pid: ident.pid,
        start_time: ident.start_time,
        monitor_pid: ident.monitor_pid,
        monitor_start_time: ident.monitor_start_time,
    };
    Ok((server, msg))
}
