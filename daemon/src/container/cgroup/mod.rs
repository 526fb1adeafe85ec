//! A container's or a pod's cgroup and one reading of its accounting files,
//! for ContainerStats, PodSandboxStats and ListPodSandboxMetrics alike. A
//! container's cgroup is found through `/proc/<pid>/cgroup` (cgroupfs and
//! systemd layouts alike), a pod's from the cgroup parent kubelet gave it.
//! A reading opens each file once and takes every figure it holds.

use std::path::{Path, PathBuf};

mod leftover;
pub use leftover::{remove_empty, while_busy};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `cpuacct.stat` counts in USER_HZ ticks, which the kernel's ABI fixes at
/// 100 a second whatever its internal tick rate.
const NS_PER_USER_HZ_TICK: u64 = 10_000_000;

/// Where a cgroup's accounting files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// One directory per controller hierarchy. `cpu` (CFS throttling) and
    /// `pids` may be mounted nowhere.
    V1 {
        cpuacct: PathBuf,
        cpu: Option<PathBuf>,
        memory: PathBuf,
        pids: Option<PathBuf>,
    },
    /// The unified hierarchy: one directory holds every file.
    V2(PathBuf),
}

impl Cgroup {
    /// The cgroup a live process is accounted in.
    pub fn of_process(pid: i32) -> Option<Self> {
        let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Self::from_table(&table, Path::new(CGROUP_ROOT), super::spec::unified_host())
    }

    /// Parses a `/proc/<pid>/cgroup` table. On a hybrid host (v1 controllers
    /// with an empty v2 hierarchy beside them) the v1 controllers hold the
    /// accounting; the v2 line counts only on a v2-only host.
    fn from_table(table: &str, root: &Path, unified_host: bool) -> Option<Self> {
        let (mut cpuacct, mut cpu, mut memory, mut pids, mut unified) =
            (None, None, None, None, None);
        for line in table.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if controllers.is_empty() {
                unified = Some(root.join(path));
                continue;
            }
            // A hierarchy is mounted under its controller list ("cpu,cpuacct").
            let dir = root.join(controllers).join(path);
            for controller in controllers.split(',') {
                match controller {
                    "cpuacct" => cpuacct = Some(dir.clone()),
                    "cpu" => cpu = Some(dir.clone()),
                    "memory" => memory = Some(dir.clone()),
                    "pids" => pids = Some(dir.clone()),
                    _ => {}
                }
            }
        }
        match (cpuacct, memory, unified) {
            (Some(cpuacct), Some(memory), _) => Some(Self::V1 {
                cpuacct,
                cpu,
                memory,
                pids,
            }),
            (_, _, Some(dir)) if unified_host => Some(Self::V2(dir)),
            _ => None,
        }
    }

    /// A pod's own cgroup, from the cgroup parent kubelet gave it: a path
    /// for the cgroupfs driver (`/kubepods/burstable/pod<uid>`), a slice for
    /// the systemd driver (`kubepods-burstable-pod<uid>.slice`). `None` when
    /// the pod has none or it does not exist.
    pub fn of_parent(parent: &str) -> Option<Self> {
        Self::parent_in(parent, Path::new(CGROUP_ROOT), super::spec::unified_host())
    }

    fn parent_in(parent: &str, root: &Path, unified_host: bool) -> Option<Self> {
        let relative = match parent.strip_suffix(".slice") {
            Some(_) if !parent.contains('/') => expand_slice(parent)?,
            _ => PathBuf::from(parent.trim_start_matches('/')),
        };
        if relative.as_os_str().is_empty() {
            return None;
        }
        if unified_host {
            let dir = root.join(relative);
            return dir.is_dir().then_some(Self::V2(dir));
        }
        let memory = root.join("memory").join(&relative);
        let optional = |controller: &str| Some(root.join(controller).join(&relative));
        memory.is_dir().then(|| Self::V1 {
            cpuacct: root.join("cpuacct").join(&relative),
            cpu: optional("cpu"),
            memory,
            pids: optional("pids"),
        })
    }

    /// Reads the cgroup's files once each. A file that cannot be read (the
    /// cgroup just went away, a controller is not mounted, an older kernel)
    /// leaves its figures out.
    pub fn read(&self, detail: Detail) -> Sample {
        let timestamp = crate::time::now_ns();
        let mut sample = Sample {
            timestamp,
            ..Default::default()
        };
        match self {
            Self::V1 {
                cpuacct,
                cpu,
                memory,
                pids,
            } => read_v1(
                &mut sample,
                detail,
                cpuacct,
                cpu.as_deref(),
                memory,
                pids.as_deref(),
            ),
            Self::V2(dir) => read_v2(&mut sample, detail, dir),
        }
        sample
    }
}

