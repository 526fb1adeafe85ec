//! The exec profile: what `runc exec` applies to a process it starts in a
//! container, taken once from the container's OCI spec for the monitor,
//! which then starts exec'd processes itself (docs/security.md, "Native
//! exec"). Anything of the spec the monitor's path does not reproduce is
//! named in `unsupported`, and that container's execs keep `runc exec`.

use oci_spec::runtime::Spec;
use pier_proto::monitor::{ExecProfile, Rlimit};
use serde_json::Value;

/// The profile of `spec`. Read from the spec's JSON form, the very text
/// runc reads.
pub fn exec_profile(spec: &Spec) -> ExecProfile {
    let json = serde_json::to_value(spec).unwrap_or(Value::Null);
    let mut profile = ExecProfile::default();
    let mut unsupported = Vec::new();
    let process = &json["process"];
    let linux = &json["linux"];
    let user = &process["user"];
    profile.uid = as_u32(&user["uid"]);
    profile.gid = as_u32(&user["gid"]);
    profile.additional_gids = array(&user["additionalGids"]).iter().map(as_u32).collect();
    profile.umask = user["umask"].as_u64().and_then(|u| u32::try_from(u).ok());
    let caps = &process["capabilities"];
    let names = |set: &str| -> Vec<String> {
        let mut names = strings(&caps[set]);
        names.sort();
        names
    };
    profile.cap_bounding = names("bounding");
    profile.cap_effective = names("effective");
    profile.cap_permitted = names("permitted");
    profile.cap_inheritable = names("inheritable");
    profile.cap_ambient = names("ambient");
    profile.no_new_privileges = process["noNewPrivileges"].as_bool().unwrap_or(false);
    profile.oom_score_adj = process["oomScoreAdj"]
        .as_i64()
        .and_then(|v| i32::try_from(v).ok());
    profile.env = strings(&process["env"]);
    profile.cwd = process["cwd"].as_str().unwrap_or("/").to_owned();
    for rlimit in array(&process["rlimits"]) {
        let name = rlimit["type"].as_str().unwrap_or_default();
        match rlimit_resource(name) {
            Some(resource) => profile.rlimits.push(Rlimit {
                resource,
                soft: rlimit["soft"].as_u64().unwrap_or(0),
                hard: rlimit["hard"].as_u64().unwrap_or(0),
            }),
            None => unsupported.push(format!("rlimit {name}")),
        }
    }
    for (field, what) in [
        ("apparmorProfile", "AppArmor profile"),
        ("selinuxLabel", "SELinux label"),
        ("scheduler", "scheduler"),
        ("ioPriority", "I/O priority"),
        ("execCPUAffinity", "exec CPU affinity"),
    ] {
        if is_set(&process[field]) {
            unsupported.push(what.to_owned());
        }
    }
    if !user["username"].as_str().unwrap_or_default().is_empty() {
        unsupported.push("user name".to_owned());
    }
    let seccomp = &linux["seccomp"];
    if is_set(seccomp) {
        profile.seccomp = true;
        if !array(&seccomp["flags"]).is_empty() {
            unsupported.push("seccomp flags".to_owned());
        }
        if is_set(&seccomp["listenerPath"]) {
            unsupported.push("seccomp listener".to_owned());
        }
    }
    for ns in array(&linux["namespaces"]) {
        if matches!(ns["type"].as_str(), Some("user" | "time")) {
            unsupported.push(format!("{} namespace", ns["type"].as_str().unwrap_or("")));
        }
    }
    for (field, what) in [
        ("personality", "personality"),
        ("timeOffsets", "time offsets"),
        ("intelRdt", "Intel RDT"),
    ] {
        if is_set(&linux[field]) {
            unsupported.push(what.to_owned());
        }
    }
    profile.unsupported = unsupported.join(", ");
    profile
}

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn strings(v: &Value) -> Vec<String> {
    array(v)
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn as_u32(v: &Value) -> u32 {
    v.as_u64().and_then(|u| u32::try_from(u).ok()).unwrap_or(0)
}

/// The resource number of an rlimit as the spec names it.
fn rlimit_resource(name: &str) -> Option<u32> {
    let n = match name {
        "RLIMIT_CPU" => nix::libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => nix::libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => nix::libc::RLIMIT_DATA,
        "RLIMIT_STACK" => nix::libc::RLIMIT_STACK,
        "RLIMIT_CORE" => nix::libc::RLIMIT_CORE,
        "RLIMIT_RSS" => nix::libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => nix::libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => nix::libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => nix::libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => nix::libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => nix::libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => nix::libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => nix::libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => nix::libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => nix::libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => nix::libc::RLIMIT_RTTIME,
        _ => return None,
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: Value) -> Spec {
        let mut json = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "/rootfs" },
            "process": {
                "user": { "uid": 1000, "gid": 3000, "additionalGids": [4000, 50] },
                "args": ["sh"],
                "env": ["PATH=/bin", "A=1"],
                "cwd": "/work",
                "capabilities": {
                    "bounding": ["CAP_KILL", "CAP_CHOWN"],
                    "effective": ["CAP_CHOWN"],
                    "permitted": ["CAP_CHOWN"],
                },
                "noNewPrivileges": true,
                "oomScoreAdj": 500,
                "rlimits": [{ "type": "RLIMIT_NOFILE", "soft": 100, "hard": 200 }],
            },
            "linux": {
                "namespaces": [{ "type": "mount" }, { "type": "pid" }],
                "seccomp": { "defaultAction": "SCMP_ACT_ERRNO" },
            },
        });
        if let (Some(into), Some(from)) = (json["linux"].as_object_mut(), extra.as_object()) {
            into.extend(from.clone());
        }
        serde_json::from_value(json).expect("spec")
    }

    #[test]
    fn profile_carries_the_process_part_of_the_spec() {
        let p = exec_profile(&spec(serde_json::json!({})));
        assert_eq!(p.unsupported, "");
        assert_eq!((p.uid, p.gid), (1000, 3000));
        assert_eq!(p.additional_gids, vec![4000, 50]);
        assert_eq!(p.cap_bounding, vec!["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(p.cap_effective, vec!["CAP_CHOWN"]);
        assert!(p.cap_ambient.is_empty());
        assert!(p.no_new_privileges && p.seccomp);
        assert_eq!(p.oom_score_adj, Some(500));
        assert_eq!(p.umask, None);
        assert_eq!(p.env, vec!["PATH=/bin", "A=1"], "in the spec's order");
        assert_eq!(p.cwd, "/work");
        assert_eq!(p.rlimits.len(), 1);
        assert_eq!(p.rlimits[0].resource, nix::libc::RLIMIT_NOFILE);
    }

    #[test]
    fn uncovered_features_are_named() {
        let p = exec_profile(&spec(serde_json::json!({
            "namespaces": [{ "type": "user", "path": "/proc/1/ns/user" }],
            "personality": { "domain": "LINUX32" },
        })));
        assert_eq!(p.unsupported, "user namespace, personality");
    }
}
