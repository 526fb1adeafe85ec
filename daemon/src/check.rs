//! `pierd check`: whether the database, the run root and the kernel's state
//! agree. Read-only, so it is safe beside a live pierd: the database is
//! opened for reading, and everything else is looked at (directories, the
//! mount table, `/proc`), never changed.
//!
//! Each disagreement is one line naming the object and what is wrong with
//! it. What a live pierd is in the middle of (containers still being
//! created) is not a disagreement.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pier_storage::{ContainerRecord, Database, DbError, SandboxRecord};

use crate::config::Config;
use crate::container::{CREATED, CREATING, ContainerRuntime, RUNNING};
use crate::host::linux::LinuxHost;
use crate::host::{Host, Process};
use crate::sandbox::{NOT_READY, READY, SandboxRuntime, namespaces};

/// The run-root directories that hold one pinned namespace per sandbox.
const PIN_DIRS: [&str; 5] = ["netns", "ipcns", "utsns", "pidns", "userns"];

/// What `pierd check` found.
#[derive(Debug, Default)]
pub struct Report {
    pub sandboxes: usize,
    pub containers: usize,
    /// One line per disagreement.
    pub disagreements: Vec<String>,
}

/// Why the check could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no database at {0}: pierd has not run with this state root")]
    NoDatabase(PathBuf),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("read the mount table /proc/self/mountinfo: {0}")]
    Mounts(std::io::Error),
}

/// Compares the database with the run root and the kernel.
pub fn run(config: &Config) -> Result<Report, CheckError> {
    let path = config.database_path();
    if !path.exists() {
        return Err(CheckError::NoDatabase(path));
    }
    let db = Database::open_read_only(&path)?;
    let sandboxes = db.sandboxes()?;
    let containers = db.containers()?;
    drop(db);
    let mounts = mount_points().map_err(CheckError::Mounts)?;
    let mut check = Check {
        config,
        host: &LinuxHost,
        mounts,
        owned_mounts: Vec::new(),
        found: Vec::new(),
    };
    for sandbox in &sandboxes {
        check.sandbox(sandbox);
    }
    let sandbox_ids: HashSet<&str> = sandboxes.iter().map(|s| s.id.as_str()).collect();
    for container in &containers {
        check.container(container, &sandbox_ids);
    }
    let container_ids: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    check.strays(&sandbox_ids, &container_ids);
    check.stray_mounts();
    Ok(Report {
        sandboxes: sandboxes.len(),
        containers: containers.len(),
        disagreements: check.found,
    })
}

struct Check<'a> {
    config: &'a Config,
    host: &'a dyn Host,
    /// Mount points of pierd's mount namespace (the host's).
    mounts: Vec<PathBuf>,
    /// Paths under which mounts belong to a sandbox or container.
    owned_mounts: Vec<PathBuf>,
    found: Vec<String>,
}

