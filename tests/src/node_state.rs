//! What one test pierd has made on the node, read from the kernel and the
//! file system rather than through pierd: mounts and namespace pins under its
//! temp dir, cgroups below a pod cgroup parent, the processes tied to either,
//! the OCI runtime's containers, the CNI IPAM leases and the files. A test
//! snapshots the node before it starts and compares after it removed
//! everything, and checks that each thing it finds belongs to an object the
//! CRI lists (objects are named by their 64-hex ids, which is what pierd
//! puts in every path, process argument and lease).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where to look for one pierd's footprint.
#[derive(Debug, Clone)]
pub struct NodeScope {
    /// The pierd's temp dir (`Pierd::dir`): state and run roots, CNI state.
    pub dir: PathBuf,
    /// The OCI runtime's state root pierd uses (`runc --root`).
    pub runc_root: PathBuf,
    /// The cgroup parent the test's pods name, without the leading `/`.
    pub cgroup_parent: Option<String>,
    /// pierd's own pid, left out of the processes (it changes on restart).
    pub pierd_pid: Option<u32>,
}

/// A process tied to the scope, without its pid (which a restart changes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessInfo {
    pub comm: String,
    pub cmdline: String,
    /// The cgroup path it is in, where that lies below the cgroup parent.
    pub cgroup: String,
    /// Its root directory, where that lies below the temp dir.
    pub root: String,
}

impl ProcessInfo {
    /// Everything known of it in one line, to find the object it belongs to.
    pub fn describe(&self) -> String {
        format!(
            "{} [{}] cgroup={} root={}",
            self.comm, self.cmdline, self.cgroup, self.root
        )
    }
}

/// The footprint itself; paths are relative to the temp dir.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    pub mounts: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
    pub processes: BTreeSet<ProcessInfo>,
    /// The OCI runtime's containers: id → status (`created`, `running`...).
    pub runtime_containers: BTreeMap<String, String>,
    /// IPAM lease (address) → the CNI container id that holds it.
    pub leases: BTreeMap<String, String>,
    pub files: BTreeSet<String>,
}

impl NodeState {
    /// Reads the node now.
    pub fn capture(scope: &NodeScope) -> Self {
        let mounts = mounts_under(&scope.dir);
        let mut files = BTreeSet::new();
        walk(&scope.dir, &scope.dir, &mounts, &mut files);
        Self {
            cgroups: cgroups_below(scope.cgroup_parent.as_deref()),
            processes: processes(scope),
            runtime_containers: runtime_containers(&scope.runc_root),
            leases: leases(&scope.dir.join("cni-state")),
            files,
            mounts,
        }
    }

    /// Captures until the node equals `want` (clean-up that runs in the
    /// background, such as the runtime's delete after an exit, gets
    /// `within` to finish); returns the last capture.
    pub fn settle_to(scope: &NodeScope, want: &NodeState, within: Duration) -> Self {
        let deadline = Instant::now() + within;
        loop {
            let now = Self::capture(scope);
            if &now == want || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What differs from `before`, one line per item, empty when nothing.
    pub fn diff(&self, before: &NodeState) -> Vec<String> {
        let mut out = Vec::new();
        diff_sets("mount", &before.mounts, &self.mounts, &mut out);
        diff_sets("cgroup", &before.cgroups, &self.cgroups, &mut out);
        let describe = |s: &BTreeSet<ProcessInfo>| {
            s.iter().map(ProcessInfo::describe).collect::<BTreeSet<_>>()
        };
        diff_sets(
            "process",
            &describe(&before.processes),
            &describe(&self.processes),
            &mut out,
        );
        let runtime = |m: &BTreeMap<String, String>| m.keys().cloned().collect();
        diff_sets(
            "runtime container",
            &runtime(&before.runtime_containers),
            &runtime(&self.runtime_containers),
            &mut out,
        );
        let leases = |m: &BTreeMap<String, String>| {
            m.iter().map(|(a, o)| format!("{a} held by {o}")).collect()
        };
        diff_sets(
            "IPAM lease",
            &leases(&before.leases),
            &leases(&self.leases),
            &mut out,
        );
        diff_sets("file", &before.files, &self.files, &mut out);
        out
    }

    /// Every item with the object id it names, by kind: what a test checks
    /// against the ids the CRI lists. Items that name no id are left out.
    pub fn owned_items(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        let mut add = |kind: &'static str, item: String| {
            if let Some(id) = object_id(&item) {
                out.push((kind, item, id));
            }
        };
        self.mounts.iter().for_each(|m| add("mount", m.clone()));
        self.cgroups.iter().for_each(|c| add("cgroup", c.clone()));
        self.processes
            .iter()
            .for_each(|p| add("process", p.describe()));
        self.runtime_containers
            .keys()
            .for_each(|c| add("runtime container", c.clone()));
        for (address, owner) in &self.leases {
            add("IPAM lease", format!("{address} held by {owner}"));
        }
        self.files.iter().for_each(|f| add("file", f.clone()));
        out
    }
}

fn diff_sets(
    kind: &str,
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
    out: &mut Vec<String>,
) {
    for gone in before.difference(after) {
        out.push(format!("{kind} lost: {gone}"));
    }
    for new in after.difference(before) {
        out.push(format!("{kind} leaked: {new}"));
    }
}

/// The first 64-hex-digit run in `text`: a pod or container id.
pub fn object_id(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let run = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .count();
        if run >= 64 {
            return Some(text[start..start + 64].to_owned());
        }
        start += run.max(1);
    }
    None
}

