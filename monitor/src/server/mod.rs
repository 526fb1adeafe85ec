//! The monitor's one event loop: container output → CRI log and attachers,
//! control requests, execs, signals, OOM events; then the exit sequence.
//! Single-threaded, poll(2) over a handful of fds, buffers allocated while
//! output flows and given back after a quiet spell.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signalfd::{SfdFlags, SignalFd};
use pier_proto::args::MonitorArgs;
use pier_proto::attach;
use pier_proto::exit_file::{self, ExitStatus};
use pier_proto::monitor::{
    ControlResponse, ExecStarted, Ok as OkResp, Status, control_request::Request,
    control_response::Response,
};

use crate::child_reaper;
use crate::control::{Conn, Input, Mode};
use crate::cri_log::{CriLog, Stream};
use crate::exec::ExecSession;
use crate::native::Native;
use crate::oom::OomWatcher;
use crate::runtime::Created;
use crate::{daemonize, sys, terminal, timestamp};

mod requests;
use requests::resp;

/// One read: the pipes are grown to 1 MiB, so a busy container fills a
/// quarter of its pipe per read.
const READ_BUF: usize = 256 << 10;
/// Reads of one stream per wakeup before others get their turn.
const READS_PER_WAKE: usize = 16;
/// Give buffers back after this long without output.
const IDLE_RELEASE_MS: i32 = 2000;
const MAX_CONNS: usize = 256;
const STDIN_PENDING_MAX: usize = 1 << 20;
/// Longest the exit sequence spends draining output.
const FINAL_DRAIN: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
pub struct Identity {
    pub pid: i32,
    pub start_time: u64,
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
}

#[derive(Clone, Copy)]
enum Token {
    Signal,
    Stdout,
    Stderr,
    Stdin,
    Listener,
    Oom,
    Conn(usize),
    ExecOut(usize),
    ExecErr(usize),
    ExecIn(usize),
}

pub struct Server {
    cfg: MonitorArgs,
    ident: Identity,
    stdout: Option<File>,
    stderr: Option<File>,
    stdin: Option<File>,
    pty: Option<File>,
    stdin_pending: Vec<u8>,
    stdin_close: bool,
    log: CriLog,
    listener: UnixListener,
    socket_path: PathBuf,
    conns: Vec<Conn>,
    next_conn: u64,
    execs: Vec<ExecSession>,
    next_exec: u64,
    native: Native,
    /// Recently reaped children nobody claimed yet (pid, exit code).
    orphans: Vec<(i32, i32)>,
    sigfd: SignalFd,
    oom: Option<OomWatcher>,
    exit: Option<(i32, i64)>,
    buf: Vec<u8>,
    /// Something ran since memory was last given back: once idle, the
    /// buffers go and the heap is trimmed (see `release_buffers`).
    busy_since_release: bool,
    pollfds: Vec<libc::pollfd>,
    tokens: Vec<Token>,
}

impl Server {
    pub fn new(
        cfg: MonitorArgs,
        ident: Identity,
        created: Created,
        log: CriLog,
        listener: UnixListener,
        socket_path: PathBuf,
    ) -> io::Result<Self> {
        let sigfd = SignalFd::with_flags(
            &daemonize::signal_set(),
            SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        listener.set_nonblocking(true)?;
        for f in [
            Some(&created.stdout),
            created.stderr.as_ref(),
            created.stdin.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            sys::set_nonblocking(f)?;
        }
        Ok(Self {
            oom: OomWatcher::new(ident.pid),
            cfg,
            ident,
            stdout: Some(created.stdout),
            stderr: created.stderr,
            stdin: created.stdin,
            pty: created.pty,
            stdin_pending: Vec::new(),
            stdin_close: false,
            log,
            listener,
            socket_path,
            conns: Vec::new(),
            next_conn: 1,
            execs: Vec::new(),
            next_exec: 1,
            native: Native::default(),
            orphans: Vec::new(),
            sigfd,
            exit: None,
            buf: Vec::new(),
            // Setting up and creating the container left garbage behind.
            busy_since_release: true,
            pollfds: Vec::new(),
            tokens: Vec::new(),
        })
    }

    /// Run until the container has exited and everything is on disk.
    /// Returns the process exit code of the monitor itself.
    pub fn run(mut self) -> u8 {
        // The init may have died before the signalfd existed to tell us.
        self.on_signal();
        while self.exit.is_none() {
            self.build_pollset();
            let timeout = self.poll_timeout();
            let n = match sys::poll(&mut self.pollfds, timeout) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::diag!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if n == 0 && self.execs.is_empty() && self.busy_since_release {
                self.release_buffers();
            }
            self.busy_since_release |= n > 0;
            for i in 0..self.pollfds.len() {
                let rev = self.pollfds[i].revents;
                if rev != 0 {
                    self.dispatch(self.tokens[i], rev);
                }
            }
            self.after_events();
        }
        self.shutdown()
    }

    /// Gives memory back once idle. The heap's free pages count too: a
    /// hundred idle monitors each kept 60-70 kB of dirty, free heap from
    /// their start (spawning runc, parsing the gate), as much as all the
    /// rest of their private memory.
    fn release_buffers(&mut self) {
        self.buf = Vec::new();
        self.log.release_buffers();
        sys::trim_heap();
        self.busy_since_release = false;
    }

    fn poll_timeout(&self) -> i32 {
        let now = Instant::now();
        let exec = self
            .execs
            .iter()
            .filter_map(|e| e.until_deadline(now))
            .min();
        let mut t = exec.map_or(-1, |d| {
            i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1)
        });
        if self.busy_since_release && !(0..=IDLE_RELEASE_MS).contains(&t) {
            t = IDLE_RELEASE_MS;
        }
        t
    }

