//! The OCI runtime spec (`config.json`) for a container, from its CRI
//! ContainerConfig, its pod and its image. Built as JSON in the spec's own
//! vocabulary, then parsed into `oci_spec::runtime::Spec`, which checks every
//! field's type and enum value before runc sees it.

mod exec_profile;
pub mod mounts;
mod process;
mod resources;
mod seccomp_default;
mod security;

use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, NamespaceMode, PodSandboxConfig};
use oci_spec::runtime::Spec;
use serde_json::{Value, json};

pub use exec_profile::exec_profile;
pub use process::{Identity, UserDb};
pub use resources::{cgroups_path, oom_score_adj, resources, unified_host};

use crate::sandbox::{Namespaces, SandboxRuntime};

/// What the image's config says about running it (from the image store).
pub use pier_storage::ImageConfig;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("generated OCI spec is not valid: {0}")]
    Oci(String),
}

impl SpecError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Everything the spec is made from.
#[derive(Debug)]
pub struct SpecInput<'a> {
    pub config: &'a ContainerConfig,
    pub sandbox_config: &'a PodSandboxConfig,
    pub sandbox: &'a SandboxRuntime,
    pub image: &'a ImageConfig,
    /// The mounted root filesystem.
    pub rootfs: &'a Path,
    pub users: &'a UserDb,
    /// The target container's PID namespace, for `TARGET` mode.
    pub target_pid_namespace: Option<PathBuf>,
    /// Image volumes as mounted for this create: container path, mount point.
    pub image_volumes: &'a [(String, PathBuf)],
    pub cgroups_path: String,
}

/// Builds the spec.
pub fn generate(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let config = input.config;
    let linux = config.linux.as_ref();
    let context = linux.and_then(|l| l.security_context.as_ref());
    let privileged = context.is_some_and(|c| c.privileged);
    let pod_privileged = input
        .sandbox_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|c| c.privileged);
    if privileged && !pod_privileged {
        return Err(SpecError::invalid(
            "config.linux.security_context.privileged",
            "a privileged container needs a privileged pod sandbox",
        ));
    }

    let args = process::argv(config, input.image)?;
    let env = process::env(config, input.image);
    let identity = process::identity(config, input.image, input.users)?;
    let caps = security::capabilities(context.and_then(|c| c.capabilities.as_ref()), privileged)?;
    let seccomp = security::seccomp(
        context.and_then(|c| c.seccomp.as_ref()),
        // Older kubelets still send only the deprecated path form.
        #[allow(deprecated)]
        context
            .map(|c| c.seccomp_profile_path.as_str())
            .unwrap_or_default(),
        privileged,
        &caps,
    )?;
    let cwd = match (
        config.working_dir.as_str(),
        input.image.working_dir.as_str(),
    ) {
        ("", "") => "/",
        ("", image) => image,
        (own, _) => own,
    };
    let resources = linux.and_then(|l| l.resources.as_ref());
    let oom = resources::oom_score_adj(resources.map_or(0, |r| r.oom_score_adj));
    let no_new_privs = context.is_some_and(|c| c.no_new_privs);

    let (mounts, rootfs_propagation) = mounts::mounts(
        &config.mounts,
        input.sandbox,
        privileged,
        input.image_volumes,
    )?;
    let devices = devices(config, privileged)?;
    let mut process = json!({
        "terminal": config.tty,
        "user": {
            "uid": identity.uid,
            "gid": identity.gid,
            "additionalGids": identity.additional_gids,
        },
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "noNewPrivileges": no_new_privs,
        "oomScoreAdj": oom,
    });
    if identity.uid == 0 {
        // Root keeps its capabilities across exec; others get them only if ambient.
        process["capabilities"]["inheritable"] = json!(caps);
    }
    let readonly_rootfs = context.is_some_and(|c| c.readonly_rootfs);
    let mut linux_section = json!({
        "namespaces": namespaces(input)?,
        "resources": resources::resources(resources, devices.1),
        "cgroupsPath": input.cgroups_path,
        "devices": devices.0,
    });
    if !privileged {
        let masked: Vec<String> = match context.map(|c| c.masked_paths.clone()) {
            Some(paths) if !paths.is_empty() => paths,
            _ => security::MASKED_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        };
        let readonly: Vec<String> = match context.map(|c| c.readonly_paths.clone()) {
            Some(paths) if !paths.is_empty() => paths,
            _ => security::READONLY_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        };
        linux_section["maskedPaths"] = json!(masked);
        linux_section["readonlyPaths"] = json!(readonly);
    }
    if let Some(seccomp) = seccomp {
        linux_section["seccomp"] = seccomp;
    }
    if let Some(propagation) = rootfs_propagation {
        linux_section["rootfsPropagation"] = json!(propagation);
    }
    if let Some(userns) = &input.sandbox.userns {
        // runc 1.1 wants the mappings even for a user namespace it joins.
        linux_section["uidMappings"] = json!(userns.mappings.uids.to_oci());
        linux_section["gidMappings"] = json!(userns.mappings.gids.to_oci());
    }
    let hostname = if input.sandbox.utsns.is_some() {
        input.sandbox.hostname.clone()
    } else {
        String::new()
    };
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "root": { "path": input.rootfs, "readonly": readonly_rootfs },
        "process": process,
        "mounts": mounts,
        "annotations": config.annotations,
        "linux": linux_section,
    });
    if !hostname.is_empty() {
        spec["hostname"] = json!(hostname);
    }
    serde_json::from_value(spec).map_err(|e| SpecError::Oci(e.to_string()))
}

