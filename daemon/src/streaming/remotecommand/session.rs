//! One exec or attach session against the container's monitor, whatever
//! protocol the client speaks: the protocol side hands in channels, this
//! side drives the monitor's blocking attach framing on two dedicated
//! threads (one reads output, one writes stdin) and reports how it ended.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use pier_proto::attach;
use pier_proto::client::Client;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::container::{self, ContainerRuntime, RUNNING};
use crate::daemon::Daemon;
use crate::streaming::tokens::Pending;

/// A terminal size as the resize stream carries it (JSON, Go field names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's side of a session, as channels.
pub struct Io {
    /// Ends (`None`) when the client closes its stdin.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Cancelled when the client has gone away.
    pub gone: CancellationToken,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The exec'd process exited with this code.
    Exited(i32),
    /// The attached container exited.
    Detached,
    /// It could not run, or the monitor went away mid-way.
    Failed(String),
    /// The client went away first: the exec'd process was killed, an
    /// attach just detached.
    ClientGone,
}

/// What an exec or attach needs from the stored request.
pub struct Target {
    pub container_id: String,
    pub exec: Option<Vec<String>>,
    pub tty: bool,
    pub stdin: bool,
}

impl Target {
    pub fn of(pending: &Pending) -> Option<Self> {
        match pending {
            Pending::Exec(r) => Some(Self {
                container_id: r.container_id.clone(),
                exec: Some(r.cmd.clone()),
                tty: r.tty,
                stdin: r.stdin,
            }),
            Pending::Attach(r) => Some(Self {
                container_id: r.container_id.clone(),
                exec: None,
                tty: r.tty,
                stdin: r.stdin,
            }),
            Pending::PortForward(_) => None,
        }
    }
}

enum StdinMsg {
    Data(Bytes),
    Close,
}

/// Runs the session to its end.
pub async fn run(daemon: &Daemon, target: Target, io: Io) -> Outcome {
    match run_inner(daemon, target, io).await {
        Ok(outcome) => outcome,
        Err(message) => Outcome::Failed(message),
    }
}

async fn run_inner(daemon: &Daemon, target: Target, mut io: Io) -> Result<Outcome, String> {
    let record = daemon
        .find_container(&target.container_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("container {} not found", target.container_id))?;
    if record.state != RUNNING {
        return Err(format!("container {} is not running", record.id));
    }
    let config = container::config_of(&record);
    let socket = ContainerRuntime::from_record(&record).control_socket();
    let is_exec = target.exec.is_some();
    // Attach: stdin exists only if the container was created with it, and
    // closing it is the container's business only with stdinOnce.
    let (want_stdin, close_on_eof) = match is_exec {
        true => (target.stdin, true),
        false => (target.stdin && config.stdin, config.stdin_once),
    };
    let (stdout_wanted, stderr_wanted) = (io.stdout.is_some(), io.stderr.is_some());
    let connect = {
        let socket = socket.clone();
        let exec = target.exec.clone();
        let tty = target.tty;
        move || -> Result<(u64, UnixStream), String> {
            let client = Client::connect(&socket).map_err(|e| e.to_string())?;
            match exec {
                Some(cmd) => client
                    .exec_stream(cmd, Vec::new(), tty, want_stdin, Duration::ZERO)
                    .map_err(|e| format!("exec in container: {e}")),
                None => client
                    .attach(want_stdin, stdout_wanted, stderr_wanted)
                    .map(|s| (0, s))
                    .map_err(|e| format!("attach to container: {e}")),
            }
        }
    };
    let (exec_id, stream) = tokio::task::spawn_blocking(connect)
        .await
        .map_err(|e| e.to_string())??;
    tracing::debug!(container_id = %record.id, exec_id, "streaming session started");

    let control = stream.try_clone().map_err(|e| e.to_string())?;
    let output = stream.try_clone().map_err(|e| e.to_string())?;
    let (done_tx, mut done) = oneshot::channel();
    let (stdout, stderr) = (io.stdout.take(), io.stderr.take());
    spawn_thread("stream-out", move || {
        let end = pump_output(output, stdout, stderr);
        let _ = done_tx.send(end);
    })?;
    let (stdin_tx, stdin_rx) = mpsc::channel::<StdinMsg>(4);
    if want_stdin {
        spawn_thread("stream-in", move || pump_stdin(stream, stdin_rx))?;
    }
    let mut stdin = io.stdin.take().filter(|_| want_stdin);
    let mut resize = io.resize.take().filter(|_| target.tty);
    let outcome = loop {
        tokio::select! {
            end = &mut done => break match end {
                Ok(Ok(Some(code))) if is_exec => Outcome::Exited(code),
                Ok(Ok(_)) if !is_exec => Outcome::Detached,
                Ok(Ok(_)) => Outcome::Failed("the monitor closed the exec stream without an exit code".into()),
                Ok(Err(e)) => Outcome::Failed(format!("monitor stream: {e}")),
                Err(_) => Outcome::Failed("monitor stream reader ended".into()),
            },
            data = recv(&mut stdin) => match data {
                Some(data) => { let _ = stdin_tx.send(StdinMsg::Data(data)).await; }
                None => {
                    stdin = None;
                    if close_on_eof {
                        let _ = stdin_tx.send(StdinMsg::Close).await;
                    }
                }
            },
            size = recv(&mut resize) => match size {
                Some(size) => apply_resize(socket.clone(), exec_id, size).await,
                None => resize = None,
            },
            () = io.gone.cancelled() => break Outcome::ClientGone,
        }
    };
    // Closing the monitor connection ends both threads; for an exec the
    // monitor then kills the process, for an attach it drops this attacher.
    let _ = control.shutdown(std::net::Shutdown::Both);
    Ok(outcome)
}