/// Mount points at or below `dir`, relative to it.
fn mounts_under(dir: &Path) -> BTreeSet<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter_map(|m| Path::new(m).strip_prefix(dir).ok().map(rel))
        .collect()
}

fn rel(path: &Path) -> String {
    path.display().to_string()
}

/// Files that change in normal operation, not things pierd made: its log and
/// database, and the CNI IPAM bookkeeping that outlives every lease.
fn is_volatile(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    rel == "pierd.log"
        || name.starts_with("pier.db")
        || (rel.starts_with("cni-state/")
            && (name == "lock" || name.starts_with("last_reserved_ip")))
}

/// Every path below `dir`, not descending into mount points (a mounted
/// rootfs is counted as a mount, not as its files). Directories count only
/// where they name an object: pierd makes shared ones (`run/netns`) on
/// first use and keeps them.
fn walk(base: &Path, dir: &Path, mounts: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(base) else {
            continue;
        };
        let relative = rel(relative);
        if is_volatile(&relative) {
            continue;
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || object_id(&relative).is_some() {
            out.insert(relative.clone());
        }
        if is_dir && !mounts.contains(&relative) {
            walk(base, &path, mounts, out);
        }
    }
}

/// Cgroup directories below `parent` in every hierarchy, as
/// `<hierarchy>/<path below the parent>`.
fn cgroups_below(parent: Option<&str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(parent) = parent else {
        return out;
    };
    let root = Path::new(CGROUP_ROOT);
    let mut hierarchies = vec![(String::from("."), root.to_owned())];
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if entry.path().join("cgroup.procs").exists() {
            hierarchies.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    for (name, hierarchy) in hierarchies {
        let top = hierarchy.join(parent);
        let mut stack = vec![top.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let below = entry.path().strip_prefix(&top).map(rel).unwrap_or_default();
                    out.insert(format!("{name}/{below}"));
                    stack.push(entry.path());
                }
            }
        }
    }
    out
}

/// Processes whose command line names the temp dir, whose root lies below
/// it (a pod's infra), or that sit in a cgroup below the parent.
fn processes(scope: &NodeScope) -> BTreeSet<ProcessInfo> {
    let dir = scope.dir.display().to_string();
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Some(pid) == scope.pierd_pid || pid == std::process::id() {
            continue;
        }
        let proc_dir = entry.path();
        let Ok(raw) = std::fs::read(proc_dir.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_owned();
        let root = std::fs::read_link(proc_dir.join("root"))
            .ok()
            .and_then(|r| r.strip_prefix(&scope.dir).ok().map(rel))
            .unwrap_or_default();
        let cgroup = scope
            .cgroup_parent
            .as_deref()
            .and_then(|parent| {
                let table = std::fs::read_to_string(proc_dir.join("cgroup")).ok()?;
                table
                    .lines()
                    .filter_map(|l| l.splitn(3, ':').nth(2))
                    .find(|path| path.trim_start_matches('/').starts_with(parent))
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        if !cmdline.contains(&dir) && root.is_empty() && cgroup.is_empty() {
            continue;
        }
        let comm = std::fs::read_to_string(proc_dir.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        out.insert(ProcessInfo {
            comm,
            cmdline,
            cgroup,
            root,
        });
    }
    out
}

/// The containers `runc list` knows under `root`, with their status.
fn runtime_containers(root: &Path) -> BTreeMap<String, String> {
    if !root.exists() {
        return BTreeMap::new();
    }
    let output = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "--format", "json"])
        .output()
        .expect("run runc list");
    assert!(
        output.status.success(),
        "runc --root {} list: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let list: Option<Vec<serde_json::Value>> =
        serde_json::from_slice(&output.stdout).expect("runc list's JSON");
    list.unwrap_or_default()
        .iter()
        .map(|c| {
            let field = |name: &str| c[name].as_str().unwrap_or_default().to_owned();
            (field("id"), field("status"))
        })
        .collect()
}

/// host-local's leases: one file per address in `<state>/<network>/`,
/// holding the CNI container id and interface.
fn leases(state: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for network in std::fs::read_dir(state).into_iter().flatten().flatten() {
        for lease in std::fs::read_dir(network.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = lease.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_err() {
                continue;
            }
            let owner = std::fs::read_to_string(lease.path()).unwrap_or_default();
            let owner = owner.lines().next().unwrap_or_default().trim().to_owned();
            out.insert(name, owner);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::object_id;

    #[test]
    fn object_ids_are_found_inside_paths_and_names() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(object_id(&format!("run/netns/{id}")), Some(id.clone()));
        assert_eq!(object_id(&format!("./pier-{id}")), Some(id.clone()));
        assert_eq!(object_id("run/netns/abc"), None);
        assert_eq!(
            object_id(&format!("root/layers/.tmp-{}", "f".repeat(63))),
            None
        );
    }
}