    fn build_pollset(&mut self) {
        self.pollfds.clear();
        self.tokens.clear();
        let mut add = |fds: &mut Vec<libc::pollfd>, fd: RawFd, events: i16, tok: Token| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            self.tokens.push(tok);
        };
        let fds = &mut self.pollfds;
        add(fds, self.sigfd.as_raw_fd(), libc::POLLIN, Token::Signal);
        if let Some(f) = &self.stdout {
            add(fds, f.as_raw_fd(), libc::POLLIN, Token::Stdout);
        }
        if let Some(f) = &self.stderr {
            add(fds, f.as_raw_fd(), libc::POLLIN, Token::Stderr);
        }
        if let (Some(f), false) = (&self.stdin, self.stdin_pending.is_empty()) {
            add(fds, f.as_raw_fd(), libc::POLLOUT, Token::Stdin);
        }
        add(
            fds,
            self.listener.as_raw_fd(),
            libc::POLLIN,
            Token::Listener,
        );
        if let Some(fd) = self.oom.as_ref().and_then(OomWatcher::event_fd) {
            add(fds, fd, libc::POLLIN, Token::Oom);
        }
        let stdin_room = self.stdin_pending.len() < STDIN_PENDING_MAX;
        for (i, c) in self.conns.iter().enumerate() {
            // Stop reading stdin frames while their target's buffer is full.
            let room = match c.mode {
                Mode::Control | Mode::WaitingExec => true,
                Mode::Attached { .. } => stdin_room,
                Mode::ExecStream { exec, .. } => self.execs.iter().any(|e| {
                    e.id == exec && e.stdin_pending.len() < crate::exec::STDIN_PENDING_MAX
                }),
            };
            let mut ev = 0;
            if c.wants_read() && room {
                ev |= libc::POLLIN;
            }
            if c.pending_out() > 0 {
                ev |= libc::POLLOUT;
            }
            add(fds, c.stream.as_raw_fd(), ev, Token::Conn(i));
        }
        for (i, e) in self.execs.iter().enumerate() {
            // A streaming client that lags stops the exec's output (it is
            // back-pressure on that process only; no log is involved).
            let lagging = e.stream
                && self.conns.iter().any(|c| {
                    c.id == e.conn && c.pending_out() > crate::control::ATTACH_QUEUE_MAX / 2
                });
            if let (Some(f), false) = (&e.stdin, e.stdin_pending.is_empty()) {
                add(fds, f.as_raw_fd(), libc::POLLOUT, Token::ExecIn(i));
            }
            if lagging {
                continue;
            }
            if let Some(f) = &e.stdout {
                add(fds, f.as_raw_fd(), libc::POLLIN, Token::ExecOut(i));
            }
            if let Some(f) = &e.stderr {
                add(fds, f.as_raw_fd(), libc::POLLIN, Token::ExecErr(i));
            }
        }
    }

    fn dispatch(&mut self, tok: Token, rev: i16) {
        match tok {
            Token::Signal => self.on_signal(),
            Token::Stdout => self.pump(Stream::Stdout, READS_PER_WAKE, None),
            Token::Stderr => self.pump(Stream::Stderr, READS_PER_WAKE, None),
            Token::Stdin => self.feed_stdin(),
            Token::Listener => self.accept(),
            Token::Oom => {
                if let Some(o) = self.oom.as_mut() {
                    o.on_event();
                }
            }
            Token::Conn(i) => {
                if let Some(c) = self.conns.get_mut(i) {
                    if rev & libc::POLLIN != 0 {
                        c.receive();
                    }
                    if rev & libc::POLLOUT != 0 {
                        c.send();
                    }
                    let hup_only = rev & libc::POLLHUP != 0 && rev & libc::POLLIN == 0;
                    if rev & (libc::POLLERR | libc::POLLNVAL) != 0 || hup_only {
                        c.dead = true;
                    }
                }
            }
            Token::ExecOut(i) | Token::ExecErr(i) => {
                let buf = read_buf(&mut self.buf);
                if let Some(e) = self.execs.get_mut(i) {
                    let conn = self.conns.iter_mut().find(|c| c.id == e.conn);
                    e.on_readable(matches!(tok, Token::ExecErr(_)), buf, conn);
                }
            }
            Token::ExecIn(i) => {
                if let Some(e) = self.execs.get_mut(i) {
                    e.feed_stdin();
                }
            }
        }
    }

    fn on_signal(&mut self) {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        let (init, execs, exit) = (self.ident.pid, &mut self.execs, &mut self.exit);
        let orphans = &mut self.orphans;
        child_reaper::reap_all(|pid, code| {
            if pid == init {
                *exit = Some((code, timestamp::now_ns()));
            } else if let Some(e) = execs.iter_mut().find(|e| e.runc_pid == Some(pid)) {
                e.on_runtime_exit(code);
            } else if let Some(e) = execs.iter_mut().find(|e| e.proc_pid == Some(pid)) {
                e.exit_code = Some(code);
            } else {
                // Possibly a detached exec's process, reaped before its
                // runc was: remember it briefly.
                if orphans.len() >= 64 {
                    orphans.remove(0);
                }
                orphans.push((pid, code));
            }
        });
        for e in self.execs.iter_mut().filter(|e| e.exit_code.is_none()) {
            if let Some(k) = e
                .proc_pid
                .and_then(|p| self.orphans.iter().position(|o| o.0 == p))
            {
                e.exit_code = Some(self.orphans.swap_remove(k).1);
            }
        }
    }

    /// Move container output from one stream to the log and attachers.
    fn pump(&mut self, stream: Stream, max_reads: usize, deadline: Option<Instant>) {
        let file = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let Some(f) = file.as_mut() else { return };
        let buf = read_buf(&mut self.buf);
        let kind = match stream {
            Stream::Stdout => attach::STDOUT,
            Stream::Stderr => attach::STDERR,
        };
        for _ in 0..max_reads {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                crate::diag!("container {stream:?} still producing after exit; stop draining");
                break;
            }
            match f.read(buf) {
                Ok(0) => {
                    *file = None;
                    break;
                }
                Ok(n) => {
                    self.log.push(stream, &buf[..n], timestamp::now_ns());
                    for c in self.conns.iter_mut() {
                        if let Mode::Attached { stdout, stderr, .. } = c.mode
                            && ((stream == Stream::Stdout && stdout)
                                || (stream == Stream::Stderr && stderr))
                        {
                            c.queue_frame(kind, &buf[..n]);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EIO on a pty master: every slave end is closed.
                    if e.raw_os_error() != Some(libc::EIO) {
                        crate::diag!("reading container {stream:?}: {e}");
                    }
                    *file = None;
                    break;
                }
            }
        }
        self.log.flush();
    }

    fn feed_stdin(&mut self) {
        // In terminal mode stdin is the pty master: a stdin close cannot
        // close it.
        let close = self.stdin_close && self.pty.is_none();
        if let Err(e) = sys::feed_stdin(&mut self.stdin, &mut self.stdin_pending, close) {
            crate::diag!("container stdin closed: {e}");
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) if self.conns.len() >= MAX_CONNS => {
                    crate::diag!("control socket: too many clients, refusing one");
                    drop(s);
                }
                Ok((s, _)) => match Conn::new(self.next_conn, s) {
                    Ok(c) => {
                        self.next_conn += 1;
                        self.conns.push(c);
                    }
                    Err(e) => crate::diag!("control socket: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        crate::diag!("control socket accept: {e}");
                    }
                    return;
                }
            }
        }
    }

    /// Requests, stdin frames, finished execs, writes, dead connections.
    fn after_events(&mut self) {
        for i in 0..self.conns.len() {
            // Answer, send, and look again: a client may have pipelined
            // several requests, which sit in the buffer with no new event.
            loop {
                let mut progressed = false;
                while let Some(input) = self.conns[i].next_input() {
                    progressed = true;
                    match input {
                        Input::Request(req) => self.handle(i, req.request),
                        Input::Stdin(data) => self.route_stdin(i, Some(&data)),
                        Input::StdinClose => self.route_stdin(i, None),
                    }
                }
                self.conns[i].send();
                if !progressed {
                    break;
                }
            }
        }
        if !self.stdin_pending.is_empty() || self.stdin_close {
            self.feed_stdin();
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.execs.len() {
            self.execs[i].check_deadline(now);
            if self.execs[i].is_done() {
                let e = self.execs.swap_remove(i);
                let (conn, stream) = (e.conn, e.stream);
                let mut c = self.conns.iter_mut().find(|c| c.id == conn);
                let result = e.finish(read_buf(&mut self.buf), c.as_deref_mut());
                if let (Some(c), false) = (c, stream) {
                    c.mode = Mode::Control;
                    c.respond(&resp(Response::Exec(result)));
                }
            } else {
                i += 1;
            }
        }
        for c in self.conns.iter_mut() {
            c.send();
        }
        self.conns.retain(|c| !c.dead);
        for e in self.execs.iter_mut().filter(|e| e.stream) {
            if !self.conns.iter().any(|c| c.id == e.conn) {
                e.hang_up();
            }
        }
    }

    /// The init has exited: finish the log, write the exit files, tell the
    /// attachers and exec callers, then leave.
    fn shutdown(mut self) -> u8 {
        let (code, finished_ns) = self.exit.unwrap_or((-1, timestamp::now_ns()));
        // Everything the init wrote is in the pipes by now. A process that
        // outlives it (shared PID namespace) and keeps writing must not hold
        // the exit file back forever, hence the deadline.
        let deadline = Instant::now() + FINAL_DRAIN;
        self.pump(Stream::Stdout, usize::MAX, Some(deadline));
        self.pump(Stream::Stderr, usize::MAX, Some(deadline));
        self.log.finish();
        let oom_killed = self.oom.as_mut().is_some_and(OomWatcher::oom_killed);
        let status = ExitStatus {
            exit_code: code,
            finished_ns,
            oom_killed,
        };
        crate::failpoint::crash_point("monitor.before_exit_file");
        let mut written = 0;
        for dir in &self.cfg.exit_dirs {
            match exit_file::write(dir, &status) {
                Ok(()) => written += 1,
                Err(e) => crate::diag!("{e}"),
            }
        }
        crate::failpoint::crash_point("monitor.exit_file_written");
        for e in self.execs.drain(..) {
            e.kill();
            let c = self.conns.iter_mut().find(|c| c.id == e.conn);
            if let (Some(c), false) = (c, e.stream) {
                c.respond(&resp(Response::Error(
                    "container exited during exec".into(),
                )));
            }
        }
        for c in self.conns.iter_mut() {
            if matches!(c.mode, Mode::Attached { .. }) {
                c.queue_frame(attach::EXIT, &code.to_be_bytes());
            }
            c.closing = true;
        }
        self.flush_clients(Duration::from_secs(1));
        let _ = std::fs::remove_file(&self.socket_path);
        if written == 0 { 1 } else { 0 }
    }

    /// Best effort: give clients a moment to take their last bytes.
    fn flush_clients(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            for c in self.conns.iter_mut() {
                c.send();
            }
            self.conns.retain(|c| !c.dead && c.pending_out() > 0);
            let now = Instant::now();
            if self.conns.is_empty() || now >= deadline {
                return;
            }
            let mut fds: Vec<libc::pollfd> = self
                .conns
                .iter()
                .map(|c| libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            let ms = i32::try_from((deadline - now).as_millis())
                .unwrap_or(1000)
                .max(1);
            let _ = sys::poll(&mut fds, ms);
        }
    }
}

fn read_buf(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.len() < READ_BUF {
        *buf = vec![0u8; READ_BUF];
    }
    buf
}
