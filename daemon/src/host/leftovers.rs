//! What a create that pierd did not see through can leave running: the
//! container's monitor and, under it, the runtime's `create` and the
//! container's init. None of them may have a pid in the database yet (the
//! create records them only once the monitor reports), so they are found by
//! the container id on their command lines.
//!
//! They must be gone before the container's rootfs is: a `runc create` that
//! outlives the crash goes on making mount points in the rootfs directory
//! while it is unmounted and removed (seen in the crash tests as
//! `merged/dev`, `merged/etc/hosts`, … left behind).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use pier_proto::proc_stat;

use super::Process;

/// How long the killed processes get to end; SIGKILL takes effect once a
/// process leaves the system call it is in, which a mount may make slow.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// Kills every process whose arguments include `id` (the monitor is told
/// `--id <id>`, runc `create … <id>`) together with the session the monitor
/// made for itself, which holds what the runtime started (`runc init`),
/// and waits until all of them have ended. Returns what it killed.
/// Blocking: it walks `/proc` and sleeps.
pub fn end_interrupted_create(id: &str) -> Vec<Process> {
    let me = std::process::id() as i32;
    let own_session = proc_stat::group_and_session(me).map(|(_, session)| session);
    let mut targets = Vec::new();
    let mut sessions = Vec::new();
    for (pid, cmdline) in proc_stat::command_lines() {
        if pid == me || !cmdline.split(|&b| b == 0).any(|arg| arg == id.as_bytes()) {
            continue;
        }
        targets.push(pid);
        // Only a session of its own is the monitor's to take down: before
        // its setsid the monitor still shares pierd's.
        // Session 0 is one led from outside our pid namespace, and
        // killpg(0) would signal our own group: never a target.
        if let Some((group, session)) = proc_stat::group_and_session(pid)
            && session > 0
            && group == session
            && Some(session) != own_session
            && !sessions.contains(&session)
        {
            sessions.push(session);
        }
    }
    if !sessions.is_empty() {
        for (pid, _) in proc_stat::command_lines() {
            if pid != me
                && !targets.contains(&pid)
                && proc_stat::group_and_session(pid).is_some_and(|(_, s)| sessions.contains(&s))
            {
                targets.push(pid);
            }
        }
    }
    let killed: Vec<Process> = targets
        .into_iter()
        .filter_map(|pid| {
            let start_time = proc_stat::start_time(pid)?;
            Some(Process { pid, start_time })
        })
        .collect();
    for session in &sessions {
        let _ = killpg(Pid::from_raw(*session), Signal::SIGKILL);
    }
    for process in &killed {
        let _ = kill(Pid::from_raw(process.pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + GONE_WITHIN;
    while killed
        .iter()
        .any(|p| proc_stat::is_running(p.pid, p.start_time))
    {
        if Instant::now() > deadline {
            tracing::warn!(container_id = %id, "processes of an interrupted create outlived SIGKILL");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn kills_the_processes_that_name_the_container_and_their_session() {
        let id = format!("{:064x}", u128::from(std::process::id()) << 20 | 0xabcde);
        // A stand-in monitor: its own session (setsid), the id among its
        // arguments, and a child that does not name the id, as runc init.
        let mut leader = Command::new("setsid")
            .args(["--wait", "/bin/sh", "-c", "sleep 60 & wait", "monitor"])
            .arg(&id)
            .spawn()
            .unwrap_or_else(|e| panic!("setsid: {e}"));
        let bystander = Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap_or_else(|e| panic!("sleep: {e}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let child = loop {
            let sleeper = proc_stat::command_lines().find(|(pid, cmdline)| {
                cmdline.starts_with(b"sleep\x0060")
                    && proc_stat::parent_pid(*pid).is_some_and(|parent| {
                        proc_stat::command_lines().any(|(p, c)| {
                            p == parent && c.split(|&b| b == 0).any(|a| a == id.as_bytes())
                        })
                    })
            });
            if let Some((pid, _)) = sleeper {
                break pid;
            }
            assert!(Instant::now() < deadline, "the stand-in starts its child");
            std::thread::sleep(Duration::from_millis(10));
        };
        let killed = end_interrupted_create(&id);
        let pids: Vec<i32> = killed.iter().map(|p| p.pid).collect();
        assert!(pids.contains(&child), "{pids:?} lacks the child {child}");
        assert!(!pids.contains(&(bystander.id() as i32)));
        assert!(!pids.contains(&(std::process::id() as i32)));
        assert!(
            killed
                .iter()
                .all(|p| !proc_stat::is_running(p.pid, p.start_time))
        );
        let _ = leader.wait();
        let mut bystander = bystander;
        assert!(bystander.try_wait().ok().flatten().is_none(), "untouched");
        let _ = bystander.kill();
        let _ = bystander.wait();
    }
}
