//! Invoking the OCI runtime (runc or compatible): `create` with the
//! container's stdio or a console socket, `exec`, and `delete --force` to
//! leave nothing behind when create fails.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use pier_proto::args::MonitorArgs;
use pier_proto::files;

use crate::terminal::ConsoleSocket;
use crate::{pipe_size, sys};

/// A runtime that hangs in create must not hang the monitor (and the
/// daemon waiting on the sync fd) forever; CRI-O's default is the same.
const CREATE_TIMEOUT: Duration = Duration::from_secs(240);

/// Why `runc create` did not give us a container. The runtime's own error
/// text is kept whole: the daemon shows it to the user.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("pipe: {0}")]
    Pipe(#[source] io::Error),
    #[error("console socket {}: {source}", path.display())]
    ConsoleSocket { path: PathBuf, source: io::Error },
    #[error("cannot run runtime {}: {source}", runtime.display())]
    Spawn { runtime: PathBuf, source: io::Error },
    #[error("waiting for runtime: {0}")]
    Wait(#[source] io::Error),
    #[error("runtime create timed out after {0:?}")]
    Timeout(Duration),
    #[error("runtime create failed ({status}): {stderr}")]
    Failed { status: ExitStatus, stderr: String },
    #[error("runtime pid file {}: {source}", path.display())]
    PidFile { path: PathBuf, source: io::Error },
    #[error("runtime pid file {}: no pid in {content:?}", path.display())]
    NoPid { path: PathBuf, content: String },
    #[error("runtime created a terminal container but sent no pty master")]
    NoPtyMaster,
    #[error("dup pty: {0}")]
    DupPty(#[source] io::Error),
}

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
pub fn pid_file(cfg: &MonitorArgs) -> PathBuf {
    cfg.runtime_dir.join(files::CONTAINER_PID)
}

fn runtime(cfg: &MonitorArgs) -> Command {
    let mut cmd = Command::new(&cfg.runtime);
    cmd.args(&cfg.runtime_args);
    cmd
}

/// Run `runc create`. On failure the error is the runtime's own text.
pub fn create(cfg: &MonitorArgs) -> Result<Created, CreateError> {
    let pidfile = pid_file(cfg);
    let _ = std::fs::remove_file(&pidfile);
    let mut cmd = runtime(cfg);
    cmd.arg("create")
        .arg("--bundle")
        .arg(&cfg.bundle)
        .arg("--pid-file")
        .arg(&pidfile);
    // runc's own error text arrives on this pipe in both modes.
    let (err_r, err_w) = io::pipe().map_err(CreateError::Pipe)?;
    let (mut stdin_keep, mut stdout_keep, mut console) = (None, None, None);
    if cfg.terminal {
        let path = cfg.runtime_dir.join(files::CONSOLE_SOCKET);
        let sock = ConsoleSocket::bind(&path)
            .map_err(|source| CreateError::ConsoleSocket { path, source })?;
        cmd.arg("--console-socket").arg(sock.path());
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        console = Some(sock);
    } else {
        let (out_r, out_w) = io::pipe().map_err(CreateError::Pipe)?;
        grow_pipe("stdout", &out_r);
        grow_pipe("stderr", &err_r);
        cmd.stdout(out_w);
        stdout_keep = Some(File::from(OwnedFd::from(out_r)));
        if cfg.stdin {
            let (in_r, in_w) = io::pipe().map_err(CreateError::Pipe)?;
            cmd.stdin(in_r);
            stdin_keep = Some(File::from(OwnedFd::from(in_w)));
        } else {
            cmd.stdin(Stdio::null());
        }
    }
    cmd.stderr(err_w);
    cmd.arg(&cfg.id);
    let mut child = cmd.spawn().map_err(|source| CreateError::Spawn {
        runtime: cfg.runtime.clone(),
        source,
    })?;
    // Our copies of the child's ends must close, or EOF never comes.
    drop(cmd);
    let mut err_r = File::from(OwnedFd::from(err_r));
    let _ = sys::set_nonblocking(&err_r);

    // Wakes the wait below the moment runc exits: polling its status
    // every few milliseconds cost create a millisecond on average.
    let exited = sys::pidfd_open(child.id() as i32).ok();
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
                return Err(CreateError::Timeout(CREATE_TIMEOUT));
            }
            // The console socket is polled for the pty master meanwhile.
            Ok(None) => match &exited {
                Some(pidfd) => {
                    let mut fds = [libc::pollfd {
                        fd: pidfd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    }];
                    let _ = sys::poll(&mut fds, if console.is_some() { 5 } else { 100 });
                }
                None => {
                    std::thread::sleep(Duration::from_millis(if console.is_some() { 5 } else { 2 }))
                }
            },
            Err(e) => return Err(CreateError::Wait(e)),
        }
    };
    if let (Some(sock), None) = (&console, &master) {
        master = sock.try_receive().ok().flatten();
    }
    let mut errtext = Vec::new();
    let _ = err_r.by_ref().take(64 << 10).read_to_end(&mut errtext);
    if !status.success() {
        let stderr = String::from_utf8_lossy(&errtext).trim().to_owned();
        delete_force(cfg);
        return Err(CreateError::Failed { status, stderr });
    }
    if !errtext.is_empty() {
        crate::diag!(
            "runtime create: {}",
            String::from_utf8_lossy(&errtext).trim()
        );
    }
    let pid = match read_pid_file(&pidfile) {
        Ok(pid) => pid,
        Err(e) => {
            delete_force(cfg);
            return Err(e);
        }
    };
    // Without a terminal the container's stdout is our pipe; with one, the
    // pty master runc sent.
    let Some(stdout) = stdout_keep else {
        let Some(master) = master else {
            delete_force(cfg);
            return Err(CreateError::NoPtyMaster);
        };
        let master = File::from(master);
        let stdin = if cfg.stdin {
            master.try_clone().ok()
        } else {
            None
        };
        let pty = master.try_clone().map_err(CreateError::DupPty)?;
        return Ok(Created {
            pid,
            stdout: master,
            stderr: None,
            stdin,
            pty: Some(pty),
        });
    };
    Ok(Created {
        pid,
        stdout,
        stderr: Some(err_r),
        stdin: stdin_keep,
        pty: None,
    })
}

