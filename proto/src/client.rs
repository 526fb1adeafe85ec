//! A blocking client for the monitor's control socket, for the daemon's
//! blocking threads (`spawn_blocking`). One `Client` is one connection; it can
//! carry any number of requests, or be turned into an attach stream.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::framing::{FramingError, RESPONSE_MAX, read_message, write_message};
use crate::monitor::{
    self, ControlRequest, ControlResponse, ExecResult, Status, control_request::Request,
    control_response::Response,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("control socket: {0}")]
    Framing(#[from] FramingError),
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("monitor refused the request: {0}")]
    Refused(String),
    #[error("monitor sent an unexpected response: {0:?}")]
    Unexpected(Option<Response>),
}

pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connect to `<runtime dir>/monitor.sock` (pass the socket path). A
    /// refused connection means the monitor is gone: read the exit file.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream =
            crate::socket_path::connect(socket).map_err(|source| ClientError::Connect {
                path: socket.display().to_string(),
                source,
            })?;
        Ok(Self { stream })
    }

    /// Bound every read/write on this connection (None: block forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)?;
        self.stream.set_write_timeout(t)
    }

    fn call(&mut self, req: Request) -> Result<Response, ClientError> {
        write_message(&mut self.stream, &ControlRequest { request: Some(req) })?;
        let resp: ControlResponse = read_message(&mut self.stream, RESPONSE_MAX)?;
        match resp.response {
            Some(Response::Error(e)) => Err(ClientError::Refused(e)),
            Some(r) => Ok(r),
            None => Err(ClientError::Unexpected(None)),
        }
    }

    fn expect_ok(&mut self, req: Request) -> Result<(), ClientError> {
        match self.call(req)? {
            Response::Ok(_) => Ok(()),
            other => Err(ClientError::Unexpected(Some(other))),
        }
    }

    pub fn status(&mut self) -> Result<Status, ClientError> {
        match self.call(Request::Status(monitor::StatusRequest {}))? {
            Response::Status(s) => Ok(s),
            other => Err(ClientError::Unexpected(Some(other))),
        }
    }

    pub fn resize(&mut self, rows: u32, cols: u32) -> Result<(), ClientError> {
        self.expect_ok(Request::Resize(monitor::Resize {
            rows,
            cols,
            exec_id: 0,
        }))
    }

    /// Resize the pty of a streaming tty exec.
    pub fn resize_exec(&mut self, exec_id: u64, rows: u32, cols: u32) -> Result<(), ClientError> {
        self.expect_ok(Request::Resize(monitor::Resize {
            rows,
            cols,
            exec_id,
        }))
    }

    pub fn reopen_log(&mut self) -> Result<(), ClientError> {
        self.expect_ok(Request::ReopenLog(monitor::ReopenLog {}))
    }

    /// Run `argv` in the container; blocks until it exits or times out
    /// (`timeout` zero: no timeout).
    pub fn exec(
        &mut self,
        argv: Vec<String>,
        env: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult, ClientError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.exec_request(monitor::Exec {
            argv,
            timeout_ms,
            env,
            ..Default::default()
        })
    }

    /// Run a collecting exec as `req` describes it (`stream` unset).
    pub fn exec_request(&mut self, req: monitor::Exec) -> Result<ExecResult, ClientError> {
        match self.call(Request::Exec(req))? {
            Response::Exec(r) => Ok(r),
            other => Err(ClientError::Unexpected(Some(other))),
        }
    }

    /// Start a streaming exec (kubectl exec); returns its id (for
    /// `resize_exec`) and the connection, now carrying attach frames for
    /// the process, ending with an EXIT frame.
    pub fn exec_stream(
        self,
        argv: Vec<String>,
        env: Vec<String>,
        tty: bool,
        stdin: bool,
        timeout: Duration,
    ) -> Result<(u64, UnixStream), ClientError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.exec_stream_request(monitor::Exec {
            argv,
            timeout_ms,
            env,
            stream: true,
            tty,
            stdin,
            via_runtime: false,
        })
    }

    /// Start a streaming exec as `req` describes it (`stream` set), as
    /// [`Client::exec_stream`] does.
    pub fn exec_stream_request(
        mut self,
        req: monitor::Exec,
    ) -> Result<(u64, UnixStream), ClientError> {
        match self.call(Request::Exec(req))? {
            Response::ExecStarted(s) => Ok((s.exec_id, self.stream)),
            other => Err(ClientError::Unexpected(Some(other))),
        }
    }

    /// Switch this connection to attach frames (see [`crate::attach`]); the
    /// returned stream reads STDOUT/STDERR/EXIT frames and takes STDIN frames.
    pub fn attach(
        mut self,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<UnixStream, ClientError> {
        self.expect_ok(Request::Attach(monitor::Attach {
            stdin,
            stdout,
            stderr,
        }))?;
        Ok(self.stream)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::framing::{read_message, write_message};
    use crate::monitor::Ok as OkResp;

    /// A stand-in monitor answering one connection from a script.
    fn serve(dir: &Path, answers: Vec<Response>) -> std::thread::JoinHandle<Vec<ControlRequest>> {
        let listener = UnixListener::bind(dir.join("m.sock")).unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let mut seen = Vec::new();
            for a in answers {
                let req: ControlRequest =
                    read_message(&mut s, 1 << 16).unwrap_or_else(|e| panic!("{e}"));
                seen.push(req);
                write_message(&mut s, &ControlResponse { response: Some(a) })
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            seen
        })
    }

    #[test]
    fn client_speaks_the_framing_and_maps_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let server = serve(
            dir.path(),
            vec![
                Response::Status(Status {
                    pid: 42,
                    running: true,
                    ..Default::default()
                }),
                Response::Ok(OkResp {}),
                Response::Error("no terminal".into()),
                Response::Ok(OkResp {}),
            ],
        );
        let mut c = Client::connect(&dir.path().join("m.sock")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.status().ok().map(|s| (s.pid, s.running)),
            Some((42, true))
        );
        assert!(c.reopen_log().is_ok());
        let err = c
            .resize(1, 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no terminal"), "{err}");
        let stream = c.attach(true, true, false);
        assert!(stream.is_ok());
        let seen = server.join().unwrap_or_default();
        assert_eq!(seen.len(), 4);
        assert!(matches!(
            seen[3].request,
            Some(Request::Attach(monitor::Attach {
                stdin: true,
                stdout: true,
                stderr: false
            }))
        ));
    }

    #[test]
    fn connect_to_a_missing_socket_names_the_path() {
        let err = Client::connect(Path::new("/nonexistent/monitor.sock")).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("/nonexistent/monitor.sock"), "{msg}");
    }
}
