//! One connection on the control socket: buffered, non-blocking, in one of
//! three modes (requests, waiting for an exec, attached). Anything a client
//! sends that does not parse closes that client only.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use pier_proto::attach::{self, HEADER};
use pier_proto::framing::{Split, split_message};
use pier_proto::monitor::{ControlRequest, ControlResponse};
use prost::Message;

/// An attacher whose unread output passes this is disconnected: a client
/// that stops reading must never slow the container or the log.
pub const ATTACH_QUEUE_MAX: usize = 4 << 20;
const READ_CHUNK: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Control,
    WaitingExec,
    Attached {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Carrying a streaming exec's frames.
    ExecStream {
        exec: u64,
        stdin: bool,
    },
}

impl Mode {
    /// The connection carries attach frames (container or exec).
    pub fn framed(self) -> bool {
        matches!(self, Mode::Attached { .. } | Mode::ExecStream { .. })
    }
}

pub struct Conn {
    pub id: u64,
    pub stream: UnixStream,
    pub mode: Mode,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Peer closed its side, or it misbehaved: drop once `wbuf` is out.
    pub closing: bool,
    /// Drop now.
    pub dead: bool,
    /// An attacher shut down its sending side.
    read_eof: bool,
}

/// One thing a connection's receive buffer yields.
pub enum Input {
    Request(ControlRequest),
    Stdin(Vec<u8>),
    StdinClose,
}

impl Conn {
    pub fn new(id: u64, stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            id,
            stream,
            mode: Mode::Control,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            closing: false,
            dead: false,
            read_eof: false,
        })
    }

    fn rbuf_limit(&self) -> usize {
        if self.mode.framed() {
            HEADER + attach::FRAME_MAX
        } else {
            pier_proto::REQUEST_MAX + 10
        }
    }

    /// Read what the peer sent, up to the mode's bound.
    pub fn receive(&mut self) {
        let limit = self.rbuf_limit();
        while self.rbuf.len() < limit {
            let old = self.rbuf.len();
            let want = READ_CHUNK.min(limit - old);
            self.rbuf.resize(old + want, 0);
            match self.stream.read(&mut self.rbuf[old..]) {
                Ok(0) => {
                    self.rbuf.truncate(old);
                    if !self.rbuf.is_empty() && self.mode == Mode::Control {
                        crate::diag!("control client {}: disconnected mid-message", self.id);
                    }
                    if self.mode.framed() {
                        // A half-closed attacher may still read output.
                        self.read_eof = true;
                    } else {
                        self.closing = true;
                    }
                    return;
                }
                Ok(n) => self.rbuf.truncate(old + n),
                Err(e) => {
                    self.rbuf.truncate(old);
                    if e.kind() != io::ErrorKind::WouldBlock
                        && e.kind() != io::ErrorKind::Interrupted
                    {
                        self.dead = true;
                    }
                    return;
                }
            }
        }
    }

    /// The next complete input, if any; garbage marks the connection dead.
    pub fn next_input(&mut self) -> Option<Input> {
        if self.dead {
            return None;
        }
        match self.mode {
            Mode::WaitingExec => None,
            // One request at a time: the answer goes out before the next.
            Mode::Control if self.pending_out() > 0 => None,
            Mode::Control => match split_message(&self.rbuf, pier_proto::REQUEST_MAX) {
                Split::Incomplete => None,
                Split::Invalid => self.reject("malformed length prefix"),
                Split::Complete { start, end } => {
                    let req = ControlRequest::decode(&self.rbuf[start..end]);
                    self.consume(end);
                    match req {
                        Ok(r) => Some(Input::Request(r)),
                        Err(e) => self.reject(&format!("undecodable request: {e}")),
                    }
                }
            },
            Mode::Attached { stdin, .. } | Mode::ExecStream { stdin, .. } => {
                if self.rbuf.len() < HEADER {
                    return None;
                }
                let len =
                    u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]])
                        as usize;
                if len > attach::FRAME_MAX {
                    return self.reject("attach frame too large");
                }
                if self.rbuf.len() < HEADER + len {
                    return None;
                }
                let kind = self.rbuf[0];
                let payload = self.rbuf[HEADER..HEADER + len].to_vec();
                self.consume(HEADER + len);
                match kind {
                    attach::STDIN if stdin => Some(Input::Stdin(payload)),
                    attach::STDIN_CLOSE if stdin => Some(Input::StdinClose),
                    // Stdin from an attacher that did not ask for it: ignore.
                    attach::STDIN | attach::STDIN_CLOSE => self.next_input(),
                    other => self.reject(&format!("unknown attach frame kind {other}")),
                }
            }
        }
    }

    fn reject(&mut self, why: &str) -> Option<Input> {
        crate::diag!("control client {}: {why}; closing it", self.id);
        self.dead = true;
        None
    }

    fn consume(&mut self, n: usize) {
        self.rbuf.drain(..n);
        if self.rbuf.is_empty() && self.rbuf.capacity() > READ_CHUNK {
            self.rbuf = Vec::new();
        }
    }

    pub fn respond(&mut self, resp: &ControlResponse) {
        let bytes = resp.encode_length_delimited_to_vec();
        self.wbuf.extend_from_slice(&bytes);
    }

    /// Queue container output for an attacher; disconnect it when it lags
    /// more than the bound.
    pub fn queue_frame(&mut self, kind: u8, data: &[u8]) {
        if self.dead {
            return;
        }
        let frames = data.len().div_ceil(attach::FRAME_MAX).max(1);
        if self.pending_out() + data.len() + frames * HEADER > ATTACH_QUEUE_MAX {
            crate::diag!("attach client {}: not reading, dropping it", self.id);
            self.dead = true;
            return;
        }
        let mut chunks = data.chunks(attach::FRAME_MAX);
        for _ in 0..frames {
            let chunk = chunks.next().unwrap_or(&[]);
            self.wbuf
                .extend_from_slice(&attach::header(kind, chunk.len()));
            self.wbuf.extend_from_slice(chunk);
        }
    }

    pub fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Write what the socket takes without blocking.
    pub fn send(&mut self) {
        while self.wpos < self.wbuf.len() && !self.dead {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => self.dead = true,
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => self.dead = true,
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wpos = 0;
            self.wbuf.clear();
            if self.wbuf.capacity() > READ_CHUNK {
                self.wbuf = Vec::new();
            }
            if self.closing {
                self.dead = true;
            }
        }
    }

    pub fn wants_read(&self) -> bool {
        !self.closing && !self.dead && !self.read_eof && self.rbuf.len() < self.rbuf_limit()
    }
}
