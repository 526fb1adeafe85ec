//! Cgroup limits: CreateContainer's and UpdateContainerResources'.
//!
//! The bounds are the kernel's (CFS bandwidth, cpu.shares, oom_score_adj)
//! and kubelet's (it never sends a negative limit); values outside them
//! would fail in `runc create` or `runc update`, or be silently clamped.

use k8s_cri::v1::LinuxContainerResources;

use super::{invalid, no_nul, quote};
use crate::error::Error;

const CPU_PERIOD: &str = "linux.resources.cpu_period";
const CPU_QUOTA: &str = "linux.resources.cpu_quota";
const CPU_SHARES: &str = "linux.resources.cpu_shares";
const MEMORY: &str = "linux.resources.memory_limit_in_bytes";
const SWAP: &str = "linux.resources.memory_swap_limit_in_bytes";
const OOM: &str = "linux.resources.oom_score_adj";
const CPUS: &str = "linux.resources.cpuset_cpus";
const MEMS: &str = "linux.resources.cpuset_mems";
const HUGEPAGES: &str = "linux.resources.hugepage_limits";
const UNIFIED: &str = "linux.resources.unified";

/// The CFS period the kernel accepts, in microseconds (1 ms to 1 s).
const PERIOD_US: std::ops::RangeInclusive<i64> = 1_000..=1_000_000;
/// The smallest CFS quota, and the largest (`max_cfs_runtime`, 2^44-1 us).
const QUOTA_US: std::ops::RangeInclusive<i64> = 1_000..=(1 << 44) - 1;
/// cpu.shares as kubelet computes them (`MaxShares`); 0 means unset.
const SHARES_MAX: i64 = 262_144;

/// Refuses resources no kernel would apply; 0 still means "not set".
pub fn resources(r: &LinuxContainerResources) -> Result<(), Error> {
    if r.cpu_period != 0 && !PERIOD_US.contains(&r.cpu_period) {
        return Err(invalid(
            CPU_PERIOD,
            format!("{} is outside 1000..=1000000 microseconds", r.cpu_period),
        ));
    }
    // -1 is cgroup v1's "no limit", as kubelet may send it.
    if !matches!(r.cpu_quota, -1 | 0) && !QUOTA_US.contains(&r.cpu_quota) {
        return Err(invalid(
            CPU_QUOTA,
            format!(
                "{} is neither -1 nor within 1000..=2^44-1 microseconds",
                r.cpu_quota
            ),
        ));
    }
    if !(0..=SHARES_MAX).contains(&r.cpu_shares) {
        return Err(invalid(
            CPU_SHARES,
            format!("{} is outside 0..={SHARES_MAX}", r.cpu_shares),
        ));
    }
    if r.memory_limit_in_bytes < 0 {
        return Err(invalid(
            MEMORY,
            format!("{} is negative", r.memory_limit_in_bytes),
        ));
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return Err(invalid(
            SWAP,
            format!("{} is below -1 (unlimited)", r.memory_swap_limit_in_bytes),
        ));
    }
    if r.memory_limit_in_bytes > 0
        && r.memory_swap_limit_in_bytes > 0
        && r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes
    {
        return Err(invalid(
            SWAP,
            format!(
                "{} is below the memory limit {}: it counts memory and swap together",
                r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
            ),
        ));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid(
            OOM,
            format!("{} is outside -1000..=1000", r.oom_score_adj),
        ));
    }
    if !r.cpuset_cpus.is_empty() {
        within(
            CPUS,
            &r.cpuset_cpus,
            &node_list("/sys/devices/system/cpu/online"),
        )?;
    }
    if !r.cpuset_mems.is_empty() {
        within(
            MEMS,
            &r.cpuset_mems,
            &node_list("/sys/devices/system/node/online"),
        )?;
    }
    for limit in &r.hugepage_limits {
        page_size(&limit.page_size)?;
    }
    for (key, value) in &r.unified {
        unified_key(key)?;
        no_nul(UNIFIED, value)?;
    }
    Ok(())
}

/// A cpuset list (`0-3,5`) as inclusive ranges, or why it is not one.
fn ranges(list: &str) -> Result<Vec<(u32, u32)>, String> {
    list.trim()
        .split(',')
        .map(|part| {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let parse = |n: &str| {
                n.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{} is not a list of numbers and ranges", quote(list)))
            };
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                return Err(format!(
                    "range {low}-{high} in {} runs backwards",
                    quote(list)
                ));
            }
            Ok((low, high))
        })
        .collect()
}

/// The node's online CPUs or memory nodes; a kernel without NUMA has node 0.
fn node_list(path: &str) -> Vec<(u32, u32)> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| ranges(&s).ok())
        .unwrap_or_else(|| vec![(0, 0)])
}

/// A cpuset list whose every member the node has online.
fn within(field: &'static str, list: &str, online: &[(u32, u32)]) -> Result<(), Error> {
    for (low, high) in ranges(list).map_err(|reason| invalid(field, reason))? {
        let covered = online.iter().any(|&(a, b)| a <= low && high <= b);
        if !covered {
            let have: Vec<String> = online
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            return Err(invalid(
                field,
                format!(
                    "{} names members this node does not have online ({})",
                    quote(list),
                    have.join(",")
                ),
            ));
        }
    }
    Ok(())
}

/// A huge page size as kubelet writes it (`2MB`, `1GB`) that the node has.
fn page_size(size: &str) -> Result<(), Error> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit_kb: u64 = match &size[digits.len()..] {
        "KB" => 1,
        "MB" => 1 << 10,
        "GB" => 1 << 20,
        "TB" => 1 << 30,
        _ => {
            return Err(invalid(
                HUGEPAGES,
                format!(
                    "page size {} is not a number with KB, MB, GB or TB",
                    quote(size)
                ),
            ));
        }
    };
    let kb = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_kb))
        .ok_or_else(|| {
            invalid(
                HUGEPAGES,
                format!("page size {} is not a size", quote(size)),
            )
        })?;
    let dir = format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB");
    if !std::path::Path::new(&dir).exists() {
        return Err(invalid(
            HUGEPAGES,
            format!("this node has no {size} huge pages ({dir} is missing)"),
        ));
    }
    Ok(())
}

/// A cgroup v2 file name (`memory.high`): it is joined to the container's
/// cgroup directory, so it must not be a path.
fn unified_key(key: &str) -> Result<(), Error> {
    let valid = key
        .split_once('.')
        .is_some_and(|(controller, file)| !controller.is_empty() && !file.is_empty())
        && !key.contains('/')
        && !key.contains('\0');
    if !valid {
        return Err(invalid(
            UNIFIED,
            format!("{} is not a cgroup file name like memory.high", quote(key)),
        ));
    }
    Ok(())
}
