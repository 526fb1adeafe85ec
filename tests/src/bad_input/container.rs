//! Changes to a valid container config, and how each is applied.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1::*;
use proptest::prelude::*;

use super::values::{argv, container_path, host_path, int32, int64, labels, resources, text};
use crate::workload;

/// What a mutation of a container config changes.
#[derive(Debug, Clone)]
pub enum ContainerChange {
    Name(String),
    Attempt(u32),
    Image(String),
    Command(Vec<String>),
    Args(Vec<String>),
    WorkingDir(String),
    Env(String, String),
    Mount(String, String, bool, i32, bool),
    Device(String, String, String),
    Labels(HashMap<String, String>),
    Annotations(HashMap<String, String>),
    LogPath(String),
    Resources(Box<LinuxContainerResources>),
    User(i64, i64, String, Vec<i64>),
    Capabilities(Vec<String>, Vec<String>),
    Flags(bool, bool, bool, bool, bool),
    Paths(Vec<String>, Vec<String>),
    Seccomp(i32, String),
    Apparmor(i32, String),
    PodId(String),
}

pub fn container_change(area: PathBuf) -> impl Strategy<Value = ContainerChange> {
    prop_oneof![
        text().prop_map(ContainerChange::Name),
        any::<u32>().prop_map(ContainerChange::Attempt),
        text().prop_map(ContainerChange::Image),
        argv().prop_map(ContainerChange::Command),
        argv().prop_map(ContainerChange::Args),
        prop_oneof![container_path(), text()].prop_map(ContainerChange::WorkingDir),
        (text(), text()).prop_map(|(k, v)| ContainerChange::Env(k, v)),
        (
            container_path(),
            host_path(&area),
            any::<bool>(),
            int32(),
            any::<bool>()
        )
            .prop_map(|(c, h, ro, p, rro)| ContainerChange::Mount(c, h, ro, p, rro)),
        (container_path(), host_path(&area), text())
            .prop_map(|(c, h, perm)| ContainerChange::Device(c, h, perm)),
        labels().prop_map(ContainerChange::Labels),
        labels().prop_map(ContainerChange::Annotations),
        prop_oneof![
            Just("../../escape.log".to_owned()),
            Just("/etc/absolute.log".to_owned()),
            Just("dir/../../up.log".to_owned()),
            Just("link/into-sentinel.log".to_owned()),
            Just("nul\0.log".to_owned()),
            text(),
        ]
        .prop_map(ContainerChange::LogPath),
        resources().prop_map(|r| ContainerChange::Resources(Box::new(r))),
        (
            int64(),
            int64(),
            text(),
            prop::collection::vec(int64(), 0..3)
        )
            .prop_map(|(u, g, name, groups)| ContainerChange::User(u, g, name, groups)),
        (
            prop::collection::vec(
                prop_oneof![Just("NET_ADMIN".to_owned()), Just("ALL".to_owned()), text()],
                0..3
            ),
            prop::collection::vec(prop_oneof![Just("ALL".to_owned()), text()], 0..3)
        )
            .prop_map(|(add, drop)| ContainerChange::Capabilities(add, drop)),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(p, ro, nnp, tty, stdin)| ContainerChange::Flags(p, ro, nnp, tty, stdin)),
        (
            prop::collection::vec(container_path(), 0..3),
            prop::collection::vec(container_path(), 0..3)
        )
            .prop_map(|(masked, ro)| ContainerChange::Paths(masked, ro)),
        (int32(), host_path(&area)).prop_map(|(t, p)| ContainerChange::Seccomp(t, p)),
        (int32(), text()).prop_map(|(t, p)| ContainerChange::Apparmor(t, p)),
        text().prop_map(ContainerChange::PodId),
    ]
}

pub fn apply_container(
    config: &mut ContainerConfig,
    pod_id: &mut String,
    change: &ContainerChange,
) {
    let metadata = config.metadata.get_or_insert_with(Default::default);
    match change.clone() {
        ContainerChange::Name(v) => metadata.name = v,
        ContainerChange::Attempt(v) => metadata.attempt = v,
        ContainerChange::Image(v) => {
            config.image = Some(ImageSpec {
                image: v,
                ..Default::default()
            })
        }
        ContainerChange::Command(v) => config.command = v,
        ContainerChange::Args(v) => config.args = v,
        ContainerChange::WorkingDir(v) => config.working_dir = v,
        ContainerChange::Env(key, value) => config.envs.push(KeyValue { key, value }),
        ContainerChange::Mount(container_path, host_path, readonly, propagation, rro) => {
            config.mounts.push(Mount {
                container_path,
                host_path,
                readonly,
                propagation,
                recursive_read_only: rro,
                ..Default::default()
            })
        }
        ContainerChange::Device(container_path, host_path, permissions) => {
            config.devices.push(Device {
                container_path,
                host_path,
                permissions,
            })
        }
        ContainerChange::Labels(v) => config.labels = v,
        ContainerChange::Annotations(v) => config.annotations = v,
        ContainerChange::LogPath(v) => config.log_path = v,
        ContainerChange::Resources(r) => {
            config.linux.get_or_insert_with(Default::default).resources = Some(*r)
        }
        ContainerChange::User(uid, gid, name, groups) => {
            let security = workload::security(config);
            security.run_as_user = Some(Int64Value { value: uid });
            security.run_as_group = Some(Int64Value { value: gid });
            security.run_as_username = name;
            security.supplemental_groups = groups;
        }
        ContainerChange::Capabilities(add, drop) => {
            workload::security(config).capabilities = Some(Capability {
                add_capabilities: add,
                drop_capabilities: drop,
                ..Default::default()
            })
        }
        ContainerChange::Flags(privileged, readonly, no_new_privs, tty, stdin) => {
            let security = workload::security(config);
            security.privileged = privileged;
            security.readonly_rootfs = readonly;
            security.no_new_privs = no_new_privs;
            config.tty = tty;
            config.stdin = stdin;
        }
        ContainerChange::Paths(masked, readonly) => {
            let security = workload::security(config);
            security.masked_paths = masked;
            security.readonly_paths = readonly;
        }
        ContainerChange::Seccomp(profile_type, localhost_ref) => {
            workload::security(config).seccomp = Some(SecurityProfile {
                profile_type,
                localhost_ref,
            })
        }
        ContainerChange::Apparmor(profile_type, localhost_ref) => {
            workload::security(config).apparmor = Some(SecurityProfile {
                profile_type,
                localhost_ref,
            })
        }
        ContainerChange::PodId(v) => *pod_id = v,
    }
}
