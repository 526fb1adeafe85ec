//! Names of the files the monitor keeps, so the daemon, the monitor and the
//! tests never spell them out apart. All but [`EXIT`] and [`EXEC_PROFILE`]
//! live in the monitor's runtime dir (`--runtime-dir`); [`EXIT`] is written
//! into every exit dir, [`EXEC_PROFILE`] into the bundle.

/// The control socket.
pub const CONTROL_SOCKET: &str = "monitor.sock";

/// The monitor's stderr, as the daemon opens it for the monitor.
pub const MONITOR_LOG: &str = "monitor.log";

/// `<monitor pid> <monitor start time>\n`, for a daemon that died before it
/// read the sync message.
pub const MONITOR_PID: &str = "monitor.pid";

/// The container's init pid, written by the runtime (`--pid-file`).
pub const CONTAINER_PID: &str = "container.pid";

/// The console socket the runtime sends a terminal container's pty master
/// over; there only while the container is created.
pub const CONSOLE_SOCKET: &str = "console.sock";

/// The log counters ([`crate::log_stats`]), for the daemon's metrics.
pub const LOG_STATS: &str = "log-stats";

/// The exec profile ([`crate::monitor::ExecProfile`]), in the bundle dir
/// beside `config.json`: written by the daemon, read by the monitor.
pub const EXEC_PROFILE: &str = "exec-profile";

/// The exit file ([`crate::exit_file`]), in every exit dir.
pub const EXIT: &str = "exit";

/// The temp file the exit file is written as before its rename.
pub const EXIT_TEMP: &str = ".exit.tmp";

/// The pid file the runtime writes for exec `exec_id`, while it runs.
pub fn exec_pid(exec_id: u64) -> String {
    format!("exec-{exec_id}.pid")
}

/// The runtime's JSON log for exec `exec_id`, while it runs: where runc
/// says why it could not start the process.
pub fn exec_runtime_log(exec_id: u64) -> String {
    format!("exec-{exec_id}.log")
}

/// The console socket of tty exec `exec_id`, while it runs.
pub fn exec_console_socket(exec_id: u64) -> String {
    format!("exec-{exec_id}.sock")
}

/// The content of [`MONITOR_PID`].
pub fn monitor_pid_content(pid: i32, start_time: u64) -> String {
    format!("{pid} {start_time}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_files_are_numbered() {
        assert_eq!(exec_pid(7), "exec-7.pid");
        assert_eq!(exec_console_socket(7), "exec-7.sock");
        assert_eq!(exec_runtime_log(7), "exec-7.log");
        assert_eq!(monitor_pid_content(12, 345), "12 345\n");
    }
}