/// How much of a cgroup to read: ContainerStats needs CPU and memory usage,
/// the CRI metrics everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    Usage,
    Full,
}

/// One reading of a cgroup. Every figure is absent when its file was not
/// read or did not have it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// When it was read, in nanoseconds since the epoch.
    pub timestamp: i64,
    pub cpu: Cpu,
    pub memory: Memory,
    /// Processes in the cgroup (`cgroup.procs`).
    pub processes: Option<u64>,
    /// Tasks in the cgroup, threads included (`pids.current`).
    pub threads: Option<u64>,
}

/// CPU time, in nanoseconds, and CFS bandwidth periods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    pub usage_ns: Option<u64>,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_ns: Option<u64>,
}

/// Memory, in bytes, and memory events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub usage: Option<u64>,
    pub max_usage: Option<u64>,
    pub inactive_file: Option<u64>,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    /// Times usage hit the limit (v1 `memory.failcnt`, v2 `max` in
    /// `memory.events`).
    pub failcnt: Option<u64>,
    /// Page faults of this cgroup alone, and of it and its descendants.
    pub pgfault: Option<u64>,
    pub pgfault_hierarchy: Option<u64>,
    pub pgmajfault: Option<u64>,
    pub pgmajfault_hierarchy: Option<u64>,
    /// Processes the kernel's OOM killer killed in the cgroup.
    pub oom_kills: Option<u64>,
}

impl Memory {
    /// What cannot be reclaimed under pressure, as kubelet and cAdvisor
    /// compute it: usage less the inactive file cache.
    pub fn working_set(&self) -> Option<u64> {
        self.usage
            .map(|used| used.saturating_sub(self.inactive_file.unwrap_or(0)))
    }
}

impl Sample {
    /// Adds the figures of `other` that add up (not peaks), for a pod
    /// without a cgroup of its own, whose usage is that of its containers.
    pub fn add(&mut self, other: &Sample) {
        fn add(total: &mut Option<u64>, part: Option<u64>) {
            if let Some(part) = part {
                *total = Some(total.unwrap_or(0).saturating_add(part));
            }
        }
        let (c, o) = (&mut self.cpu, &other.cpu);
        add(&mut c.usage_ns, o.usage_ns);
        add(&mut c.user_ns, o.user_ns);
        add(&mut c.system_ns, o.system_ns);
        add(&mut c.periods, o.periods);
        add(&mut c.throttled_periods, o.throttled_periods);
        add(&mut c.throttled_ns, o.throttled_ns);
        let (m, o) = (&mut self.memory, &other.memory);
        add(&mut m.usage, o.usage);
        add(&mut m.inactive_file, o.inactive_file);
        add(&mut m.rss, o.rss);
        add(&mut m.cache, o.cache);
        add(&mut m.mapped_file, o.mapped_file);
        add(&mut m.swap, o.swap);
        add(&mut m.failcnt, o.failcnt);
        add(&mut m.pgfault, o.pgfault);
        add(&mut m.pgfault_hierarchy, o.pgfault_hierarchy);
        add(&mut m.pgmajfault, o.pgmajfault);
        add(&mut m.pgmajfault_hierarchy, o.pgmajfault_hierarchy);
        add(&mut m.oom_kills, o.oom_kills);
        add(&mut self.processes, other.processes);
        add(&mut self.threads, other.threads);
    }
}

