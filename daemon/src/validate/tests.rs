use k8s_cri::v1::*;

use super::*;

fn refused(result: Result<(), Error>) -> String {
    match result {
        Err(Error::InvalidArgument { field, reason }) => format!("{field}: {reason}"),
        other => panic!("not refused as invalid: {other:?}"),
    }
}

#[test]
fn paths_that_leave_their_directory_are_refused() {
    let mut config = ContainerConfig {
        log_path: "../../etc/passwd".into(),
        ..Default::default()
    };
    assert!(refused(container_config(&config)).contains("\"..\""));
    config.log_path = "/etc/passwd".into();
    assert!(refused(container_config(&config)).contains("relative"));
    config.log_path = "name/0.log".into();
    container_config(&config).expect("kubelet's log path");
}

#[test]
fn nul_bytes_and_unknown_enums_are_refused() {
    let config = ContainerConfig {
        args: vec!["a\0b".into()],
        ..Default::default()
    };
    assert!(refused(container_config(&config)).starts_with("config.args"));
    let config = ContainerConfig {
        mounts: vec![Mount {
            container_path: "/data".into(),
            host_path: "/tmp".into(),
            propagation: 7,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(refused(container_config(&config)).starts_with("config.mounts.propagation"));
}

#[test]
fn long_values_are_quoted_short() {
    let long = "x".repeat(100_000);
    let config = ContainerConfig {
        working_dir: long,
        ..Default::default()
    };
    let message = refused(container_config(&config));
    assert!(message.len() < 300, "{}", message.len());
    assert!(message.contains("100000 bytes"));
}

#[test]
fn limits_follow_the_kernel_and_kubelet() {
    let ok = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: -997,
        cpuset_cpus: "0".into(),
        ..Default::default()
    };
    resources(&ok).expect("what kubelet sends");
    resources(&LinuxContainerResources::default()).expect("nothing set");
    for bad in [
        LinuxContainerResources {
            cpu_period: 10,
            ..ok.clone()
        },
        LinuxContainerResources {
            cpu_quota: -5,
            ..ok.clone()
        },
        LinuxContainerResources {
            cpu_shares: -1,
            ..ok.clone()
        },
        LinuxContainerResources {
            memory_limit_in_bytes: -1,
            ..ok.clone()
        },
        LinuxContainerResources {
            oom_score_adj: 1001,
            ..ok.clone()
        },
        LinuxContainerResources {
            cpuset_cpus: "3-1".into(),
            ..ok.clone()
        },
        LinuxContainerResources {
            cpuset_cpus: "0-100000".into(),
            ..ok.clone()
        },
        LinuxContainerResources {
            cpuset_mems: "x".into(),
            ..ok.clone()
        },
        LinuxContainerResources {
            memory_swap_limit_in_bytes: 1 << 20,
            ..ok.clone()
        },
        LinuxContainerResources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "3XB".into(),
                limit: 1,
            }],
            ..ok.clone()
        },
        LinuxContainerResources {
            unified: [("../../memory.max".to_owned(), "1".to_owned())].into(),
            ..ok.clone()
        },
    ] {
        refused(resources(&bad));
    }
}

#[test]
fn pod_ports_and_dns_are_checked() {
    let mut config = PodSandboxConfig {
        port_mappings: vec![PortMapping {
            container_port: 0,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(refused(pod_config(&config)).contains("container port 0"));
    config.port_mappings[0].container_port = 80;
    config.port_mappings[0].host_port = 8080;
    pod_config(&config).expect("a published port");
    config.dns_config = Some(DnsConfig {
        searches: vec!["svc.local\nnameserver 1.2.3.4".into()],
        ..Default::default()
    });
    assert!(refused(pod_config(&config)).contains("resolv.conf word"));
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    pod_config(&config).expect("kubelet's DNS config");
    config.log_directory = "relative/logs".into();
    refused(pod_config(&config));
}
