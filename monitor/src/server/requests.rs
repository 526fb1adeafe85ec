//! Control requests: what each one does to the monitor's state.

use super::*;

impl Server {
    /// Stdin bytes (or the close, `None`) from connection `i`: for the
    /// container when attached, for the exec when streaming one.
    pub(super) fn route_stdin(&mut self, i: usize, data: Option<&[u8]>) {
        match self.conns[i].mode {
            Mode::ExecStream { exec, .. } => {
                if let Some(e) = self.execs.iter_mut().find(|e| e.id == exec) {
                    match data {
                        Some(d) if e.stdin.is_some() => e.stdin_pending.extend_from_slice(d),
                        Some(_) => {}
                        None => e.stdin_close = true,
                    }
                    e.feed_stdin();
                }
            }
            _ => match data {
                Some(d) if self.stdin.is_some() => self.stdin_pending.extend_from_slice(d),
                Some(_) => {}
                None => self.stdin_close = true,
            },
        }
    }

    pub(super) fn handle(&mut self, i: usize, req: Option<Request>) {
        let r = match req {
            None => Response::Error("empty request".into()),
            Some(Request::Status(_)) => Response::Status(self.status()),
            Some(Request::Resize(r)) if r.exec_id != 0 => {
                match self
                    .execs
                    .iter()
                    .find(|e| e.id == r.exec_id)
                    .and_then(|e| e.pty.as_ref())
                {
                    Some(pty) => match terminal::resize(pty, r.rows, r.cols) {
                        Ok(()) => Response::Ok(OkResp {}),
                        Err(e) => Response::Error(format!("resize: {e}")),
                    },
                    None => Response::Error(format!("resize: no tty exec {}", r.exec_id)),
                }
            }
            Some(Request::Resize(r)) => match &self.pty {
                Some(pty) => match terminal::resize(pty, r.rows, r.cols) {
                    Ok(()) => Response::Ok(OkResp {}),
                    Err(e) => Response::Error(format!("resize: {e}")),
                },
                None => Response::Error("resize: the container has no terminal".into()),
            },
            Some(Request::ReopenLog(_)) => match self.log.reopen() {
                Ok(()) => Response::Ok(OkResp {}),
                Err(e) => {
                    Response::Error(format!("reopen log {}: {e}", self.cfg.log_path.display()))
                }
            },
            Some(Request::Attach(a)) => {
                if a.stdin && self.stdin.is_none() {
                    Response::Error("attach: the container's stdin is not open".into())
                } else {
                    self.conns[i].mode = Mode::Attached {
                        stdin: a.stdin,
                        stdout: a.stdout,
                        stderr: a.stderr,
                    };
                    Response::Ok(OkResp {})
                }
            }
            Some(Request::Exec(x)) => {
                let seq = self.next_exec;
                self.next_exec += 1;
                let init = crate::native::Init {
                    pid: self.ident.pid,
                    start_time: self.ident.start_time,
                };
                let conn = self.conns[i].id;
                match ExecSession::start(&self.cfg, &mut self.native, init, seq, conn, &x) {
                    Ok(e) if x.stream => {
                        self.conns[i].mode = Mode::ExecStream {
                            exec: seq,
                            stdin: x.stdin,
                        };
                        self.execs.push(e);
                        Response::ExecStarted(ExecStarted { exec_id: seq })
                    }
                    Ok(e) => {
                        self.execs.push(e);
                        self.conns[i].mode = Mode::WaitingExec;
                        return;
                    }
                    Err(e) => Response::Error(e.to_string()),
                }
            }
        };
        self.conns[i].respond(&resp(r));
    }

    pub(super) fn status(&self) -> Status {
        Status {
            pid: self.ident.pid,
            start_time: self.ident.start_time,
            monitor_pid: self.ident.monitor_pid,
            monitor_start_time: self.ident.monitor_start_time,
            running: self.exit.is_none(),
            exit_code: self.exit.map_or(0, |e| e.0),
            oom_killed: self.oom.as_ref().is_some_and(OomWatcher::seen),
            attachers: self
                .conns
                .iter()
                .filter(|c| matches!(c.mode, Mode::Attached { .. }))
                .count() as u32,
            log_bytes_dropped: self.log.dropped(),
        }
    }
}

pub(super) fn resp(r: Response) -> ControlResponse {
    ControlResponse { response: Some(r) }
}
