//! What `runc start` and `runc delete` do, done in pierd for runc's own
//! containers: each saves a Go runtime's start (7-8 ms of wall time and as
//! much CPU on this node, docs/benchmarks.md, #15), and a delete no longer
//! runs beside the next request. Where a container is not a case this
//! covers (another runtime's state, hooks, systemd cgroups, no PID
//! namespace of its own), the caller runs the runtime instead.
//!
//! Start: runc's create leaves the container's init blocked opening
//! `<root>/<id>/exec.fifo` for writing. Start opens it for reading; the
//! init then writes one byte and execs the container's process, which
//! closes its end. runc reads to that end of file, removes the fifo (its
//! absence is what later `runc state` calls read as "running", not
//! "created") and runs the poststart hooks.
//!
//! Delete of a stopped container: runc removes the container's cgroup from
//! every hierarchy in its state (children first, retrying while exiting
//! tasks still hold it), then its state directory, then runs the poststop
//! hooks. A container without a PID namespace of its own may leave
//! processes behind its init, which runc kills first: that case, like a
//! live init, goes to runc.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;
use pier_proto::proc_stat;

use crate::container::cgroup::{CGROUP_ROOT, while_busy};

/// How often the init's liveness is checked while its fifo is silent: an
/// init that died before opening its end never makes it readable.
const LIVENESS_EVERY: Duration = Duration::from_millis(20);

/// How a call went, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the container's process runs, or the container is gone.
    Done,
    /// Not a case this path covers; the runtime must do it. Says why.
    UseRuntime(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
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

impl DirectError {
    /// Wraps an I/O error met while doing `what` to container `id`.
    fn io(id: &str, what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io {
            id: id.to_owned(),
            what,
            source,
        }
    }
}

/// What runc's `state.json` says of a container, as far as these paths
/// need it.
struct State {
    init_pid: i32,
    init_start_time: u64,
    json: serde_json::Value,
}

impl State {
    /// The state of `dir`, or why this path does not cover it.
    fn read(dir: &Path, id: &str) -> Result<Result<Self, &'static str>, DirectError> {
        let bytes = match std::fs::read(dir.join("state.json")) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err("no state.json in the runtime's state"));
            }
            Err(e) => return Err(DirectError::io(id, "read state.json")(e)),
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(Err("state.json is not runc's"));
        };
        let pid = json["init_process_pid"]
            .as_i64()
            .and_then(|p| i32::try_from(p).ok());
        let (Some(init_pid), Some(init_start_time)) = (pid, json["init_process_start"].as_u64())
        else {
            return Ok(Err("state.json names no init process"));
        };
        Ok(Ok(Self {
            init_pid,
            init_start_time,
            json,
        }))
    }

    fn has_hooks(&self, kind: &str) -> bool {
        self.json["config"]["Hooks"][kind]
            .as_array()
            .is_some_and(|hooks| !hooks.is_empty())
    }

    fn init_runs(&self) -> bool {
        proc_stat::is_running(self.init_pid, self.init_start_time)
    }
}

/// Starts container `id` of the runc state root `root`, as `runc start`
/// would, giving up after `within`. Blocking.
pub fn start(root: &Path, id: &str, within: Duration) -> Result<Outcome, DirectError> {
    let dir = root.join(id);
    let fifo = dir.join("exec.fifo");
    match std::fs::symlink_metadata(&fifo) {
        Ok(meta) if meta.file_type().is_fifo() => {}
        _ => return Ok(Outcome::UseRuntime("no exec.fifo in the runtime's state")),
    }
    let state = match State::read(&dir, id)? {
        Ok(state) => state,
        Err(why) => return Ok(Outcome::UseRuntime(why)),
    };
    if state.has_hooks("poststart") {
        return Ok(Outcome::UseRuntime("the container has poststart hooks"));
    }
    let pid = state.init_pid;

    // Non-blocking, so an init that died before opening its end cannot
    // hang the open; reads then wait in poll.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = open(&fifo, flags, Mode::empty())
        .map_err(|e| DirectError::io(id, "open exec.fifo")(io::Error::from(e)))?;
    let mut file = std::fs::File::from(fd);
    let deadline = Instant::now() + within;
    let mut received = 0usize;
    let mut buf = [0u8; 16];
    loop {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(LIVENESS_EVERY).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, wait) {
            Ok(0) => {
                if !state.init_runs() {
                    return Err(DirectError::InitGone {
                        id: id.to_owned(),
                        pid,
                    });
                }
                if Instant::now() > deadline {
                    return Err(DirectError::Timeout {
                        id: id.to_owned(),
                        waited: within,
                    });
                }
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(DirectError::io(id, "wait on exec.fifo")(io::Error::from(e))),
        }
        match file.read(&mut buf) {
            // The init's end closed: it exec'd (or died after writing,
            // which runc start reports as started too).
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DirectError::io(id, "read exec.fifo")(e)),
        }
    }
    if received == 0 {
        return Err(DirectError::AlreadyStarted { id: id.to_owned() });
    }
    match std::fs::remove_file(&fifo) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(DirectError::io(id, "remove exec.fifo")(e))
        }
        _ => Ok(Outcome::Done),
    }
}

/// Deletes stopped container `id` of the runc state root `root`, as
/// `runc delete` would. Blocking; takes a few milliseconds, more only
/// while the container's last tasks finish exiting.
pub fn delete(root: &Path, id: &str) -> Result<Outcome, DirectError> {
    delete_with(root, id, Path::new(CGROUP_ROOT))
}

