//! Invoking the OCI runtime (runc or compatible): `create` with the
//! container's stdio or a console socket, `exec`, and `delete --force` to
//! leave nothing behind when create fails.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::args::Config;
use crate::sys;
use crate::terminal::ConsoleSocket;

/// A runtime that hangs in create must not hang the monitor (and the
/// daemon waiting on the sync fd) forever; CRI-O's default is the same.
const CREATE_TIMEOUT: Duration = Duration::from_secs(240);

/// What `runc create` left us: the container's init and its stdio.
pub struct Created {
    pub pid: i32,
    /// Stdout pipe, or the pty master in terminal mode.
    pub stdout: File,
    /// Stderr pipe; none in terminal mode (the pty merges both).
    pub stderr: Option<File>,
    /// Write end of the stdin pipe, or a dup of the pty master.
    pub stdin: Option<File>,
    /// The pty master, for resizes.
    pub pty: Option<File>,
}

/// The container pid file runc writes.
pub fn pid_file(cfg: &Config) -> PathBuf {
    cfg.runtime_dir.join("container.pid")
}

fn runtime(cfg: &Config) -> Command {
    let mut cmd = Command::new(&cfg.runtime);
    cmd.args(&cfg.runtime_args);
    cmd
}

/// Run `runc create`. On failure the error is the runtime's own text.
pub fn create(cfg: &Config) -> Result<Created, String> {
    let pidfile = pid_file(cfg);
    let _ = std::fs::remove_file(&pidfile);
    let mut cmd = runtime(cfg);
    cmd.arg("create")
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--pid-file")
        .arg(&pidfile);
    let io = |what: &str, e: io::Error| format!("{what}: {e}");
    // runc's own error text arrives on this pipe in both modes.
    let (err_r, err_w) = io::pipe().map_err(|e| io("pipe", e))?;
    let (mut stdin_keep, mut stdout_keep, mut console) = (None, None, None);
    if cfg.terminal {
        let sock = ConsoleSocket::bind(&cfg.runtime_dir.join("console.sock"))
            .map_err(|e| io("console socket", e))?;
        cmd.arg("--console-socket").arg(sock.path());
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        console = Some(sock);
    } else {
        let (out_r, out_w) = io::pipe().map_err(|e| io("pipe", e))?;
        sys::grow_pipe(&out_r, 1 << 20);
        sys::grow_pipe(&err_r, 1 << 20);
        cmd.stdout(out_w);
        stdout_keep = Some(File::from(OwnedFd::from(out_r)));
        if cfg.stdin {
            let (in_r, in_w) = io::pipe().map_err(|e| io("pipe", e))?;
            cmd.stdin(in_r);
            stdin_keep = Some(File::from(OwnedFd::from(in_w)));
        } else {
            cmd.stdin(Stdio::null());
        }
    }
    cmd.stderr(err_w);
    cmd.arg(&cfg.id);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run runtime {}: {e}", cfg.runtime.display()))?;
    // Our copies of the child's ends must close, or EOF never comes.
    drop(cmd);
    let mut err_r = File::from(OwnedFd::from(err_r));
    let _ = sys::set_nonblocking(&err_r);

    let mut master = None;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(sock) = &console
            && master.is_none()
        {
            match sock.try_receive() {
                Ok(m) => master = m,
                Err(e) => crate::diag!("console socket: {e}"),
            }
        }
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if started.elapsed() > CREATE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                delete_force(cfg);
                return Err(format!("runtime create timed out after {CREATE_TIMEOUT:?}"));
            }
            Ok(None) => {
                std::thread::sleep(Duration::from_millis(if console.is_some() { 5 } else { 2 }))
            }
            Err(e) => return Err(format!("waiting for runtime: {e}")),
        }
    };
    if let (Some(sock), None) = (&console, &master) {
        master = sock.try_receive().ok().flatten();
    }
    let mut errtext = Vec::new();
    let _ = err_r.by_ref().take(64 << 10).read_to_end(&mut errtext);
    if !status.success() {
        let text = String::from_utf8_lossy(&errtext).trim().to_owned();
        delete_force(cfg);
        return Err(format!("runtime create failed ({status}): {text}"));
    }
    if !errtext.is_empty() {
        crate::diag!(
            "runtime create: {}",
            String::from_utf8_lossy(&errtext).trim()
        );
    }
    let pid = match std::fs::read_to_string(&pidfile).map(|s| s.trim().parse::<i32>()) {
        Ok(Ok(pid)) if pid > 0 => pid,
        other => {
            delete_force(cfg);
            return Err(format!("runtime pid file {}: {other:?}", pidfile.display()));
        }
    };
    if cfg.terminal {
        let Some(master) = master else {
            delete_force(cfg);
            return Err("runtime created a terminal container but sent no pty master".into());
        };
        let master = File::from(master);
        let stdin = if cfg.stdin {
            master.try_clone().ok()
        } else {
            None
        };
        let pty = master.try_clone().map_err(|e| io("dup pty", e))?;
        return Ok(Created {
            pid,
            stdout: master,
            stderr: None,
            stdin,
            pty: Some(pty),
        });
    }
    let stdout = stdout_keep.ok_or("stdout pipe missing")?;
    Ok(Created {
        pid,
        stdout,
        stderr: Some(err_r),
        stdin: stdin_keep,
        pty: None,
    })
}

/// `runc delete --force`: removes a half-created container and kills any
/// process it has, so a failed create leaves nothing behind.
pub fn delete_force(cfg: &Config) {
    let _ = runtime(cfg)
        .args(["delete", "--force"])
        .arg(&cfg.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The `runc exec` command for an exec request; stdio is the caller's.
pub fn exec_command(
    cfg: &Config,
    pidfile: &Path,
    console: Option<&Path>,
    argv: &[String],
    env: &[String],
) -> Command {
    let mut cmd = runtime(cfg);
    cmd.arg("exec").arg("--pid-file").arg(pidfile);
    if let Some(sock) = console {
        // runc accepts a console socket only when detached.
        cmd.arg("--tty")
            .arg("--detach")
            .arg("--console-socket")
            .arg(sock);
    }
    for e in env {
        cmd.arg("--env").arg(e);
    }
    cmd.arg(&cfg.id).args(argv.iter().map(OsStr::new));
    cmd
}
