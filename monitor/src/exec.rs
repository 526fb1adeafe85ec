//! Exec from the running monitor: `runc exec` as our child.
//!
//! Collect mode (ExecSync, probes): output gathered up to 16 MiB (stdout and
//! stderr together), answered as one `ExecResult` when runc is reaped.
//! Stream mode (kubectl exec): output forwarded to the client as attach
//! frames, its stdin frames written to the process, optionally on a pty.
//! Either way the process is killed at its deadline. Serving exec here costs
//! one runc process per exec and no new monitor.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pier_proto::args::MonitorArgs;
use pier_proto::monitor::{Exec, ExecResult, StartFailure};
use pier_proto::{EXEC_OUTPUT_MAX, attach, files};

use crate::control::Conn;
use crate::native::{Init, Native, Outcome, Pty};
use crate::terminal::ConsoleSocket;
use crate::{proc_tree, runtime, sys};

/// How long past an exec's deadline the kill waits for runc's pid file.
const PIDFILE_GRACE: Duration = Duration::from_secs(5);
/// How often it looks in the meantime.
const PIDFILE_RECHECK: Duration = Duration::from_millis(10);
/// How long runc may take to hand over the pty of a tty exec.
const CONSOLE_WAIT: Duration = Duration::from_secs(10);
/// Stdin bytes held for a process that does not read.
pub const STDIN_PENDING_MAX: usize = 1 << 20;

/// Why an exec could not be started; its text is the `error` response.
/// The runtime's own text is kept whole.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("exec: empty argv")]
    EmptyArgv,
    #[error("exec: pipe: {0}")]
    Pipe(#[source] io::Error),
    #[error("exec: console socket {}: {source}", path.display())]
    ConsoleSocket { path: PathBuf, source: io::Error },
    #[error("exec: cannot run runtime {}: {source}", runtime.display())]
    Spawn { runtime: PathBuf, source: io::Error },
    #[error("exec: runtime sent no terminal: {stderr}")]
    NoTerminal { stderr: String },
}

pub struct ExecSession {
    pub id: u64,
    /// Control connection waiting for the result or carrying the stream.
    pub conn: u64,
    pub stream: bool,
    /// `runc exec`, while it runs; none on the native path.
    pub runc_pid: Option<i32>,
    /// A tty exec runs detached (runc insists, with a console socket): runc
    /// exits once the process runs, the process is re-parented to us, and
    /// its own exit is the result.
    detached: bool,
    pub proc_pid: Option<i32>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    pub stdin: Option<File>,
    pub stdin_pending: Vec<u8>,
    pub stdin_close: bool,
    pub pty: Option<File>,
    out: Vec<u8>,
    err: Vec<u8>,
    truncated: bool,
    deadline: Option<Instant>,
    timed_out: bool,
    pidfile: PathBuf,
    /// runc's JSON log: an error line there means it never started the
    /// process.
    runtime_log: PathBuf,
    /// The native path could not start the process: why.
    start_failure: Option<(StartFailure, String)>,
    pub exit_code: Option<i32>,
}

impl ExecSession {
    /// A session with nothing started yet.
    fn new(cfg: &MonitorArgs, id: u64, conn: u64, req: &Exec) -> Self {
        Self {
            id,
            conn,
            stream: req.stream,
            runc_pid: None,
            detached: false,
            proc_pid: None,
            stdout: None,
            stderr: None,
            stdin: None,
            stdin_pending: Vec::new(),
            stdin_close: false,
            pty: None,
            out: Vec::new(),
            err: Vec::new(),
            truncated: false,
            deadline: (req.timeout_ms > 0)
                .then(|| Instant::now() + Duration::from_millis(req.timeout_ms)),
            timed_out: false,
            pidfile: cfg.runtime_dir.join(files::exec_pid(id)),
            runtime_log: cfg.runtime_dir.join(files::exec_runtime_log(id)),
            start_failure: None,
            exit_code: None,
        }
    }

