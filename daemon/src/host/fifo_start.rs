//! Starting a created runc container without running runc: what
//! `runc start` does for a container with no poststart hooks, done in
//! pierd. It saves a Go runtime's start, a third of StartContainer's
//! CPU and most of its wall time (docs/benchmarks.md, #15).
//!
//! runc's create leaves the container's init blocked opening
//! `<root>/<id>/exec.fifo` for writing. Start opens it for reading; the
//! init then writes one byte and execs the container's process, which
//! closes its end. runc reads to that end of file, removes the fifo (its
//! absence is what later `runc state` calls read as "running", not
//! "created") and runs the poststart hooks. Where anything differs from
//! that (another runtime, hooks), the caller runs the runtime's `start`.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;
use pier_proto::proc_stat;

/// How often the init's liveness is checked while its fifo is silent: an
/// init that died before opening its end never makes it readable.
const LIVENESS_EVERY: Duration = Duration::from_millis(20);

/// How `start` went, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The container's process runs.
    Started,
    /// Not a case this path covers; the runtime must start it. Says why.
    UseRuntime(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum FifoStartError {
    #[error("{what} of container {id}: {source}")]
    Io {
        id: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("container {id} cannot be started: its init process (pid {pid}) has ended")]
    InitGone { id: String, pid: i32 },
    #[error("container {id} was started already")]
    AlreadyStarted { id: String },
    #[error("container {id}: its init did not exec within {0:?}", waited)]
    Timeout { id: String, waited: Duration },
}

/// Starts container `id` of the runc state root `root`, as `runc start`
/// would, giving up after `within`. Blocking.
pub fn start(root: &Path, id: &str, within: Duration) -> Result<Outcome, FifoStartError> {
    let dir = root.join(id);
    let fifo = dir.join("exec.fifo");
    match std::fs::symlink_metadata(&fifo) {
        Ok(meta) if meta.file_type().is_fifo() => {}
        _ => return Ok(Outcome::UseRuntime("no exec.fifo in the runtime's state")),
    }
    let io_error = |what| {
        move |source| FifoStartError::Io {
            id: id.to_owned(),
            what,
            source,
        }
    };
    let state = std::fs::read(dir.join("state.json")).map_err(io_error("read state.json"))?;
    let Ok(state) = serde_json::from_slice::<serde_json::Value>(&state) else {
        return Ok(Outcome::UseRuntime("state.json is not runc's"));
    };
    let init = (
        state["init_process_pid"].as_i64(),
        state["init_process_start"].as_u64(),
    );
    let (Some(pid), Some(start_time)) = init else {
        return Ok(Outcome::UseRuntime("state.json names no init process"));
    };
    let Ok(pid) = i32::try_from(pid) else {
        return Ok(Outcome::UseRuntime("state.json names no init process"));
    };
    let poststart = &state["config"]["Hooks"]["poststart"];
    if poststart.as_array().is_some_and(|hooks| !hooks.is_empty()) {
        return Ok(Outcome::UseRuntime("the container has poststart hooks"));
    }

    // Non-blocking, so an init that died before opening its end cannot
    // hang the open; reads then wait in poll.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = open(&fifo, flags, Mode::empty())
        .map_err(|e| io_error("open exec.fifo")(io::Error::from(e)))?;
    let mut file = std::fs::File::from(fd);
    let deadline = Instant::now() + within;
    let mut received = 0usize;
    let mut buf = [0u8; 16];
    loop {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(LIVENESS_EVERY).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, wait) {
            Ok(0) => {
                if !proc_stat::is_running(pid, start_time) {
                    return Err(FifoStartError::InitGone {
                        id: id.to_owned(),
                        pid,
                    });
                }
                if Instant::now() > deadline {
                    return Err(FifoStartError::Timeout {
                        id: id.to_owned(),
                        waited: within,
                    });
                }
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io_error("wait on exec.fifo")(io::Error::from(e))),
        }
        match file.read(&mut buf) {
            // The init's end closed: it exec'd (or died after writing,
            // which runc start reports as started too).
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error("read exec.fifo")(e)),
        }
    }
    if received == 0 {
        return Err(FifoStartError::AlreadyStarted { id: id.to_owned() });
    }
    match std::fs::remove_file(&fifo) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove exec.fifo")(e)),
        _ => Ok(Outcome::Started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_dir(state: &serde_json::Value) -> (tempfile::TempDir, std::path::PathBuf) {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = root.path().join("c1");
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        nix::unistd::mkfifo(&dir.join("exec.fifo"), Mode::from_bits_truncate(0o622))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("state.json"), state.to_string()).unwrap_or_else(|e| panic!("{e}"));
        (root, dir)
    }

    #[test]
    fn no_fifo_or_hooks_leave_it_to_the_runtime() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            start(root.path(), "c1", Duration::from_secs(1)),
            Ok(Outcome::UseRuntime(_))
        ));
        let hooks = serde_json::json!({
            "init_process_pid": std::process::id(),
            "init_process_start": 1,
            "config": {"Hooks": {"poststart": [{"path": "/bin/true"}]}},
        });
        let (root, _) = state_dir(&hooks);
        assert_eq!(
            start(root.path(), "c1", Duration::from_secs(1)).ok(),
            Some(Outcome::UseRuntime("the container has poststart hooks"))
        );
    }

    #[test]
    fn an_init_that_is_gone_is_an_error_not_a_hang() {
        let me = std::process::id() as i32;
        let started = proc_stat::start_time(me).unwrap_or_default();
        let state = serde_json::json!({
            "init_process_pid": me,
            "init_process_start": started + 1,
            "config": {"Hooks": {}},
        });
        let (root, dir) = state_dir(&state);
        let began = Instant::now();
        let result = start(root.path(), "c1", Duration::from_secs(10));
        assert!(
            matches!(result, Err(FifoStartError::InitGone { .. })),
            "{result:?}"
        );
        assert!(began.elapsed() < Duration::from_secs(2));
        assert!(
            dir.join("exec.fifo").exists(),
            "a failed start removes nothing"
        );
    }

    #[test]
    fn the_byte_and_the_close_start_it_and_remove_the_fifo() {
        let me = std::process::id() as i32;
        let started = proc_stat::start_time(me).unwrap_or_default();
        let state = serde_json::json!({
            "init_process_pid": me,
            "init_process_start": started,
            "config": {"Hooks": {"poststart": null}},
        });
        let (root, dir) = state_dir(&state);
        // Stands in for runc's init: blocks opening its end, writes one
        // byte, and closes it (its exec).
        let fifo = dir.join("exec.fifo");
        let init = std::thread::spawn(move || {
            let mut end = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(Duration::from_millis(50));
            std::io::Write::write_all(&mut end, b"0").unwrap_or_else(|e| panic!("{e}"));
        });
        let result = start(root.path(), "c1", Duration::from_secs(10));
        let _ = init.join();
        assert_eq!(result.ok(), Some(Outcome::Started));
        assert!(!dir.join("exec.fifo").exists());
    }
}
