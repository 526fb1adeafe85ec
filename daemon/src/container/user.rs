//! The identity a container's first process has, read back from the kernel
//! for `ContainerStatus.user` (KEP-3619): what runc applied, which is what
//! kubelet reports in the pod's status, rather than what the spec asked for.

use std::io;

use k8s_cri::v1::LinuxContainerUser;

use crate::userns::Mappings;

/// Reads the uid, gid and groups of process `pid` from `/proc/<pid>/status`.
/// The kernel shows them as the node sees them; for a pod with its own user
/// namespace they are translated back to the ids inside the pod.
pub fn read(pid: i32, userns: Option<&Mappings>) -> io::Result<LinuxContainerUser> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (uid, gid, groups) = parse(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status has no Uid, Gid and Groups lines"),
        )
    })?;
    let (uid, gid, groups) = match userns {
        Some(maps) => (
            maps.uids.to_container(uid),
            maps.gids.to_container(gid),
            groups.iter().map(|&g| maps.gids.to_container(g)).collect(),
        ),
        None => (uid, gid, groups),
    };
    Ok(LinuxContainerUser {
        uid: uid.into(),
        gid: gid.into(),
        supplemental_groups: groups.into_iter().map(i64::from).collect(),
    })
}

/// The real uid, real gid and supplementary groups of a status text.
fn parse(status: &str) -> Option<(u32, u32, Vec<u32>)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
    };
    let first = |text: &str| text.split_whitespace().next()?.parse().ok();
    let uid = first(field("Uid")?)?;
    let gid = first(field("Gid")?)?;
    let groups = field("Groups")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()
        .ok()?;
    Some((uid, gid, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_give_real_ids_and_groups() {
        let text = "Name:\tsh\nUid:\t1000\t1001\t1000\t1000\nGid:\t3000\t3000\t3000\t3000\n\
                    FDSize:\t64\nGroups:\t1234 3000 5678 \n";
        assert_eq!(parse(text), Some((1000, 3000, vec![1234, 3000, 5678])));
        assert_eq!(
            parse("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n"),
            Some((0, 0, vec![]))
        );
        assert_eq!(parse("Uid:\t0\n"), None);
    }

    #[test]
    fn own_identity_reads_back() {
        let me = read(std::process::id() as i32, None).expect("read own status");
        assert_eq!(me.uid, i64::from(nix::unistd::getuid().as_raw()));
        assert_eq!(me.gid, i64::from(nix::unistd::getgid().as_raw()));
    }
}