/// The container's namespaces: the pod's pinned network, IPC and UTS ones
/// (absent: the host's), its own mount namespace, and a PID namespace by mode.
fn namespaces(input: &SpecInput<'_>) -> Result<Vec<Value>, SpecError> {
    let sandbox = input.sandbox;
    let mut out = vec![json!({ "type": "mount" })];
    // The pod's own user namespace, which owns the namespaces below.
    if let Some(userns) = &sandbox.userns {
        out.push(json!({ "type": "user", "path": userns.path }));
    }
    for (kind, path) in [
        ("network", &sandbox.netns),
        ("ipc", &sandbox.ipcns),
        ("uts", &sandbox.utsns),
    ] {
        if let Some(path) = path {
            out.push(json!({ "type": kind, "path": path }));
        }
    }
    // A container that says nothing follows its pod: kubelet always says,
    // but other clients (critest among them) leave the options out.
    let mode = input
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|c| c.namespace_options.as_ref())
        .map_or(Namespaces::of(input.sandbox_config).pid as i32, |o| o.pid);
    let join = |path: &Option<PathBuf>, missing: &str| match path {
        Some(path) => Ok(json!({ "type": "pid", "path": path })),
        None => Err(SpecError::invalid(
            "config.linux.security_context.namespace_options.pid",
            missing,
        )),
    };
    match NamespaceMode::try_from(mode) {
        Ok(NamespaceMode::Node) => {}
        Ok(NamespaceMode::Container) => out.push(json!({ "type": "pid" })),
        Ok(NamespaceMode::Pod) => out.push(join(
            &sandbox.pidns,
            "POD asks for the pod's shared PID namespace, and the pod has none \
             (its own PID mode is not POD)",
        )?),
        Ok(NamespaceMode::Target) => out.push(join(
            &input.target_pid_namespace,
            "TARGET asks for the target container's PID namespace, and none was found",
        )?),
        Err(_) => {
            return Err(SpecError::invalid(
                "config.linux.security_context.namespace_options.pid",
                format!("unknown mode {mode}"),
            ));
        }
    }
    if resources::unified_host() {
        out.push(json!({ "type": "cgroup" }));
    }
    Ok(out)
}

/// Device nodes and the cgroup device rules that allow them.
fn devices(
    config: &ContainerConfig,
    privileged: bool,
) -> Result<(Vec<Value>, Vec<Value>), SpecError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if privileged {
        return Ok((Vec::new(), vec![json!({ "allow": true, "access": "rwm" })]));
    }
    let mut nodes = Vec::new();
    let mut rules = vec![json!({ "allow": false, "access": "rwm" })];
    for device in &config.devices {
        const FIELD: &str = "config.devices";
        let meta = std::fs::metadata(&device.host_path)
            .map_err(|e| SpecError::invalid(FIELD, format!("{}: {e}", device.host_path)))?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(SpecError::invalid(
                FIELD,
                format!("{} is not a device", device.host_path),
            ));
        };
        let rdev = meta.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        let access = if device.permissions.is_empty() {
            "rwm"
        } else {
            &device.permissions
        };
        nodes.push(json!({
            "path": device.container_path, "type": kind, "major": major, "minor": minor,
            "fileMode": meta.mode() & 0o777, "uid": 0, "gid": 0,
        }));
        rules.push(json!({ "allow": true, "type": kind, "major": major, "minor": minor, "access": access }));
    }
    Ok((nodes, rules))
}

#[cfg(test)]
mod tests;