fn read_v1(
    sample: &mut Sample,
    detail: Detail,
    cpuacct: &Path,
    cpu: Option<&Path>,
    memory: &Path,
    pids: Option<&Path>,
) {
    let (c, m) = (&mut sample.cpu, &mut sample.memory);
    c.usage_ns = read_u64(&cpuacct.join("cpuacct.usage"));
    m.usage = read_u64(&memory.join("memory.usage_in_bytes"));
    for (key, value) in key_values(&read(&memory.join("memory.stat"))) {
        // The total_ figures include descendants, which a container's
        // cgroup normally has none of and a pod's cgroup always has.
        match key {
            "total_inactive_file" => m.inactive_file = Some(value),
            "total_rss" => m.rss = Some(value),
            "total_cache" => m.cache = Some(value),
            "total_mapped_file" => m.mapped_file = Some(value),
            "total_swap" => m.swap = Some(value),
            "pgfault" => m.pgfault = Some(value),
            "total_pgfault" => m.pgfault_hierarchy = Some(value),
            "pgmajfault" => m.pgmajfault = Some(value),
            "total_pgmajfault" => m.pgmajfault_hierarchy = Some(value),
            _ => {}
        }
    }
    if detail == Detail::Usage {
        return;
    }
    for (key, ticks) in key_values(&read(&cpuacct.join("cpuacct.stat"))) {
        match key {
            "user" => c.user_ns = Some(ticks.saturating_mul(NS_PER_USER_HZ_TICK)),
            "system" => c.system_ns = Some(ticks.saturating_mul(NS_PER_USER_HZ_TICK)),
            _ => {}
        }
    }
    if let Some(cpu) = cpu {
        for (key, value) in key_values(&read(&cpu.join("cpu.stat"))) {
            match key {
                "nr_periods" => c.periods = Some(value),
                "nr_throttled" => c.throttled_periods = Some(value),
                "throttled_time" => c.throttled_ns = Some(value),
                _ => {}
            }
        }
    }
    m.max_usage = read_u64(&memory.join("memory.max_usage_in_bytes"));
    m.failcnt = read_u64(&memory.join("memory.failcnt"));
    // `oom_kill` is there since Linux 4.13.
    m.oom_kills = key_values(&read(&memory.join("memory.oom_control")))
        .find_map(|(key, value)| (key == "oom_kill").then_some(value));
    sample.processes = count_lines(&memory.join("cgroup.procs"));
    sample.threads = pids.and_then(|dir| read_u64(&dir.join("pids.current")));
}

fn read_v2(sample: &mut Sample, detail: Detail, dir: &Path) {
    let (c, m) = (&mut sample.cpu, &mut sample.memory);
    let us = |value: u64| Some(value.saturating_mul(1000));
    for (key, value) in key_values(&read(&dir.join("cpu.stat"))) {
        match key {
            "usage_usec" => c.usage_ns = us(value),
            "user_usec" => c.user_ns = us(value),
            "system_usec" => c.system_ns = us(value),
            "nr_periods" => c.periods = Some(value),
            "nr_throttled" => c.throttled_periods = Some(value),
            "throttled_usec" => c.throttled_ns = us(value),
            _ => {}
        }
    }
    m.usage = read_u64(&dir.join("memory.current"));
    // v2 counts are hierarchical: a cgroup's own and its subtree's are one.
    for (key, value) in key_values(&read(&dir.join("memory.stat"))) {
        match key {
            "inactive_file" => m.inactive_file = Some(value),
            "anon" => m.rss = Some(value),
            "file" => m.cache = Some(value),
            "file_mapped" => m.mapped_file = Some(value),
            "pgfault" => (m.pgfault, m.pgfault_hierarchy) = (Some(value), Some(value)),
            "pgmajfault" => (m.pgmajfault, m.pgmajfault_hierarchy) = (Some(value), Some(value)),
            _ => {}
        }
    }
    if detail == Detail::Usage {
        return;
    }
    // `memory.peak` is there since Linux 5.19.
    m.max_usage = read_u64(&dir.join("memory.peak"));
    m.swap = read_u64(&dir.join("memory.swap.current"));
    for (key, value) in key_values(&read(&dir.join("memory.events"))) {
        match key {
            "max" => m.failcnt = Some(value),
            "oom_kill" => m.oom_kills = Some(value),
            _ => {}
        }
    }
    sample.processes = count_lines(&dir.join("cgroup.procs"));
    sample.threads = read_u64(&dir.join("pids.current"));
}

/// `kubepods-burstable-pod1.slice` → `kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod1.slice`: systemd nests a slice in the slices its
/// dash-separated prefixes name. `None` for a name systemd would refuse.
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let stem = slice.strip_suffix(".slice")?;
    if stem == "-" {
        return Some(PathBuf::new());
    }
    if stem.is_empty() || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return None;
    }
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Some(path)
}

/// A file's text; empty when it cannot be read.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path).trim().parse().ok()
}

/// The `key value` lines of a flat-keyed cgroup file such as memory.stat.
fn key_values(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let (key, value) = line.split_once(' ')?;
        Some((key, value.trim().parse().ok()?))
    })
}

/// The number of entries of a list file such as cgroup.procs.
fn count_lines(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
}

#[cfg(test)]
mod tests;
