//! CreateContainer's config.

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, MountPropagation};

use super::pod::{confinement, ids, namespace_options};
use super::{absolute_clean, all_no_nul, invalid, known, no_nul, quote, relative_clean};
use crate::error::Error;

/// Refuses a container config that could only fail in runc, or do harm:
/// NUL bytes in what becomes argv, environment or paths, a log path that
/// leaves the pod's log directory, unknown enum values, absurd limits.
pub fn container_config(config: &ContainerConfig) -> Result<(), Error> {
    if let Some(m) = &config.metadata {
        no_nul("config.metadata.name", &m.name)?;
    }
    all_no_nul("config.command", &config.command)?;
    all_no_nul("config.args", &config.args)?;
    if !config.working_dir.is_empty() {
        no_nul("config.working_dir", &config.working_dir)?;
        if !config.working_dir.starts_with('/') {
            return Err(invalid(
                "config.working_dir",
                format!("{} is not an absolute path", quote(&config.working_dir)),
            ));
        }
    }
    for env in &config.envs {
        if env.key.is_empty() || env.key.contains('=') {
            return Err(invalid(
                "config.envs",
                format!("{} is not an environment variable name", quote(&env.key)),
            ));
        }
        no_nul("config.envs", &env.key)?;
        no_nul("config.envs", &env.value)?;
    }
    for mount in &config.mounts {
        absolute_clean("config.mounts.container_path", &mount.container_path)?;
        no_nul("config.mounts.host_path", &mount.host_path)?;
        known::<MountPropagation>("config.mounts.propagation", mount.propagation)?;
    }
    for device in &config.devices {
        absolute_clean("config.devices.container_path", &device.container_path)?;
        absolute_clean("config.devices.host_path", &device.host_path)?;
        let valid = !device.permissions.is_empty()
            && device
                .permissions
                .chars()
                .all(|c| matches!(c, 'r' | 'w' | 'm'));
        if !valid {
            return Err(invalid(
                "config.devices.permissions",
                format!(
                    "{} is not a combination of r, w and m",
                    quote(&device.permissions)
                ),
            ));
        }
    }
    // Joined to the pod's log directory: it must stay below it.
    if !config.log_path.is_empty() {
        relative_clean("config.log_path", &config.log_path)?;
    }
    let Some(linux) = &config.linux else {
        return Ok(());
    };
    if let Some(resources) = &linux.resources {
        super::resources(resources)?;
    }
    if let Some(security) = &linux.security_context {
        security_context(security)?;
    }
    Ok(())
}

fn security_context(security: &LinuxContainerSecurityContext) -> Result<(), Error> {
    if let Some(ns) = &security.namespace_options {
        namespace_options("config.linux.security_context.namespace_options", ns)?;
    }
    ids(
        security.run_as_user.as_ref(),
        security.run_as_group.as_ref(),
        &security.supplemental_groups,
    )?;
    no_nul(
        "config.linux.security_context.run_as_username",
        &security.run_as_username,
    )?;
    for path in security.masked_paths.iter().chain(&security.readonly_paths) {
        absolute_clean(
            "config.linux.security_context.masked_paths/readonly_paths",
            path,
        )?;
    }
    confinement(
        security.seccomp.as_ref(),
        security.apparmor.as_ref(),
        security.selinux_options.as_ref(),
    )
}
