//! Capabilities, seccomp and the masked and read-only paths.

use std::str::FromStr;

use k8s_cri::v1::{Capability as CriCapabilities, SecurityProfile, security_profile::ProfileType};
use oci_spec::runtime::Capability;
use serde_json::{Value, json};

use super::SpecError;

/// What an unprivileged container gets, as Docker and containerd grant it.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability pierd can hand out, for `ALL` and privileged containers:
/// those the kernel knows that are also in pierd's own bounding set. runc
/// refuses to start a process with a capability its parent lacks (as when
/// pierd runs without `CAP_SYS_RESOURCE` in a sandbox), so "all" means all
/// of ours, as containerd and CRI-O take it.
fn all_capabilities() -> Vec<String> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| bounding_set(&status));
    grantable(last, bounding)
}

/// The `CapBnd` mask of a `/proc/<pid>/status` text.
fn bounding_set(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The known capabilities up to `last`, limited to `bounding` when it is known.
fn grantable(last: u32, bounding: Option<u64>) -> Vec<String> {
    all_known()
        .into_iter()
        .filter(|(bit, _)| *bit <= last)
        .filter(|(bit, _)| bounding.is_none_or(|mask| mask & (1u64 << bit) != 0))
        .map(|(_, name)| name)
        .collect()
}

fn all_known() -> Vec<(u32, String)> {
    const NAMES: &[&str] = &[
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES
        .iter()
        .enumerate()
        .map(|(bit, name)| (bit as u32, format!("CAP_{name}")))
        .collect()
}

/// Normalises a CRI capability name (`NET_ADMIN`, `CAP_NET_ADMIN`, any case)
/// and checks it is a real capability.
fn normalise(name: &str, field: &'static str) -> Result<String, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare)
        .map(|_| format!("CAP_{bare}"))
        .map_err(|_| SpecError::invalid(field, format!("{name:?} is not a capability")))
}

/// The capability set: defaults (or all, when privileged), minus drops, plus
/// adds. `ALL` in drop empties the set first; `ALL` in add grants everything.
pub fn capabilities(
    caps: Option<&CriCapabilities>,
    privileged: bool,
) -> Result<Vec<String>, SpecError> {
    if privileged {
        return Ok(all_capabilities());
    }
    let mut set: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let Some(caps) = caps else { return Ok(set) };
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    if caps.drop_capabilities.iter().any(is_all) {
        set.clear();
    }
    for drop in caps.drop_capabilities.iter().filter(|c| !is_all(c)) {
        let drop = normalise(
            drop,
            "config.linux.security_context.capabilities.drop_capabilities",
        )?;
        set.retain(|c| *c != drop);
    }
    if caps.add_capabilities.iter().any(is_all) {
        return Ok(all_capabilities());
    }
    for add in &caps.add_capabilities {
        let add = normalise(
            add,
            "config.linux.security_context.capabilities.add_capabilities",
        )?;
        if !set.contains(&add) {
            set.push(add);
        }
    }
    Ok(set)
}

/// The seccomp section for the profile asked for, or `None` for unconfined.
/// Privileged containers run unconfined whatever they ask, as kubelet expects.
pub fn seccomp(
    profile: Option<&SecurityProfile>,
    legacy_path: &str,
    privileged: bool,
    caps: &[String],
) -> Result<Option<Value>, SpecError> {
    const FIELD: &str = "config.linux.security_context.seccomp";
    if privileged {
        return Ok(None);
    }
    let (kind, localhost) = match profile {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => ("default", String::new()),
            Ok(ProfileType::Unconfined) => ("unconfined", String::new()),
            Ok(ProfileType::Localhost) => ("localhost", p.localhost_ref.clone()),
            Err(_) => {
                return Err(SpecError::invalid(
                    FIELD,
                    format!("unknown profile type {}", p.profile_type),
                ));
            }
        },
        None => match legacy_path {
            "" | "unconfined" => ("unconfined", String::new()),
            "runtime/default" | "docker/default" => ("default", String::new()),
            path => match path.strip_prefix("localhost/") {
                Some(file) => ("localhost", file.to_owned()),
                None => {
                    return Err(SpecError::invalid(
                        "config.linux.security_context.seccomp_profile_path",
                        format!("{path:?}: a custom profile must be given as localhost/<path>"),
                    ));
                }
            },
        },
    };
    match kind {
        "unconfined" => Ok(None),
        "default" => Ok(Some(super::seccomp_default::profile(caps))),
        _ => {
            let text = std::fs::read_to_string(&localhost)
                .map_err(|e| SpecError::invalid(FIELD, format!("read profile {localhost}: {e}")))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| SpecError::invalid(FIELD, format!("profile {localhost}: {e}")))?;
            Ok(Some(docker_to_oci(value)))
        }
    }
}