impl Check<'_> {
    fn report(&mut self, line: String) {
        self.found.push(line);
    }

    fn is_mounted(&self, path: &Path) -> bool {
        self.mounts.iter().any(|m| m == path)
    }

    fn sandbox(&mut self, record: &SandboxRecord) {
        let id = &record.id;
        let runtime = SandboxRuntime::from_record(record);
        let userns = runtime.userns.as_ref().map(|u| &u.path);
        let pins: Vec<&PathBuf> = namespaces::pinned(&runtime)
            .into_iter()
            .chain(userns)
            .collect();
        self.owned_mounts.extend(pins.iter().map(|p| (*p).clone()));
        if !runtime.dir.as_os_str().is_empty() {
            self.owned_mounts.push(runtime.dir.clone());
        }
        match record.state.as_str() {
            READY => {
                if !runtime.dir.is_dir() {
                    self.report(format!(
                        "sandbox {id}: ready in the database, but its run dir {} is missing",
                        runtime.dir.display()
                    ));
                }
                for pin in pins {
                    if !self.host.is_pinned(pin) {
                        self.report(format!(
                            "sandbox {id}: ready in the database, but its namespace pin {} is not mounted",
                            pin.display()
                        ));
                    }
                }
                if let Some(shm) = &runtime.shm
                    && !self.is_mounted(shm)
                {
                    self.report(format!(
                        "sandbox {id}: ready in the database, but its /dev/shm {} is not mounted",
                        shm.display()
                    ));
                }
                if !namespaces::infra_alive(self.host, &runtime) {
                    let pid = runtime.infra.map(|(pid, _)| pid).unwrap_or_default();
                    self.report(format!(
                        "sandbox {id}: ready in the database, but its infra process (pid {pid}) is gone"
                    ));
                }
            }
            NOT_READY => {
                for pin in pins {
                    if self.host.is_pinned(pin) {
                        self.report(format!(
                            "sandbox {id}: not ready in the database, but its namespace pin {} is still mounted",
                            pin.display()
                        ));
                    }
                }
            }
            other => self.report(format!(
                "sandbox {id}: unknown state {other:?} in the database"
            )),
        }
    }

    fn container(&mut self, record: &ContainerRecord, sandboxes: &HashSet<&str>) {
        let id = &record.id;
        let runtime = ContainerRuntime::from_record(record);
        if let Ok(state_dir) = pier_storage::ContainerDir::new(&self.config.root, id) {
            self.owned_mounts.push(state_dir.path().to_owned());
        }
        if !runtime.runtime_dir.as_os_str().is_empty() {
            self.owned_mounts.push(runtime.runtime_dir.clone());
        }
        if !sandboxes.contains(record.sandbox_id.as_str()) {
            self.report(format!(
                "container {id}: its sandbox {} is not in the database",
                record.sandbox_id
            ));
        }
        if record.state == CREATING {
            // The mounts a create stages for runc, while it runs.
            let stage = self.config.runroot.join("mounts").join(id);
            self.owned_mounts.push(stage);
        }
        if record.state != CREATED && record.state != RUNNING {
            // Exited: what is left is swept by pierd; creating: in progress.
            return;
        }
        let state = &record.state;
        if !runtime.runtime_dir.is_dir() {
            self.report(format!(
                "container {id}: {state} in the database, but its run dir {} is missing",
                runtime.runtime_dir.display()
            ));
        }
        if !self.host.is_alive(runtime.monitor()) {
            self.report(format!(
                "container {id}: {state} in the database, but its monitor (pid {}) is gone",
                runtime.monitor_pid
            ));
        }
        let runtime_state = runtime.runtime_root.join(id).join("state.json");
        if !runtime_state.is_file() {
            self.report(format!(
                "container {id}: {state} in the database, but the OCI runtime has no state for it ({} is missing)",
                runtime_state.display()
            ));
        }
        if !runtime.rootfs.as_os_str().is_empty() && !self.is_mounted(&runtime.rootfs) {
            self.report(format!(
                "container {id}: {state} in the database, but its root filesystem {} is not mounted",
                runtime.rootfs.display()
            ));
        }
    }

    /// What exists on the node for sandboxes and containers the database
    /// does not know.
    fn strays(&mut self, sandboxes: &HashSet<&str>, containers: &HashSet<&str>) {
        let runroot = self.config.runroot.clone();
        for (dir, known, what) in [
            (runroot.join("sandboxes"), sandboxes, "sandbox run dir"),
            (runroot.join("containers"), containers, "container run dir"),
        ] {
            for (name, path) in entries(&dir) {
                if !known.contains(name.as_str()) {
                    self.report(format!(
                        "{what} {} belongs to no {} in the database",
                        path.display(),
                        what.split(' ').next().unwrap_or_default()
                    ));
                }
            }
        }
        for kind in PIN_DIRS {
            for (name, path) in entries(&runroot.join(kind)) {
                if !sandboxes.contains(name.as_str()) {
                    let mounted = if self.host.is_pinned(&path) {
                        "pinned"
                    } else {
                        "not pinned"
                    };
                    self.report(format!(
                        "{kind} pin {} ({mounted}) belongs to no sandbox in the database",
                        path.display()
                    ));
                }
            }
        }
        for (name, handler) in &self.config.runtime.handlers {
            let (root, own_root) = self.config.runtime_root(name, handler);
            if !own_root {
                // A root the operator configured may hold other tools' containers.
                continue;
            }
            for (id, path) in entries(&root) {
                if containers.contains(id.as_str()) {
                    continue;
                }
                // State whose process is gone is a delete pierd has queued
                // (after an exit) or makes at its next start.
                if let Some(pid) = runtime_init(&path.join("state.json"))
                    .filter(|init| self.host.is_alive(*init))
                    .map(|init| init.pid)
                {
                    self.report(format!(
                        "OCI runtime state {} (process {pid} running) belongs to no container in the database",
                        path.display()
                    ));
                }
            }
        }
        let monitors = self.config.runroot.join("containers");
        for (pid, dir) in monitor_processes(&monitors) {
            let id = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            if !id.is_some_and(|id| containers.contains(id.as_str())) {
                self.report(format!(
                    "monitor process {pid} (run dir {}) belongs to no container in the database",
                    dir.display()
                ));
            }
        }
    }

    /// Mounts under the state root or the run root that no sandbox or
    /// container owns. The user namespace probe's scratch mounts live for
    /// the moment of the probe, while pierd starts.
    fn stray_mounts(&mut self) {
        let roots = [self.config.root.clone(), self.config.runroot.clone()];
        let probe = self.config.runroot.join("userns-probe");
        let strays: Vec<PathBuf> = self
            .mounts
            .iter()
            .filter(|m| roots.iter().any(|r| m.starts_with(r) && *m != r))
            .filter(|m| !m.starts_with(&probe))
            .filter(|m| !self.owned_mounts.iter().any(|o| m.starts_with(o)))
            .cloned()
            .collect();
        for mount in strays {
            self.report(format!(
                "mount {} belongs to no sandbox or container in the database",
                mount.display()
            ));
        }
    }
}

/// The entries of `dir` by name, without hidden ones (temp and trash).
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = read
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    found.sort();
    found
}

/// Mount points in this process's mount namespace, from `mountinfo`.
fn mount_points() -> std::io::Result<Vec<PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape(point)))
        .collect())
}

/// The kernel writes space, tab, newline and backslash in mount paths as
/// three octal digits after a backslash.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The init process an OCI runtime's `state.json` names (runc's
/// `init_process_pid` and `init_process_start`).
fn runtime_init(state: &Path) -> Option<Process> {
    let text = std::fs::read(state).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&text).ok()?;
    Some(Process {
        pid: i32::try_from(state.get("init_process_pid")?.as_i64()?).ok()?,
        start_time: state.get("init_process_start")?.as_u64()?,
    })
}

/// Monitor processes whose run dir lies under `dir`: (pid, run dir). A
/// monitor is told its run dir with `--runtime-dir`.
fn monitor_processes(dir: &Path) -> Vec<(i32, PathBuf)> {
    let mut found = Vec::new();
    for (pid, cmdline) in pier_proto::proc_stat::command_lines() {
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let run_dir = args
            .windows(2)
            .find(|w| w[0] == b"--runtime-dir")
            .map(|w| PathBuf::from(String::from_utf8_lossy(w[1]).into_owned()));
        if let Some(run_dir) = run_dir
            && run_dir.parent() == Some(dir)
        {
            found.push((pid, run_dir));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/tab\\011x\\134"), "/tab\tx\\");
        assert_eq!(unescape("/short\\04"), "/short\\04");
    }
}
