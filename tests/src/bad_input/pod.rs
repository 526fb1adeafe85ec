//! Changes to a valid pod config, and how each is applied.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1::*;
use proptest::prelude::*;

use super::values::{host_path, int32, int64, labels, text};
use crate::workload;

/// What a mutation of a pod config changes.
#[derive(Debug, Clone)]
pub enum PodChange {
    Name(String),
    Namespace(String),
    Uid(String),
    Attempt(u32),
    Hostname(String),
    LogDirectory(String),
    Labels(HashMap<String, String>),
    Annotations(HashMap<String, String>),
    Dns(Vec<String>, Vec<String>, Vec<String>),
    Port(i32, i32, i32, String),
    CgroupParent(String),
    Sysctls(HashMap<String, String>),
    Namespaces(i32, i32, i32, String),
    RunAsUser(i64),
    SupplementalGroups(Vec<i64>),
    Resources(i64, i64, i64, i64),
    Seccomp(i32, String),
    Handler(String),
}

pub fn pod_change(area: PathBuf) -> impl Strategy<Value = PodChange> {
    prop_oneof![
        text().prop_map(PodChange::Name),
        text().prop_map(PodChange::Namespace),
        text().prop_map(PodChange::Uid),
        any::<u32>().prop_map(PodChange::Attempt),
        text().prop_map(PodChange::Hostname),
        host_path(&area).prop_map(PodChange::LogDirectory),
        labels().prop_map(PodChange::Labels),
        labels().prop_map(PodChange::Annotations),
        (
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(text(), 0..3)
        )
            .prop_map(|(s, d, o)| PodChange::Dns(s, d, o)),
        (int32(), int32(), int32(), text()).prop_map(|(p, c, h, ip)| PodChange::Port(p, c, h, ip)),
        text().prop_map(PodChange::CgroupParent),
        prop::collection::hash_map(
            prop_oneof![
                Just("net.ipv4.ip_forward".to_owned()),
                Just("kernel.shm_rmid_forced".to_owned()),
                Just("vm.swappiness".to_owned()),
                text()
            ],
            text(),
            0..3
        )
        .prop_map(PodChange::Sysctls),
        (int32(), int32(), int32(), text())
            .prop_map(|(n, p, i, t)| PodChange::Namespaces(n, p, i, t)),
        int64().prop_map(PodChange::RunAsUser),
        prop::collection::vec(int64(), 0..4).prop_map(PodChange::SupplementalGroups),
        (int64(), int64(), int64(), int64())
            .prop_map(|(p, q, s, m)| PodChange::Resources(p, q, s, m)),
        (int32(), host_path(&area)).prop_map(|(t, p)| PodChange::Seccomp(t, p)),
        text().prop_map(PodChange::Handler),
    ]
}

pub fn apply_pod(config: &mut PodSandboxConfig, change: &PodChange) -> String {
    let metadata = config.metadata.get_or_insert_with(Default::default);
    let mut handler = String::new();
    match change.clone() {
        PodChange::Name(v) => metadata.name = v,
        PodChange::Namespace(v) => metadata.namespace = v,
        PodChange::Uid(v) => metadata.uid = v,
        PodChange::Attempt(v) => metadata.attempt = v,
        PodChange::Hostname(v) => config.hostname = v,
        PodChange::LogDirectory(v) => config.log_directory = v,
        PodChange::Labels(v) => config.labels = v,
        PodChange::Annotations(v) => config.annotations = v,
        PodChange::Dns(servers, searches, options) => {
            config.dns_config = Some(DnsConfig {
                servers,
                searches,
                options,
            })
        }
        PodChange::Port(protocol, container_port, host_port, host_ip) => {
            config.port_mappings.push(PortMapping {
                protocol,
                container_port,
                host_port,
                host_ip,
            })
        }
        PodChange::CgroupParent(v) => {
            config
                .linux
                .get_or_insert_with(Default::default)
                .cgroup_parent = v
        }
        PodChange::Sysctls(v) => config.linux.get_or_insert_with(Default::default).sysctls = v,
        PodChange::Namespaces(network, pid, ipc, target_id) => {
            workload::pod_security(config).namespace_options = Some(NamespaceOption {
                network,
                pid,
                ipc,
                target_id,
                ..Default::default()
            })
        }
        PodChange::RunAsUser(v) => {
            workload::pod_security(config).run_as_user = Some(Int64Value { value: v })
        }
        PodChange::SupplementalGroups(v) => workload::pod_security(config).supplemental_groups = v,
        PodChange::Resources(period, quota, shares, memory) => {
            let linux = config.linux.get_or_insert_with(Default::default);
            linux.resources = Some(LinuxContainerResources {
                cpu_period: period,
                cpu_quota: quota,
                cpu_shares: shares,
                memory_limit_in_bytes: memory,
                ..Default::default()
            })
        }
        PodChange::Seccomp(profile_type, localhost_ref) => {
            workload::pod_security(config).seccomp = Some(SecurityProfile {
                profile_type,
                localhost_ref,
            })
        }
        PodChange::Handler(v) => handler = v,
    }
    handler
}
