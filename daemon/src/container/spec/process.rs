//! The process part of the spec: argv, environment and identity, merged from
//! the CRI ContainerConfig and the image config as kubelet defines it.

use std::path::Path;

use k8s_cri::v1::{ContainerConfig, SupplementalGroupsPolicy};

use super::{ImageConfig, SpecError};

/// argv: `command` replaces the image's entrypoint and `args` its cmd; args
/// alone run under the image's entrypoint (Kubernetes' container semantics).
pub fn argv(config: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let argv: Vec<String> = match (config.command.is_empty(), config.args.is_empty()) {
        (false, _) => config.command.iter().chain(&config.args).cloned().collect(),
        (true, false) => image
            .entrypoint
            .iter()
            .chain(&config.args)
            .cloned()
            .collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(SpecError::invalid(
            "config.command",
            "no command given and the image has none",
        ));
    }
    Ok(argv)
}

/// Environment: the image's, then the container's, later keys replacing earlier.
pub fn env(config: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_owned(),
            None => env.push((key.to_owned(), value.to_owned())),
        }
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for entry in &image.env {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        set(&mut env, key, value);
    }
    for kv in &config.envs {
        set(&mut env, &kv.key, &kv.value);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        set(
            &mut env,
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The identity the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A user database read from the container's rootfs.
#[derive(Debug, Default)]
pub struct UserDb {
    passwd: String,
    group: String,
}

impl UserDb {
    /// Reads `/etc/passwd` and `/etc/group` of a rootfs. Only regular files
    /// directly under a real `etc` directory are read: a symlink there could
    /// point outside the rootfs, at the node's own files.
    pub fn read(rootfs: &Path) -> Self {
        let etc = rootfs.join("etc");
        let is_dir = etc.symlink_metadata().is_ok_and(|m| m.is_dir());
        let read = |name: &str| {
            let path = etc.join(name);
            let regular = path.symlink_metadata().is_ok_and(|m| m.is_file());
            if is_dir && regular {
                std::fs::read_to_string(path).unwrap_or_default()
            } else {
                String::new()
            }
        };
        Self {
            passwd: read("passwd"),
            group: read("group"),
        }
    }

    #[cfg(test)]
    pub fn from_text(passwd: &str, group: &str) -> Self {
        Self {
            passwd: passwd.into(),
            group: group.into(),
        }
    }

    /// (name, uid, gid) of the passwd entry matching `pred`.
    fn user(&self, pred: impl Fn(&str, u32) -> bool) -> Option<(String, u32, u32)> {
        self.passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let (name, uid, gid) = (f.first()?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
            pred(name, uid).then(|| ((*name).to_owned(), uid, gid))
        })
    }

    fn group_id(&self, name: &str) -> Option<u32> {
        self.group.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&name))
                .then(|| f.get(2)?.parse().ok())
                .flatten()
        })
    }

    /// Groups that list `user` as a member.
    fn member_groups(&self, user: &str) -> Vec<u32> {
        self.group
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                let members = f.get(3)?;
                members
                    .split(',')
                    .any(|m| m == user)
                    .then(|| f.get(2)?.parse().ok())
                    .flatten()
            })
            .collect()
    }
}

/// Resolves who the process runs as: `run_as_user`/`run_as_username` from
/// the security context, else the image's `User` (`name`, `uid`,
/// `name:group`, `uid:gid`), against the rootfs' passwd and group files;
/// then `run_as_group`, supplemental groups, and (unless the policy is
/// `Strict`) the image groups the user is a member of.
pub fn identity(
    config: &ContainerConfig,
    image: &ImageConfig,
    users: &UserDb,
) -> Result<Identity, SpecError> {
    let context = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let run_as_user = context
        .and_then(|c| c.run_as_user.as_ref())
        .map(|v| v.value);
    let run_as_username = context
        .map(|c| c.run_as_username.as_str())
        .filter(|n| !n.is_empty());
    let run_as_group = context
        .and_then(|c| c.run_as_group.as_ref())
        .map(|v| v.value);
    if run_as_group.is_some() && run_as_user.is_none() && run_as_username.is_none() {
        return Err(SpecError::invalid(
            "config.linux.security_context.run_as_group",
            "set without run_as_user or run_as_username",
        ));
    }
    let to_id = |v: i64, field: &'static str| {
        u32::try_from(v).map_err(|_| SpecError::invalid(field, format!("{v} is not a valid id")))
    };

    let (user_part, group_part) = match (run_as_user, run_as_username) {
        (Some(uid), _) => (
            to_id(uid, "config.linux.security_context.run_as_user")?.to_string(),
            None,
        ),
        (None, Some(name)) => (name.to_owned(), None),
        (None, None) => match image.user.split_once(':') {
            Some((u, g)) => (u.to_owned(), Some(g.to_owned())),
            None => (image.user.clone(), None),
        },
    };
    let (name, uid, mut gid) = if user_part.is_empty() {
        ("root".to_owned(), 0, 0)
    } else if let Ok(uid) = user_part.parse::<u32>() {
        // A numeric uid need not exist in passwd; without an entry its group is 0.
        users
            .user(|_, u| u == uid)
            .unwrap_or((String::new(), uid, 0))
    } else {
        users.user(|n, _| n == user_part).ok_or_else(|| {
            SpecError::invalid(
                "user",
                format!("user {user_part:?} not found in the image's /etc/passwd"),
            )
        })?
    };
    if let Some(group) = group_part.filter(|g| !g.is_empty()) {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => users.group_id(&group).ok_or_else(|| {
                SpecError::invalid(
                    "user",
                    format!("group {group:?} not found in the image's /etc/group"),
                )
            })?,
        };
    }
    if let Some(group) = run_as_group {
        gid = to_id(group, "config.linux.security_context.run_as_group")?;
    }
    let mut additional_gids = vec![gid];
    // KEP-3619: `Strict` keeps the image's /etc/group out of the process's
    // groups; `Merge`, the default, adds the groups listing the user.
    let strict = context
        .is_some_and(|c| c.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32);
    if !name.is_empty() && !strict {
        additional_gids.extend(users.member_groups(&name));
    }
    for group in context
        .map(|c| c.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        additional_gids.push(to_id(
            *group,
            "config.linux.security_context.supplemental_groups",
        )?);
    }
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(Identity {
        uid,
        gid,
        additional_gids,
    })
}
