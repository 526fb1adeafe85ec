//! Exec from the running monitor: `runc exec` as our child with pipes, its
//! output collected up to 16 MiB (stdout and stderr together), killed at
//! its deadline. Serving kubelet's exec probes here costs one runc process
//! per probe and no new monitor.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pier_proto::EXEC_OUTPUT_MAX;
use pier_proto::monitor::{Exec, ExecResult};

use crate::args::Config;
use crate::{runtime, sys};

pub struct ExecSession {
    /// Control connection waiting for the result.
    pub conn: u64,
    pub runc_pid: i32,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    out: Vec<u8>,
    err: Vec<u8>,
    truncated: bool,
    deadline: Option<Instant>,
    timed_out: bool,
    pidfile: PathBuf,
    pub exit_code: Option<i32>,
}

impl ExecSession {
    pub fn start(cfg: &Config, seq: u64, conn: u64, req: &Exec) -> Result<Self, String> {
        if req.argv.is_empty() {
            return Err("exec: empty argv".into());
        }
        let pidfile = cfg.runtime_dir.join(format!("exec-{seq}.pid"));
        let (out_r, out_w) = io::pipe().map_err(|e| format!("exec: pipe: {e}"))?;
        let (err_r, err_w) = io::pipe().map_err(|e| format!("exec: pipe: {e}"))?;
        let mut cmd = runtime::exec_command(cfg, &pidfile, &req.argv, &req.env);
        cmd.stdin(Stdio::null()).stdout(out_w).stderr(err_w);
        let child = cmd
            .spawn()
            .map_err(|e| format!("exec: cannot run runtime: {e}"))?;
        drop(cmd);
        let stdout = File::from(OwnedFd::from(out_r));
        let stderr = File::from(OwnedFd::from(err_r));
        let _ = sys::set_nonblocking(&stdout);
        let _ = sys::set_nonblocking(&stderr);
        let deadline =
            (req.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(req.timeout_ms));
        Ok(Self {
            conn,
            runc_pid: child.id() as i32,
            stdout: Some(stdout),
            stderr: Some(stderr),
            out: Vec::new(),
            err: Vec::new(),
            truncated: false,
            deadline,
            timed_out: false,
            pidfile,
            exit_code: None,
        })
    }

    /// Read what is available on one of the pipes.
    pub fn on_readable(&mut self, stderr: bool, buf: &mut [u8]) {
        let total = self.out.len() + self.err.len();
        let (pipe, sink) = if stderr {
            (&mut self.stderr, &mut self.err)
        } else {
            (&mut self.stdout, &mut self.out)
        };
        let Some(f) = pipe.as_mut() else { return };
        let mut room = EXEC_OUTPUT_MAX.saturating_sub(total);
        loop {
            match f.read(buf) {
                Ok(0) => {
                    *pipe = None;
                    return;
                }
                Ok(n) => {
                    let take = n.min(room);
                    sink.extend_from_slice(&buf[..take]);
                    room -= take;
                    // Keep draining past the cap so the process never blocks.
                    self.truncated |= take < n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Milliseconds until the deadline, for the poll timeout.
    pub fn until_deadline(&self, now: Instant) -> Option<Duration> {
        (!self.timed_out).then_some(self.deadline?.saturating_duration_since(now))
    }

    /// Kill the exec'd process (and runc) once the deadline has passed.
    pub fn check_deadline(&mut self, now: Instant) {
        if self.timed_out || self.exit_code.is_some() || self.deadline.is_none_or(|d| now < d) {
            return;
        }
        self.timed_out = true;
        self.kill();
    }

    pub fn kill(&self) {
        if let Ok(Ok(pid)) = std::fs::read_to_string(&self.pidfile).map(|s| s.trim().parse::<i32>())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(self.runc_pid), Signal::SIGKILL);
    }

    /// Done once runc has been reaped; whatever is still in the pipes is
    /// read in `finish` (a background child may hold them open forever).
    pub fn is_done(&self) -> bool {
        self.exit_code.is_some()
    }

    pub fn finish(mut self, buf: &mut [u8]) -> ExecResult {
        self.on_readable(false, buf);
        self.on_readable(true, buf);
        let _ = std::fs::remove_file(&self.pidfile);
        ExecResult {
            exit_code: self.exit_code.unwrap_or(-1),
            stdout: std::mem::take(&mut self.out),
            stderr: std::mem::take(&mut self.err),
            timed_out: self.timed_out,
            truncated: self.truncated,
        }
    }
}