/// Grow one of the container's output pipes; the default size works, only
/// slower, so a refusal is reported and the create goes on.
fn grow_pipe(stream: &str, fd: impl AsFd) {
    match pipe_size::grow(fd, pipe_size::WANT) {
        Ok(n) if n >= pipe_size::WANT => {}
        Ok(n) => crate::diag!(
            "container {stream} pipe is {} KiB, not {} KiB: fs.pipe-max-size or the \
             user's pipe limit (fs.pipe-user-pages-soft) holds it back",
            n >> 10,
            pipe_size::WANT >> 10
        ),
        Err(e) => crate::diag!("container {stream} pipe: cannot grow it: {e}"),
    }
}

/// The container's init pid, as the runtime wrote it.
fn read_pid_file(path: &Path) -> Result<i32, CreateError> {
    let content = std::fs::read_to_string(path).map_err(|source| CreateError::PidFile {
        path: path.to_owned(),
        source,
    })?;
    match content.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(CreateError::NoPid {
            path: path.to_owned(),
            content,
        }),
    }
}

/// `runc delete --force`: removes a half-created container and kills any
/// process it has, so a failed create leaves nothing behind.
pub fn delete_force(cfg: &MonitorArgs) {
    let _ = runtime(cfg)
        .args(["delete", "--force"])
        .arg(&cfg.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The `runc exec` command for an exec request; stdio is the caller's.
/// runc's own errors go to `log` as JSON lines as well as to stderr: the
/// log tells a failure to start the process (runc's error) from the
/// process's own exit code, which the shared stderr pipe cannot.
pub fn exec_command(
    cfg: &MonitorArgs,
    pidfile: &Path,
    log: &Path,
    console: Option<&Path>,
    argv: &[String],
    env: &[String],
) -> Command {
    let mut cmd = runtime(cfg);
    cmd.arg("--log").arg(log).args(["--log-format", "json"]);
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