/// Receives from an optional channel; pending forever when there is none.
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("spawn {name} thread: {e}"))
}

/// Forwards monitor output frames until the EXIT frame (its code) or EOF
/// (`None`). The senders are dropped before returning, so the protocol
/// side has every byte once the outcome is known.
fn pump_output(
    mut stream: UnixStream,
    stdout: Option<mpsc::Sender<Bytes>>,
    stderr: Option<mpsc::Sender<Bytes>>,
) -> io::Result<Option<i32>> {
    let mut stdout = stdout;
    let mut stderr = stderr;
    loop {
        let Some((kind, payload)) = attach::read_frame(&mut stream)? else {
            return Ok(None);
        };
        let sink = match kind {
            attach::STDOUT => &mut stdout,
            attach::STDERR => &mut stderr,
            attach::EXIT => {
                let code = <[u8; 4]>::try_from(payload.as_slice())
                    .map(i32::from_be_bytes)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "short exit frame"))?;
                return Ok(Some(code));
            }
            _ => continue,
        };
        if let Some(tx) = sink
            && tx.blocking_send(Bytes::from(payload)).is_err()
        {
            // The client stopped reading this stream; keep draining the rest.
            *sink = None;
        }
    }
}

/// Writes the client's stdin to the monitor; ends when the session drops
/// its sender or the monitor connection closes.
fn pump_stdin(mut stream: UnixStream, mut rx: mpsc::Receiver<StdinMsg>) {
    while let Some(msg) = rx.blocking_recv() {
        let written = match msg {
            StdinMsg::Data(data) => attach::write_frame(&mut stream, attach::STDIN, &data),
            StdinMsg::Close => attach::write_frame(&mut stream, attach::STDIN_CLOSE, &[]),
        };
        if written.is_err() {
            return;
        }
    }
}

async fn apply_resize(socket: PathBuf, exec_id: u64, size: TermSize) {
    let (rows, cols) = (u32::from(size.height), u32::from(size.width));
    let result = tokio::task::spawn_blocking(move || {
        let mut client = Client::connect(&socket)?;
        match exec_id {
            0 => client.resize(rows, cols),
            id => client.resize_exec(id, rows, cols),
        }
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "terminal resize"),
        Err(e) => tracing::debug!(error = %e, "terminal resize task"),
    }
}
