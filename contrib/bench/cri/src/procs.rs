//! The processes a runtime runs for its pods, found from /proc: the daemon,
//! every process whose command line names the runtime's private dir
//! (pier's monitors, containerd's shims and their runc), and all their
//! descendants, but not the containers' own `sleep` processes: the
//! workload costs the same on both.

use std::collections::HashSet;
use std::path::Path;

/// (pid, parent pid, command line) of every process.
fn all_processes() -> Vec<(u32, u32, String)> {
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1)?.parse().ok());
        let cmdline = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
        procs.push((pid, ppid.unwrap_or(0), cmdline.replace('\0', " ")));
    }
    procs
}

/// The runtime's processes: the daemon `daemon`, those naming `dir`, and
/// their descendants, less the workload.
pub fn runtime_processes(daemon: u32, dir: &Path) -> Vec<u32> {
    let dir = dir.display().to_string();
    let procs = all_processes();
    let mut members: HashSet<u32> = procs
        .iter()
        .filter(|(pid, _, cmd)| *pid == daemon || cmd.contains(&dir))
        .map(|(pid, _, _)| *pid)
        .collect();
    loop {
        let before = members.len();
        for (pid, ppid, _) in &procs {
            if members.contains(ppid) {
                members.insert(*pid);
            }
        }
        if members.len() == before {
            break;
        }
    }
    let workload: HashSet<u32> = procs
        .iter()
        .filter(|(_, _, cmd)| cmd.starts_with("sleep "))
        .map(|(pid, _, _)| *pid)
        .collect();
    members
        .into_iter()
        .filter(|pid| !workload.contains(pid))
        .collect()
}

/// PSS of the runtime's processes, kB.
pub fn pss_kb(daemon: u32, dir: &Path) -> u64 {
    by_kind(daemon, dir).iter().map(|k| k.pss).sum()
}

/// The runtime's processes of one kind (one executable: the daemon, a
/// monitor, a shim, the pod's infra or pause process) and their PSS.
#[derive(Debug, Clone, Default)]
pub struct Kind {
    pub name: String,
    pub count: u64,
    pub pss: u64,
}

/// PSS of the runtime's processes grouped by executable name, largest
/// first: where a per-pod figure comes from.
pub fn by_kind(daemon: u32, dir: &Path) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = Vec::new();
    for pid in runtime_processes(daemon, dir) {
        let pss = crate::Memory::of(pid).pss;
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        match kinds.iter_mut().find(|k| k.name == name) {
            Some(kind) => {
                kind.count += 1;
                kind.pss += pss;
            }
            None => kinds.push(Kind {
                name,
                count: 1,
                pss,
            }),
        }
    }
    kinds.sort_by_key(|k| std::cmp::Reverse(k.pss));
    kinds
}

/// CPU time the runtime's processes have used, in clock ticks: their own
/// (utime, stime) and that of the children they reaped (cutime, cstime),
/// so runc processes and helpers that came and went are counted in the
/// parent that waited for them. A process that exits unreaped by a member
/// (none does while pods only run execs) would be missed.
pub fn cpu_ticks(daemon: u32, dir: &Path) -> u64 {
    runtime_processes(daemon, dir)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let after = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .collect::<Vec<_>>();
            // Fields 14-17 of proc(5), counted from 3 after the command.
            let field = |n: usize| after.get(n - 3)?.parse::<u64>().ok();
            Some(field(14)? + field(15)? + field(16)? + field(17)?)
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(100)
}
