//! RunPodSandbox's config.

use k8s_cri::v1::{
    DnsConfig, Int64Value, NamespaceMode, NamespaceOption, PodSandboxConfig, PortMapping, Protocol,
    SeLinuxOption, SecurityProfile, security_profile,
};

use super::{absolute_clean, id, invalid, known, no_nul, no_parent, quote};
use crate::error::Error;

/// Refuses a pod config that could only fail later, or do harm: NUL bytes,
/// paths that leave their directory, unknown enum values, ports outside
/// 1..=65535, DNS entries that would add lines to resolv.conf.
pub fn pod_config(config: &PodSandboxConfig) -> Result<(), Error> {
    if let Some(m) = &config.metadata {
        no_nul("config.metadata.name", &m.name)?;
        no_nul("config.metadata.namespace", &m.namespace)?;
        no_nul("config.metadata.uid", &m.uid)?;
    }
    if !config.log_directory.is_empty() {
        absolute_clean("config.log_directory", &config.log_directory)?;
    }
    if let Some(dns) = &config.dns_config {
        dns_config(dns)?;
    }
    config.port_mappings.iter().try_for_each(port_mapping)?;
    let Some(linux) = &config.linux else {
        return Ok(());
    };
    cgroup_parent(&linux.cgroup_parent)?;
    for (key, value) in &linux.sysctls {
        no_nul("config.linux.sysctls", key)?;
        no_nul("config.linux.sysctls", value)?;
    }
    let Some(security) = &linux.security_context else {
        return Ok(());
    };
    if let Some(ns) = &security.namespace_options {
        namespace_options("config.linux.security_context.namespace_options", ns)?;
    }
    ids(
        security.run_as_user.as_ref(),
        security.run_as_group.as_ref(),
        &security.supplemental_groups,
    )?;
    confinement(
        security.seccomp.as_ref(),
        security.apparmor.as_ref(),
        security.selinux_options.as_ref(),
    )
}

/// The seccomp and AppArmor profiles and the SELinux label a pod's or a
/// container's security context asks for (the fields are named alike in
/// both).
pub(super) fn confinement(
    seccomp: Option<&SecurityProfile>,
    apparmor: Option<&SecurityProfile>,
    selinux_options: Option<&SeLinuxOption>,
) -> Result<(), Error> {
    if let Some(profile) = seccomp {
        security_profile("config.linux.security_context.seccomp", profile, true)?;
    }
    if let Some(profile) = apparmor {
        security_profile("config.linux.security_context.apparmor", profile, false)?;
    }
    if let Some(options) = selinux_options {
        selinux(options)?;
    }
    Ok(())
}

/// DNS servers are IP addresses (kubelet's `clusterDNS`); searches and
/// options are single resolv.conf words, so none can start a new line.
fn dns_config(dns: &DnsConfig) -> Result<(), Error> {
    for server in &dns.servers {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "config.dns_config.servers",
                format!("{} is not an IP address", quote(server)),
            ));
        }
    }
    for (field, words) in [
        ("config.dns_config.searches", &dns.searches),
        ("config.dns_config.options", &dns.options),
    ] {
        for word in words {
            if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    field,
                    format!("{} is not one resolv.conf word", quote(word)),
                ));
            }
        }
    }
    Ok(())
}

fn port_mapping(port: &PortMapping) -> Result<(), Error> {
    const FIELD: &str = "config.port_mappings";
    known::<Protocol>("config.port_mappings.protocol", port.protocol)?;
    if !(1..=65535).contains(&port.container_port) {
        return Err(invalid(
            FIELD,
            format!(
                "container port {} is outside 1..=65535",
                port.container_port
            ),
        ));
    }
    // 0: the port is not published on the host.
    if !(0..=65535).contains(&port.host_port) {
        return Err(invalid(
            FIELD,
            format!("host port {} is outside 0..=65535", port.host_port),
        ));
    }
    if !port.host_ip.is_empty() && port.host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(
            "config.port_mappings.host_ip",
            format!("{} is not an IP address", quote(&port.host_ip)),
        ));
    }
    Ok(())
}

/// A cgroup path (cgroupfs) or slice name (systemd): it is joined below
/// the cgroup mounts, so it must not climb out of them.
fn cgroup_parent(parent: &str) -> Result<(), Error> {
    const FIELD: &str = "config.linux.cgroup_parent";
    no_nul(FIELD, parent)?;
    no_parent(FIELD, parent)
}

/// The user, group and supplemental groups of a pod's or a container's
/// security context.
pub(super) fn ids(
    user: Option<&Int64Value>,
    group: Option<&Int64Value>,
    supplemental: &[i64],
) -> Result<(), Error> {
    if let Some(user) = user {
        id("config.linux.security_context.run_as_user", user.value)?;
    }
    if let Some(group) = group {
        id("config.linux.security_context.run_as_group", group.value)?;
    }
    for group in supplemental {
        id("config.linux.security_context.supplemental_groups", *group)?;
    }
    Ok(())
}

pub(super) fn selinux(options: &SeLinuxOption) -> Result<(), Error> {
    const FIELD: &str = "config.linux.security_context.selinux_options";
    for part in [
        &options.user,
        &options.role,
        &options.r#type,
        &options.level,
    ] {
        no_nul(FIELD, part)?;
    }
    Ok(())
}

pub(super) fn namespace_options(field: &'static str, ns: &NamespaceOption) -> Result<(), Error> {
    for mode in [ns.network, ns.pid, ns.ipc] {
        known::<NamespaceMode>(field, mode)?;
    }
    no_nul(field, &ns.target_id)
}

/// A seccomp or AppArmor profile choice. A Localhost seccomp profile is a
/// file kubelet names by absolute path; an AppArmor one is a profile name.
pub(super) fn security_profile(
    field: &'static str,
    profile: &SecurityProfile,
    ref_is_path: bool,
) -> Result<(), Error> {
    known::<security_profile::ProfileType>(field, profile.profile_type)?;
    if ref_is_path && profile.profile_type == security_profile::ProfileType::Localhost as i32 {
        absolute_clean(field, &profile.localhost_ref)?;
    } else {
        no_nul(field, &profile.localhost_ref)?;
    }
    Ok(())
}