/// `delete`, removing only cgroups under `cgroup_root`: a state naming
/// cgroups elsewhere is not trusted with removals.
fn delete_with(root: &Path, id: &str, cgroup_root: &Path) -> Result<Outcome, DirectError> {
    let dir = root.join(id);
    let state = match State::read(&dir, id)? {
        Ok(state) => state,
        Err(why) => return Ok(Outcome::UseRuntime(why)),
    };
    if state.has_hooks("poststop") {
        return Ok(Outcome::UseRuntime("the container has poststop hooks"));
    }
    let config = &state.json["config"];
    if config["cgroups"]["Systemd"].as_bool() == Some(true) {
        return Ok(Outcome::UseRuntime("its cgroup is a systemd unit"));
    }
    let own_pid_namespace = config["namespaces"].as_array().is_some_and(|namespaces| {
        namespaces
            .iter()
            .any(|ns| ns["type"] == "NEWPID" && ns["path"].as_str().is_none_or(str::is_empty))
    });
    if !own_pid_namespace {
        return Ok(Outcome::UseRuntime("its init may leave processes behind"));
    }
    if state.init_runs() {
        return Ok(Outcome::UseRuntime("its init still runs"));
    }
    let mut cgroups: Vec<PathBuf> = state.json["cgroup_paths"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, path)| path.as_str().map(PathBuf::from))
        .filter(|path| path.starts_with(cgroup_root) && path != cgroup_root)
        .collect();
    cgroups.sort();
    cgroups.dedup();
    for cgroup in &cgroups {
        if let Err(e) = remove_cgroup(cgroup) {
            tracing::debug!(cgroup = %cgroup.display(), error = %e, "cgroup stays; the runtime deletes it");
            return Ok(Outcome::UseRuntime("a cgroup could not be removed"));
        }
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(DirectError::io(id, "remove the runtime's state")(e))
        }
        _ => Ok(Outcome::Done),
    }
}

/// Removes a cgroup directory and the cgroups under it, deepest first (a
/// cgroup's files go with it; only its directories can be removed), retrying
/// while tasks that are still exiting keep it busy.
fn remove_cgroup(path: &Path) -> io::Result<()> {
    while_busy(|| remove_cgroup_tree(path))
}

fn remove_cgroup_tree(path: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stopped container's state: an init that no longer runs, its own
    /// PID namespace, `cgroups` as its cgroup paths.
    fn stopped(cgroups: &[&Path]) -> serde_json::Value {
        let me = std::process::id() as i32;
        let started = proc_stat::start_time(me).unwrap_or_default();
        let paths: serde_json::Map<String, serde_json::Value> = cgroups
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("c{i}"), p.display().to_string().into()))
            .collect();
        serde_json::json!({
            "init_process_pid": me,
            "init_process_start": started + 1,
            "cgroup_paths": paths,
            "config": {
                "Hooks": {"poststop": null},
                "cgroups": {"Systemd": false},
                "namespaces": [{"type": "NEWNS", "path": ""}, {"type": "NEWPID", "path": ""}],
            },
        })
    }

    #[test]
    fn a_stopped_container_loses_its_cgroups_and_state_and_nothing_else() {
        let cgroup_root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let memory = cgroup_root.path().join("memory/pier/pier-c1");
        let cpu = cgroup_root.path().join("cpu,cpuacct/pier/pier-c1");
        for dir in [memory.join("sub/deeper"), cpu.clone()] {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        let state = stopped(&[&memory, &cpu, &cpu, outside.path(), cgroup_root.path()]);
        let (root, dir) = state_dir(&state);
        let deleted = delete_with(root.path(), "c1", cgroup_root.path());
        assert_eq!(deleted.ok(), Some(Outcome::Done));
        assert!(!memory.exists() && !cpu.exists() && !dir.exists());
        assert!(
            cgroup_root.path().join("memory/pier").exists(),
            "the parent stays"
        );
        assert!(
            outside.path().exists(),
            "a path outside the hierarchies is never removed"
        );
    }

    #[test]
    fn hooks_systemd_a_shared_pid_namespace_or_a_live_init_go_to_the_runtime() {
        let cgroup_root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cgroup = cgroup_root.path().join("memory/pier-c1");
        std::fs::create_dir_all(&cgroup).unwrap_or_else(|e| panic!("{e}"));
        let me = std::process::id() as i32;
        let variants: [(&str, &[&str], serde_json::Value); 4] = [
            (
                "hooks",
                &["config", "Hooks", "poststop"],
                serde_json::json!([{"path": "/bin/true"}]),
            ),
            (
                "systemd",
                &["config", "cgroups", "Systemd"],
                serde_json::json!(true),
            ),
            (
                "host pid",
                &["config", "namespaces"],
                serde_json::json!([{"type": "NEWNS", "path": ""}]),
            ),
            (
                "live init",
                &["init_process_start"],
                serde_json::json!(proc_stat::start_time(me).unwrap_or_default()),
            ),
        ];
        for (name, path, value) in variants {
            let mut state = stopped(&[&cgroup]);
            let mut at = &mut state;
            for key in path {
                at = &mut at[*key];
            }
            *at = value;
            let (root, dir) = state_dir(&state);
            let outcome = delete_with(root.path(), "c1", cgroup_root.path());
            assert!(
                matches!(outcome, Ok(Outcome::UseRuntime(_))),
                "{name}: {outcome:?}"
            );
            assert!(
                cgroup.exists() && dir.exists(),
                "{name}: nothing is removed"
            );
        }
    }

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
            matches!(result, Err(DirectError::InitGone { .. })),
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
        assert_eq!(result.ok(), Some(Outcome::Done));
        assert!(!dir.join("exec.fifo").exists());
    }
}
