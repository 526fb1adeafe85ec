//! Killing a process together with everything it started.
//!
//! A timed-out exec may have children (`sh -c 'a & b'`): killing the exec'd
//! process alone leaves them running in the container, re-parented to its
//! init and out of our reach. This kernel has no
//! `/proc/PID/task/TID/children`, so the tree is found by scanning the
//! parent pid of every process in `/proc`.
//!
//! Every process found is stopped before the next scan: a stopped process
//! cannot fork, so the scans converge, and a stopped process cannot exit
//! either, so none of the pids found is reaped and reused before the final
//! SIGKILL. The root must be our own unreaped child (its pid cannot be
//! reused while we have not waited for it).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pier_proto::proc_stat;

/// Scans before giving up on a tree that keeps growing (a fork bomb that
/// outruns the stops); what was found by then is killed all the same.
const MAX_SCANS: usize = 32;

/// SIGKILL `root` and all its descendants.
pub fn kill_tree(root: i32) {
    let mut tree = vec![root];
    let _ = kill(Pid::from_raw(root), Signal::SIGSTOP);
    for _ in 0..MAX_SCANS {
        let found = children_of(&tree);
        if found.is_empty() {
            break;
        }
        for &pid in &found {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        }
        tree.extend(found);
    }
    for &pid in &tree {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Processes whose parent is in `tree` and that are not in it yet.
fn children_of(tree: &[i32]) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !tree.contains(pid))
        .filter(|&pid| proc_stat::parent_pid(pid).is_some_and(|pp| tree.contains(&pp)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn kills_the_grandchildren_too() {
        // The shell starts two sleeps in the background and waits: both
        // are its children, and the test's grandchildren.
        let mut sh = Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 1000 & sleep 1000 & wait")
            .spawn()
            .expect("spawn sh");
        let root = sh.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while children_of(&[root]).len() < 2 {
            assert!(Instant::now() < deadline, "sleeps never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let kids = children_of(&[root]);
        kill_tree(root);
        let status = sh.wait().expect("wait sh");
        assert!(
            status.code().is_none(),
            "the shell was not killed: {status}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        // The sleeps were re-parented (to init or a subreaper) and reaped
        // there; they must be gone or dead.
        for pid in kids {
            loop {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                if stat.is_empty() || stat.contains(") Z") || !stat.contains("sleep") {
                    break;
                }
                assert!(Instant::now() < deadline, "{pid} still runs: {stat}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
