//! The cgroups an exec'd process joins: every hierarchy the container's
//! init is in (each cgroup v1 controller and the v2 unified hierarchy),
//! found from `/proc/<init>/cgroup` and the mount table.

use std::io;
use std::path::PathBuf;

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// Controllers and `name=` options of a v1 hierarchy; empty for v2.
    controllers: Vec<String>,
    v2: bool,
    /// The cgroup the mount shows as its root (field 4 of mountinfo).
    root: String,
    mount_point: PathBuf,
}

/// The cgroup hierarchies mounted in the monitor's mount namespace.
pub fn hierarchies() -> io::Result<Vec<Hierarchy>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(mount_point), Some(fstype), Some(opts)) = (
            fields.get(3),
            fields.get(4),
            fields.get(sep + 1),
            fields.get(sep + 3),
        ) else {
            continue;
        };
        let v2 = *fstype == "cgroup2";
        if !v2 && *fstype != "cgroup" {
            continue;
        }
        let controllers = if v2 {
            Vec::new()
        } else {
            opts.split(',').map(str::to_owned).collect()
        };
        out.push(Hierarchy {
            controllers,
            v2,
            root: unescape(root),
            mount_point: PathBuf::from(unescape(mount_point)),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `cgroup.procs` files of the cgroups `/proc/<pid>/cgroup` lists, in
/// the hierarchies mounted here. A hierarchy the process is in but that is
/// not mounted here is an error: the exec'd process would stay outside it.
pub fn procs_files(pid: i32, mounted: &[Hierarchy]) -> io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    procs_files_of(&text, mounted)
}

fn procs_files_of(text: &str, mounted: &[Hierarchy]) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let hierarchy = mounted.iter().find(|h| {
            if controllers.is_empty() {
                h.v2
            } else {
                !h.v2
                    && controllers
                        .split(',')
                        .all(|c| h.controllers.iter().any(|o| o == c))
            }
        });
        let Some(h) = hierarchy else {
            return Err(io::Error::other(format!(
                "cgroup hierarchy {controllers:?} is not mounted"
            )));
        };
        let rel = path
            .strip_prefix(h.root.as_str())
            .unwrap_or(path)
            .trim_start_matches('/');
        out.push(h.mount_point.join(rel).join("cgroup.procs"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
31 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
32 25 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";

    #[test]
    fn every_hierarchy_of_the_process_is_joined() {
        let mounted = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounted.len(), 4);
        let files = procs_files_of(
            "5:memory:/pier/abc\n3:cpu,cpuacct:/pier/abc\n1:name=systemd:/user\n0::/x\n",
            &mounted,
        )
        .expect("files");
        let files: Vec<_> = files.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/memory/pier/abc/cgroup.procs",
                "/sys/fs/cgroup/cpu,cpuacct/pier/abc/cgroup.procs",
                "/sys/fs/cgroup/systemd/user/cgroup.procs",
                "/sys/fs/cgroup/unified/x/cgroup.procs",
            ]
        );
    }

    #[test]
    fn a_hierarchy_not_mounted_is_an_error() {
        let mounted = parse_mountinfo(MOUNTINFO);
        assert!(procs_files_of("9:pids:/a\n", &mounted).is_err());
    }
}
