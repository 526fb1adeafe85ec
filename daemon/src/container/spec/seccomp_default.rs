//! pier's RuntimeDefault seccomp profile.
//!
//! A deny list: everything is allowed except the system calls that reach
//! past a container's isolation (kernel modules, kexec, mounts and namespace
//! changes, clock and hostname changes, tracing other processes, keyrings,
//! BPF, io_uring...). Each is allowed again when the container holds the
//! capability that legitimately governs it, as Docker's profile does, so
//! `CAP_SYS_ADMIN` restores `sethostname`. Denied calls fail with EPERM, which
//! programs handle, rather than killing the process. Docker's profile is an
//! allow list, stricter against syscalls added to future kernels; this list
//! must grow with them. See docs/security.md.

use serde_json::{Value, json};

/// (system calls, capability that allows them; empty: never allowed).
const DENIED: &[(&[&str], &str)] = &[
    (&["acct"], "CAP_SYS_PACCT"),
    (&["add_key", "keyctl", "request_key"], ""),
    (&["bpf"], "CAP_SYS_ADMIN"),
    (
        &[
            "clock_adjtime",
            "clock_adjtime64",
            "clock_settime",
            "clock_settime64",
            "settimeofday",
            "stime",
        ],
        "CAP_SYS_TIME",
    ),
    (
        &[
            "create_module",
            "delete_module",
            "finit_module",
            "init_module",
            "query_module",
            "get_kernel_syms",
        ],
        "CAP_SYS_MODULE",
    ),
    (&["kexec_file_load", "kexec_load", "reboot"], "CAP_SYS_BOOT"),
    (&["iopl", "ioperm"], "CAP_SYS_RAWIO"),
    (
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "sethostname",
            "setdomainname",
            "quotactl",
            "swapon",
            "swapoff",
            "fanotify_init",
            "lookup_dcookie",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "mount_setattr",
        ],
        "CAP_SYS_ADMIN",
    ),
    (
        &["name_to_handle_at", "open_by_handle_at"],
        "CAP_DAC_READ_SEARCH",
    ),
    (&["perf_event_open"], "CAP_PERFMON"),
    (
        &["process_vm_readv", "process_vm_writev", "ptrace", "kcmp"],
        "CAP_SYS_PTRACE",
    ),
    (
        &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
        "CAP_SYS_NICE",
    ),
    (&["syslog"], "CAP_SYSLOG"),
    (&["vhangup"], "CAP_SYS_TTY_CONFIG"),
    (
        &[
            "nfsservctl",
            "sysfs",
            "_sysctl",
            "uselib",
            "userfaultfd",
            "ustat",
            "vm86",
            "vm86old",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ],
        "",
    ),
];

/// The profile for a container holding `caps`.
pub fn profile(caps: &[String]) -> Value {
    let denied: Vec<&str> = DENIED
        .iter()
        .filter(|(_, cap)| cap.is_empty() || !caps.iter().any(|c| c == cap))
        .flat_map(|(names, _)| names.iter().copied())
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": [{ "names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }],
    })
}

fn architectures() -> &'static [&'static str] {
    match std::env::consts::ARCH {
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(profile: &Value) -> Vec<String> {
        serde_json::from_value(profile["syscalls"][0]["names"].clone()).expect("names")
    }

    #[test]
    fn sethostname_is_denied_without_sys_admin_and_allowed_with_it() {
        assert!(denied(&profile(&[])).contains(&"sethostname".to_owned()));
        let with_admin = profile(&["CAP_SYS_ADMIN".to_owned()]);
        assert!(!denied(&with_admin).contains(&"sethostname".to_owned()));
        assert!(
            denied(&with_admin).contains(&"keyctl".to_owned()),
            "never allowed"
        );
    }
}
