//! Cgroup resources and the OOM score adjustment.

use k8s_cri::v1::LinuxContainerResources;
use serde_json::{Map, Value, json};

use crate::config::CgroupManager;

/// The container's cgroup: under the pod's cgroup parent (kubelet's
/// `/kubepods/...` for cgroupfs, a `.slice` for systemd), `/pier` otherwise.
pub fn cgroups_path(manager: CgroupManager, parent: &str, id: &str) -> String {
    match manager {
        CgroupManager::Systemd => {
            let slice = if parent.is_empty() {
                "system.slice"
            } else {
                parent
            };
            format!("{slice}:pier:{id}")
        }
        CgroupManager::Cgroupfs => {
            let parent = if parent.is_empty() {
                "/pier"
            } else {
                parent.trim_end_matches('/')
            };
            format!("{parent}/pier-{id}")
        }
    }
}

/// Whether this host runs the unified (v2-only) cgroup hierarchy.
pub fn unified_host() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// `linux.resources` for the CRI resources.
pub fn resources(r: Option<&LinuxContainerResources>, devices: Vec<Value>) -> Value {
    let mut out = Map::new();
    out.insert("devices".into(), Value::Array(devices));
    let Some(r) = r else {
        return Value::Object(out);
    };
    let mut cpu = Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    if r.memory_limit_in_bytes > 0 {
        let mut memory = json!({ "limit": r.memory_limit_in_bytes });
        if r.memory_swap_limit_in_bytes > 0 {
            memory["swap"] = json!(r.memory_swap_limit_in_bytes);
        }
        out.insert("memory".into(), memory);
    }
    if !r.hugepage_limits.is_empty() {
        let limits: Vec<Value> = r
            .hugepage_limits
            .iter()
            .map(|h| json!({ "pageSize": h.page_size, "limit": h.limit }))
            .collect();
        out.insert("hugepageLimits".into(), Value::Array(limits));
    }
    // runc refuses `unified` on a v1 host; the keys are v2 file names anyway.
    if !r.unified.is_empty() {
        if unified_host() {
            out.insert("unified".into(), json!(r.unified));
        } else {
            tracing::warn!(keys = ?r.unified.keys(), "ignoring unified cgroup settings on a cgroup v1 host");
        }
    }
    Value::Object(out)
}

/// The OOM score adjustment runc can actually apply. Without
/// CAP_SYS_RESOURCE a process may not lower its score below its own, and
/// `runc create` then fails; like containerd's `restrict_oom_score_adj`,
/// clamp to pierd's own score in that case.
pub fn oom_score_adj(wanted: i64) -> i64 {
    let wanted = wanted.clamp(-1000, 1000);
    if has_sys_resource() {
        return wanted;
    }
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    wanted.max(own)
}

fn has_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_follow_the_manager() {
        assert_eq!(
            cgroups_path(CgroupManager::Cgroupfs, "", "abc"),
            "/pier/pier-abc"
        );
        assert_eq!(
            cgroups_path(CgroupManager::Cgroupfs, "/kubepods/pod1/", "abc"),
            "/kubepods/pod1/pier-abc"
        );
        assert_eq!(
            cgroups_path(CgroupManager::Systemd, "kubepods.slice", "abc"),
            "kubepods.slice:pier:abc"
        );
    }

    #[test]
    fn oom_score_adj_is_never_below_what_runc_may_set() {
        let floor = oom_score_adj(-1000);
        assert!(floor >= -1000);
        assert_eq!(oom_score_adj(1000), 1000);
        assert_eq!(oom_score_adj(5000), 1000, "clamped to the kernel's range");
    }

    #[test]
    fn memory_and_cpu_limits_map_to_oci_names() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let v = resources(Some(&r), Vec::new());
        assert_eq!(v["cpu"]["shares"], 512);
        assert_eq!(v["cpu"]["quota"], 50_000);
        assert_eq!(v["cpu"]["cpus"], "0");
        assert_eq!(v["memory"]["limit"], 64 << 20);
    }
}