/// Localhost profiles are often written in Docker's format (`defaultAction`,
/// `syscalls` with `name` or `names`, `architectures`); the OCI form differs
/// only in `names` and in leaving out Docker-only keys.
fn docker_to_oci(mut profile: Value) -> Value {
    if let Some(syscalls) = profile.get_mut("syscalls").and_then(Value::as_array_mut) {
        for rule in syscalls {
            if let Some(object) = rule.as_object_mut() {
                if let Some(name) = object.remove("name") {
                    object.insert("names".into(), json!([name]));
                }
                for docker_only in ["includes", "excludes", "comment"] {
                    object.remove(docker_only);
                }
            }
        }
    }
    if let Some(object) = profile.as_object_mut() {
        object.remove("archMap");
    }
    profile
}

/// Paths hidden from unprivileged containers (kernel interfaces that leak
/// host information or allow harm).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths unprivileged containers see read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(add: &[&str], drop: &[&str]) -> CriCapabilities {
        CriCapabilities {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: Vec::new(),
        }
    }

    #[test]
    fn add_and_drop_accept_cri_spellings() {
        let set = capabilities(
            Some(&caps(&["sys_admin"], &["CAP_CHOWN", "NET_RAW"])),
            false,
        )
        .expect("caps");
        assert!(set.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(!set.contains(&"CAP_CHOWN".to_owned()));
        assert!(!set.contains(&"CAP_NET_RAW".to_owned()));
        assert!(set.contains(&"CAP_KILL".to_owned()));
    }

    #[test]
    fn drop_all_then_add_one() {
        let set = capabilities(Some(&caps(&["NET_ADMIN"], &["ALL"])), false).expect("caps");
        assert_eq!(set, ["CAP_NET_ADMIN"]);
    }

    #[test]
    fn add_all_and_privileged_grant_everything() {
        let all = capabilities(Some(&caps(&["ALL"], &[])), false).expect("caps");
        assert!(
            all.contains(&"CAP_SYS_ADMIN".to_owned()) && all.contains(&"CAP_SYS_MODULE".to_owned())
        );
        assert_eq!(capabilities(None, true).expect("caps"), all);
    }

    #[test]
    fn all_means_all_of_pierds_own_bounding_set() {
        let status = "Name:\tpierd\nCapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000000\n";
        let mask = bounding_set(status).expect("CapBnd parsed");
        assert_eq!(mask, 0x1fffeffffff);
        let granted = grantable(40, Some(mask));
        assert!(
            !granted.contains(&"CAP_SYS_RESOURCE".to_owned()),
            "{granted:?}"
        );
        assert!(granted.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(granted.contains(&"CAP_CHECKPOINT_RESTORE".to_owned()));
        assert_eq!(granted.len(), 40);
        assert_eq!(grantable(40, None).len(), 41);
        assert_eq!(grantable(37, None).len(), 38, "none past cap_last_cap");
    }

    #[test]
    fn unknown_capability_names_the_field() {
        let err = capabilities(Some(&caps(&["FLY"], &[])), false).expect_err("accepted");
        assert!(err.to_string().contains("add_capabilities") && err.to_string().contains("FLY"));
    }

    #[test]
    fn legacy_custom_profile_without_localhost_prefix_is_refused() {
        let err = seccomp(None, "/tmp/profile.json", false, &[]).expect_err("accepted");
        assert!(err.to_string().contains("localhost/"), "{err}");
    }

    #[test]
    fn privileged_and_unconfined_have_no_seccomp() {
        let default = SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            ..Default::default()
        };
        assert!(
            seccomp(Some(&default), "", true, &[])
                .expect("seccomp")
                .is_none()
        );
        assert!(
            seccomp(None, "unconfined", false, &[])
                .expect("seccomp")
                .is_none()
        );
        assert!(
            seccomp(Some(&default), "", false, &[])
                .expect("seccomp")
                .is_some()
        );
    }
}