    /// Starts the request's process: natively where the container's
    /// profile allows it and the request does not ask for the runtime,
    /// else with `runc exec`.
    pub fn start(
        cfg: &MonitorArgs,
        native: &mut Native,
        init: Init,
        id: u64,
        conn: u64,
        req: &Exec,
    ) -> Result<Self, ExecError> {
        if req.argv.is_empty() {
            return Err(ExecError::EmptyArgv);
        }
        let tty = req.stream && req.tty;
        if !req.via_runtime {
            let session = if tty {
                Self::start_native_tty(cfg, native, init, id, conn, req)
            } else {
                Self::start_native(cfg, native, init, id, conn, req)?
            };
            if let Some(session) = session {
                return Ok(session);
            }
        }
        let mut session = Self::new(cfg, id, conn, req);
        let pidfile = session.pidfile.clone();
        let runtime_log = session.runtime_log.clone();
        let _ = std::fs::remove_file(&runtime_log);
        let console_path = cfg.runtime_dir.join(files::exec_console_socket(id));
        let console_error = |source| ExecError::ConsoleSocket {
            path: console_path.clone(),
            source,
        };
        let console = if tty {
            Some(ConsoleSocket::bind(&console_path).map_err(console_error)?)
        } else {
            None
        };
        let pipe = || io::pipe().map_err(ExecError::Pipe);
        let (err_r, err_w) = pipe()?;
        let mut cmd = runtime::exec_command(
            cfg,
            &pidfile,
            &runtime_log,
            console.as_ref().map(ConsoleSocket::path),
            &req.argv,
            &req.env,
        );
        cmd.stderr(err_w);
        let (mut stdout, mut stdin) = (None, None);
        if tty {
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        } else {
            let (out_r, out_w) = pipe()?;
            cmd.stdout(out_w);
            stdout = Some(File::from(OwnedFd::from(out_r)));
            if req.stream && req.stdin {
                let (in_r, in_w) = pipe()?;
                cmd.stdin(in_r);
                stdin = Some(File::from(OwnedFd::from(in_w)));
            } else {
                cmd.stdin(Stdio::null());
            }
        }
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            runtime: cfg.runtime.clone(),
            source,
        })?;
        drop(cmd);
        let stderr = File::from(OwnedFd::from(err_r));
        let (mut pty, mut early_exit) = (None, None);
        if let Some(sock) = &console {
            // runc sends the pty before it starts the process; waiting here
            // stalls the loop for milliseconds, while the log pipes buffer.
            let until = Instant::now() + CONSOLE_WAIT;
            let master = loop {
                match sock.try_receive() {
                    Ok(Some(m)) => break File::from(m),
                    Ok(None) => {}
                    Err(e) => return Err(console_error(e)),
                }
                let exited = match child.try_wait() {
                    Ok(Some(st)) => Some(st),
                    Ok(None) => None,
                    Err(_) => Some(std::process::ExitStatus::from_raw(-1 << 8)),
                };
                if let Some(st) = exited {
                    // It may have sent the pty and finished in between.
                    if let Ok(Some(m)) = sock.try_receive() {
                        early_exit =
                            Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
                        break File::from(m);
                    }
                }
                if exited.is_some() || Instant::now() > until {
                    let _ = child.kill();
                    let mut text = String::new();
                    let _ = sys::set_nonblocking(&stderr);
                    let _ = (&stderr).take(64 << 10).read_to_string(&mut text);
                    let stderr = text.trim().to_owned();
                    return Err(ExecError::NoTerminal { stderr });
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            stdin = if req.stdin {
                master.try_clone().ok()
            } else {
                None
            };
            pty = master.try_clone().ok();
            stdout = Some(master);
        }
        for f in [stdout.as_ref(), Some(&stderr), stdin.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = sys::set_nonblocking(f);
        }
        session.runc_pid = Some(child.id() as i32);
        session.detached = tty;
        session.stdout = stdout;
        session.stderr = Some(stderr);
        session.stdin = stdin;
        session.pty = pty;
        // runc was reaped here, not by the event loop.
        if let Some(code) = early_exit {
            session.on_runtime_exit(code);
        }
        Ok(session)
    }

    /// The native path: `None` when this exec goes through the runtime.
    fn start_native(
        cfg: &MonitorArgs,
        native: &mut Native,
        init: Init,
        id: u64,
        conn: u64,
        req: &Exec,
    ) -> Result<Option<Self>, ExecError> {
        let pipe = || io::pipe().map_err(ExecError::Pipe);
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        // A process runc exec starts (without a tty) has pipes on all
        // three fds, its stdin at EOF when there is nothing to send.
        let (in_r, in_w) = pipe()?;
        let (stdin_keep, stdin_fd) = if req.stream && req.stdin {
            (Some(File::from(OwnedFd::from(in_w))), OwnedFd::from(in_r))
        } else {
            drop(in_w);
            (None, OwnedFd::from(in_r))
        };
        let stdio = [stdin_fd.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
        let outcome = native.start(cfg, init, &req.argv, &req.env, stdio, false);
        // Our copies of the process's ends must close, or EOF never comes.
        drop((stdin_fd, out_w, err_w));
        Ok(Self::native(cfg, id, conn, req, outcome, |session| {
            session.stdout = Some(File::from(OwnedFd::from(out_r)));
            session.stderr = Some(File::from(OwnedFd::from(err_r)));
            session.stdin = stdin_keep;
        }))
    }

    /// The native path of a tty exec, on a pty from the container's own
    /// devpts: `None` when it goes through the runtime. As with runc, the
    /// master carries output and stdin (where asked for); there is no
    /// separate stderr.
    fn start_native_tty(
        cfg: &MonitorArgs,
        native: &mut Native,
        init: Init,
        id: u64,
        conn: u64,
        req: &Exec,
    ) -> Option<Self> {
        let Pty { master, slave } = native.open_pty(cfg, init)?;
        let stdio = [slave.as_raw_fd(); 3];
        let outcome = native.start(cfg, init, &req.argv, &req.env, stdio, true);
        // Our copy of the slave must close, or the master never sees the
        // end of the process's output.
        drop(slave);
        Self::native(cfg, id, conn, req, outcome, |session| {
            let master = File::from(master);
            session.stdin = req.stdin.then(|| master.try_clone().ok()).flatten();
            session.pty = master.try_clone().ok();
            session.stdout = Some(master);
        })
    }

    /// The session of a native start: `streams` attaches the monitor's
    /// ends to a started process.
    fn native(
        cfg: &MonitorArgs,
        id: u64,
        conn: u64,
        req: &Exec,
        outcome: Outcome,
        streams: impl FnOnce(&mut Self),
    ) -> Option<Self> {
        let mut session = Self::new(cfg, id, conn, req);
        match outcome {
            Outcome::Runtime => return None,
            Outcome::Started { pid } => {
                session.detached = true;
                session.proc_pid = Some(pid);
                streams(&mut session);
                for f in [
                    session.stdout.as_ref(),
                    session.stderr.as_ref(),
                    session.stdin.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    let _ = sys::set_nonblocking(f);
                }
            }
            Outcome::Failed { kind, text } => {
                session.start_failure = Some((kind, text));
                session.exit_code = Some(RUNC_EXEC_FAILED);
            }
        }
        Some(session)
    }

    /// Read what is available on one of the pipes: kept (collect mode) or
    /// forwarded to `conn` (stream mode).
    pub fn on_readable(&mut self, stderr: bool, buf: &mut [u8], conn: Option<&mut Conn>) {
        let total = self.out.len() + self.err.len();
        let (pipe, sink, kind) = if stderr {
            (&mut self.stderr, &mut self.err, attach::STDERR)
        } else {
            (&mut self.stdout, &mut self.out, attach::STDOUT)
        };
        let Some(f) = pipe.as_mut() else { return };
        let mut room = EXEC_OUTPUT_MAX.saturating_sub(total);
        let mut conn = conn;
        loop {
            match f.read(buf) {
                Ok(0) => {
                    *pipe = None;
                    return;
                }
                Ok(n) if self.stream => {
                    if let Some(c) = conn.as_deref_mut() {
                        c.queue_frame(kind, &buf[..n]);
                    }
                }
                Ok(n) => {
                    let take = n.min(room);
                    sink.extend_from_slice(&buf[..take]);
                    room -= take;
                    // Keep draining past the cap so the process never blocks.
                    self.truncated |= take < n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EIO on a pty master: the process side is closed.
                    if e.kind() != io::ErrorKind::WouldBlock {
                        *pipe = None;
                    }
                    return;
                }
            }
        }
    }

    /// Write pending stdin without blocking.
    pub fn feed_stdin(&mut self) {
        // A process that closed its stdin is its own business: no diagnostic.
        let close = self.stdin_close && self.pty.is_none();
        let _ = sys::feed_stdin(&mut self.stdin, &mut self.stdin_pending, close);
    }

    /// The streaming client went away: close the process's side of the
    /// stream and kill it. Nobody can see its output or its exit code any
    /// more, and a process that ignores stdin EOF and SIGHUP (a `sleep`, a
    /// server) would otherwise run on in the container for good.
    pub fn hang_up(&mut self) {
        if self.stdout.is_some() || self.stdin.is_some() || self.pty.is_some() {
            self.stdin = None;
            self.stdin_pending = Vec::new();
            self.stdout = None;
            self.stderr = None;
            self.pty = None;
            // As at a deadline: kill once runc has written the pid file, as
            // killing runc before then would orphan the process.
            let now = Instant::now();
            self.deadline = Some(self.deadline.map_or(now, |d| d.min(now)));
            self.check_deadline(now);
        }
    }

    /// runc has been reaped with `code`.
    pub fn on_runtime_exit(&mut self, code: i32) {
        if !self.detached || code != 0 {
            self.exit_code = Some(code);
            return;
        }
        match std::fs::read_to_string(&self.pidfile).map(|s| s.trim().parse::<i32>()) {
            Ok(Ok(pid)) => self.proc_pid = Some(pid),
            _ => self.exit_code = Some(-1),
        }
    }

    /// Time until the deadline, for the poll timeout; past it, while the
    /// kill waits for runc's pid file, a short recheck interval.
    pub fn until_deadline(&self, now: Instant) -> Option<Duration> {
        let left = self.deadline?.saturating_duration_since(now);
        (!self.timed_out).then_some(if left.is_zero() {
            PIDFILE_RECHECK
        } else {
            left
        })
    }

    /// Kill the exec'd process (and runc) once the deadline has passed.
    /// On a loaded node runc may not have started the process yet when the
    /// deadline comes: killing runc then would orphan the process inside the
    /// container, out of reach. So wait for runc's pid file (bounded).
    pub fn check_deadline(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if self.timed_out || self.exit_code.is_some() || now < deadline {
            return;
        }
        if self.proc_pid.is_none() && !self.pidfile.exists() && now < deadline + PIDFILE_GRACE {
            return;
        }
        self.timed_out = true;
        self.kill();
    }

    /// SIGKILL the exec'd process, everything it started, and runc while it
    /// runs. Before a detached runc has handed the process over, the
    /// process is runc's descendant; after, it is our own child.
    pub fn kill(&self) {
        let root = match (self.detached, self.proc_pid) {
            (true, Some(pid)) => Some(pid),
            _ => self.runc_pid,
        };
        if let Some(root) = root.filter(|&p| p > 0) {
            proc_tree::kill_tree(root);
        }
    }

    /// Done once runc has been reaped; whatever is still in the pipes is
    /// read in `finish` (a background child may hold them open forever).
    pub fn is_done(&self) -> bool {
        self.exit_code.is_some()
    }

    /// Drain, clean up, and the result (collect mode) or the EXIT frame
    /// (stream mode, queued on `conn`).
    pub fn finish(mut self, buf: &mut [u8], mut conn: Option<&mut Conn>) -> ExecResult {
        self.on_readable(false, buf, conn.as_deref_mut());
        self.on_readable(true, buf, conn.as_deref_mut());
        let _ = std::fs::remove_file(&self.pidfile);
        let code = self.exit_code.unwrap_or(-1);
        let failed_start = self.start_failure.take().or_else(|| {
            (self.runc_pid.is_some() && !self.timed_out && code == RUNC_EXEC_FAILED)
                .then(|| self.runtime_start_error())
                .flatten()
        });
        let _ = std::fs::remove_file(&self.runtime_log);
        if let (true, Some(c)) = (self.stream, conn) {
            // As runc would have: the cause on stderr, then exit 255.
            if let (Some((_, text)), None) = (&failed_start, self.runc_pid) {
                c.queue_frame(attach::STDERR, format!("{text}\n").as_bytes());
            }
            c.queue_frame(attach::EXIT, &code.to_be_bytes());
            c.closing = true;
        }
        let (start_failure, start_error) = failed_start.unwrap_or_default();
        ExecResult {
            exit_code: code,
            stdout: std::mem::take(&mut self.out),
            stderr: std::mem::take(&mut self.err),
            timed_out: self.timed_out,
            truncated: self.truncated,
            start_failure: start_failure as i32,
            start_error,
        }
    }

    /// Why runc could not start the process, if its log says it failed:
    /// its message (the last line it wrote to stderr; the process never
    /// ran, so stderr is runc's alone) and what kind of failure it was.
    fn runtime_start_error(&self) -> Option<(StartFailure, String)> {
        let log = std::fs::read_to_string(&self.runtime_log).ok()?;
        if !log.lines().any(|l| l.contains(r#""level":"error""#)) {
            return None;
        }
        let stderr = String::from_utf8_lossy(&self.err);
        let msg = stderr.trim().lines().last().unwrap_or("").to_owned();
        Some((classify_start_error(&msg), msg))
    }
}

/// The exit code `runc exec` uses when it could not start the process.
const RUNC_EXEC_FAILED: i32 = 255;

/// The kind of a start failure, from runc's message: a missing working
/// directory is the container's state (precondition), a missing executable
/// is not found, anything else (permission, a bad user) a precondition.
fn classify_start_error(msg: &str) -> StartFailure {
    if msg.contains("chdir to cwd") {
        StartFailure::Precondition
    } else if msg.contains("no such file or directory") || msg.contains("executable file not found")
    {
        StartFailure::NotFound
    } else {
        StartFailure::Precondition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_start_errors_are_classified() {
        let missing = r#"exec failed: unable to start container process: exec: "/nope": stat /nope: no such file or directory"#;
        assert_eq!(classify_start_error(missing), StartFailure::NotFound);
        let path = r#"exec failed: unable to start container process: exec: "nope": executable file not found in $PATH"#;
        assert_eq!(classify_start_error(path), StartFailure::NotFound);
        let cwd = r#"exec failed: unable to start container process: chdir to cwd ("/wd") set in config.json failed: no such file or directory"#;
        assert_eq!(classify_start_error(cwd), StartFailure::Precondition);
        let perm =
            r#"exec failed: unable to start container process: exec: "/etc": permission denied"#;
        assert_eq!(classify_start_error(perm), StartFailure::Precondition);
    }
}
