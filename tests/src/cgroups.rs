//! Cgroups as the tests see them, read here rather than through pierd: a
//! container's, found from its process's `/proc/<pid>/cgroup`, and a pod's
//! cgroup parent, which a test makes and removes on drop. v1 and v2 alike.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Whether this host runs the unified (v2-only) hierarchy.
pub fn unified_host() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// The accounting files of one cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// v1: the memory and cpuacct hierarchies' directories; v2: the same one.
    memory: PathBuf,
    cpu: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// The cgroup process `pid` is in.
    pub fn of_process(pid: i64) -> Self {
        let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"));
        let dir = |wanted: &str| {
            table.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                let found = if wanted.is_empty() {
                    controllers.is_empty()
                } else {
                    controllers.split(',').any(|c| c == wanted)
                };
                found.then(|| {
                    Path::new(ROOT)
                        .join(controllers)
                        .join(path.trim_start_matches('/'))
                })
            })
        };
        if unified_host() {
            let dir = dir("").expect("a v2 line in /proc/<pid>/cgroup");
            return Self {
                memory: dir.clone(),
                cpu: dir,
                v2: true,
            };
        }
        Self {
            memory: dir("memory").expect("a memory hierarchy"),
            cpu: dir("cpuacct").expect("a cpuacct hierarchy"),
            v2: false,
        }
    }

    /// The cgroup of a cgroupfs-style parent path such as `/pier-tests-1`.
    pub fn at(parent: &str) -> Self {
        let relative = parent.trim_start_matches('/');
        if unified_host() {
            let dir = Path::new(ROOT).join(relative);
            return Self {
                memory: dir.clone(),
                cpu: dir,
                v2: true,
            };
        }
        Self {
            memory: Path::new(ROOT).join("memory").join(relative),
            cpu: Path::new(ROOT).join("cpuacct").join(relative),
            v2: false,
        }
    }

    pub fn is_v2(&self) -> bool {
        self.v2
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
    }

    fn number(dir: &Path, file: &str) -> u64 {
        let text = Self::read(dir, file);
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{file} is {text:?}: {e}"))
    }

    /// The value of `key` in a flat-keyed file such as memory.stat.
    fn keyed(dir: &Path, file: &str, key: &str) -> u64 {
        let text = Self::read(dir, file);
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {file}: {text}"))
    }

    /// Bytes of memory in use (`memory.usage_in_bytes`, `memory.current`).
    pub fn memory_usage(&self) -> u64 {
        match self.v2 {
            true => Self::number(&self.memory, "memory.current"),
            false => Self::number(&self.memory, "memory.usage_in_bytes"),
        }
    }

    /// CPU time used, in nanoseconds.
    pub fn cpu_usage_ns(&self) -> u64 {
        match self.v2 {
            true => Self::keyed(&self.cpu, "cpu.stat", "usage_usec") * 1000,
            false => Self::number(&self.cpu, "cpuacct.usage"),
        }
    }

    /// Times the usage hit the limit (`memory.failcnt`, `max` of memory.events).
    pub fn memory_failcnt(&self) -> u64 {
        match self.v2 {
            true => Self::keyed(&self.memory, "memory.events", "max"),
            false => Self::number(&self.memory, "memory.failcnt"),
        }
    }

    /// Processes the OOM killer killed in the cgroup.
    pub fn oom_kills(&self) -> u64 {
        match self.v2 {
            true => Self::keyed(&self.memory, "memory.events", "oom_kill"),
            false => Self::keyed(&self.memory, "memory.oom_control", "oom_kill"),
        }
    }

    /// Anonymous memory (`total_rss`, `anon`).
    pub fn rss(&self) -> u64 {
        match self.v2 {
            true => Self::keyed(&self.memory, "memory.stat", "anon"),
            false => Self::keyed(&self.memory, "memory.stat", "total_rss"),
        }
    }

    /// Page cache (`total_cache`, `file`).
    pub fn cache(&self) -> u64 {
        match self.v2 {
            true => Self::keyed(&self.memory, "memory.stat", "file"),
            false => Self::keyed(&self.memory, "memory.stat", "total_cache"),
        }
    }

    /// Page cache the kernel would reclaim first (`total_inactive_file`,
    /// `inactive_file`).
    pub fn inactive_file(&self) -> u64 {
        match self.v2 {
            true => Self::keyed(&self.memory, "memory.stat", "inactive_file"),
            false => Self::keyed(&self.memory, "memory.stat", "total_inactive_file"),
        }
    }

    /// The processes in the cgroup itself.
    pub fn processes(&self) -> u64 {
        Self::read(&self.memory, "cgroup.procs").lines().count() as u64
    }
}

/// A cgroup parent for a test pod, as kubelet gives every pod one. runc
/// removes the containers' cgroups below it but not the parent it made:
/// that goes on drop.
pub struct CgroupParent(pub String);

impl CgroupParent {
    /// A parent unique to this test process and `tag`.
    pub fn new(tag: &str) -> Self {
        Self(format!("/pier-{tag}-{}", std::process::id()))
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let name = self.0.trim_start_matches('/');
        let root = Path::new(ROOT);
        // v2: the unified root; v1: each hierarchy below it.
        let _ = std::fs::remove_dir(root.join(name));
        for hierarchy in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(hierarchy.path().join(name));
        }
    }
}
