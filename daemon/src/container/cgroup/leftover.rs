//! Removing the cgroup a runtime made for a container it never finished
//! creating. `runc delete` removes a container's cgroups only when runc
//! got as far as writing its state; a `runc create` killed before that
//! (pierd crashed during the create and its next start ended it) leaves the
//! directories behind, one per v1 hierarchy.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::CGROUP_ROOT;

/// How long a cgroup that tasks still exiting keep busy is retried, as
/// runc retries it: a killed task can hold its cgroup for a moment after
/// it shows as a zombie.
const BUSY_FOR: Duration = Duration::from_millis(500);

/// Runs `remove` until it succeeds, fails otherwise than EBUSY, or
/// `BUSY_FOR` has passed.
pub fn while_busy(mut remove: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    let deadline = Instant::now() + BUSY_FOR;
    loop {
        match remove() {
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Removes the empty cgroup at `cgroups_path` (the spec's
/// `linux.cgroupsPath`, a cgroupfs path) from every hierarchy it is in. A
/// cgroup that still holds a process stays (rmdir refuses it). A systemd
/// path (`slice:prefix:name`) names a unit, not a directory: nothing to do.
pub fn remove_empty(cgroups_path: &str) {
    remove_empty_in(
        Path::new(CGROUP_ROOT),
        cgroups_path,
        super::super::spec::unified_host(),
    );
}

fn remove_empty_in(root: &Path, cgroups_path: &str, unified_host: bool) {
    if cgroups_path.contains(':') {
        return;
    }
    let relative = cgroups_path.trim_start_matches('/');
    if relative.is_empty() || relative.split('/').any(|part| part == "..") {
        return;
    }
    let hierarchies: Vec<_> = if unified_host {
        vec![root.to_owned()]
    } else {
        // Each v1 controller hierarchy, and the named ones (systemd, the
        // unified one beside them on a hybrid host).
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .collect()
    };
    for hierarchy in hierarchies {
        let dir = hierarchy.join(relative);
        match while_busy(|| std::fs::remove_dir(&dir)) {
            Ok(()) => {
                tracing::info!(cgroup = %dir.display(), "removed a cgroup an interrupted create left")
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cgroup an interrupted create left")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A plain directory tree stands in for the cgroup mounts: rmdir of an
    // empty directory is what the kernel's cgroupfs allows too.
    #[test]
    fn removes_the_directory_from_every_hierarchy() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for hierarchy in ["memory", "cpu,cpuacct", "unified"] {
            std::fs::create_dir_all(root.path().join(hierarchy).join("kubepods/pier-abc"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let busy = root.path().join("pids/kubepods/pier-abc");
        std::fs::create_dir_all(busy.join("child")).unwrap_or_else(|e| panic!("{e}"));
        remove_empty_in(root.path(), "/kubepods/pier-abc", false);
        for hierarchy in ["memory", "cpu,cpuacct", "unified"] {
            assert!(
                !root
                    .path()
                    .join(hierarchy)
                    .join("kubepods/pier-abc")
                    .exists()
            );
            assert!(
                root.path().join(hierarchy).join("kubepods").exists(),
                "parent kept"
            );
        }
        assert!(busy.exists(), "a cgroup that is not empty stays");
    }

    #[test]
    fn unified_host_and_paths_it_refuses() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = root.path().join("kubepods/pier-abc");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        remove_empty_in(root.path(), "kubepods:pier:abc", true);
        remove_empty_in(root.path(), "/kubepods/../kubepods/pier-abc", true);
        remove_empty_in(root.path(), "/", true);
        assert!(dir.exists());
        remove_empty_in(root.path(), "/kubepods/pier-abc", true);
        assert!(!dir.exists());
    }
}
