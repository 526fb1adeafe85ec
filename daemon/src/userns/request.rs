//! What a pod or a container asks for in `NamespaceOption.userns_options`,
//! checked. kubelet sends mode `POD` with the mappings it allocated for a
//! `hostUsers: false` pod (pkg/kubelet/userns), and mode `NODE`, or nothing
//! at all, for the node's user namespace; its validation already keeps such
//! a pod off the node's network, PID and IPC namespaces, which pier checks
//! again because a pod sharing one of them could not own it.

use k8s_cri::v1::{Mount, NamespaceMode, NamespaceOption, PodSandboxConfig, UserNamespace};

use super::{IdMap, Mappings};
use crate::error::Error;

const FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// The pod's mappings if it asks for a user namespace of its own, `None`
/// for the node's.
pub fn of_pod(config: &PodSandboxConfig) -> Result<Option<Mappings>, Error> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let Some(options) = options else {
        return Ok(None);
    };
    let Some(userns) = &options.userns_options else {
        return Ok(None);
    };
    match NamespaceMode::try_from(userns.mode) {
        Ok(NamespaceMode::Node) => Ok(None),
        Ok(NamespaceMode::Pod) => {
            for (shared, mode) in [
                ("network", options.network),
                ("PID", options.pid),
                ("IPC", options.ipc),
            ] {
                if mode == NamespaceMode::Node as i32 {
                    return Err(invalid(
                        FIELD,
                        format!(
                            "a pod with its own user namespace cannot use the node's {shared} \
                             namespace, which the node's user namespace owns"
                        ),
                    ));
                }
            }
            mappings(userns).map(Some)
        }
        _ => Err(invalid(
            FIELD,
            format!(
                "mode {} is not supported; a user namespace is the pod's (POD) or the node's (NODE)",
                userns.mode
            ),
        )),
    }
}

fn mappings(userns: &UserNamespace) -> Result<Mappings, Error> {
    let refused =
        |field: &'static str| move |e| invalid(field, format!("mappings pier cannot honour: {e}"));
    Ok(Mappings {
        uids: IdMap::from_cri(&userns.uids).map_err(refused(concat!(
            "config.linux.security_context.namespace_options.userns_options",
            ".uids"
        )))?,
        gids: IdMap::from_cri(&userns.gids).map_err(refused(concat!(
            "config.linux.security_context.namespace_options.userns_options",
            ".gids"
        )))?,
    })
}

/// Checks a container's own `userns_options` against its pod's: kubelet
/// sends the pod's again, and a container cannot have another, since all of
/// a pod's containers share its user namespace.
pub fn check_container(
    options: Option<&NamespaceOption>,
    pod: Option<&Mappings>,
) -> Result<(), Error> {
    let Some(userns) = options.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(());
    };
    let mode = NamespaceMode::try_from(userns.mode);
    match (mode, pod) {
        (Ok(NamespaceMode::Node), None) => Ok(()),
        (Ok(NamespaceMode::Pod), Some(pod))
            if (userns.uids.is_empty() || pod.uids.same_as(&userns.uids))
                && (userns.gids.is_empty() || pod.gids.same_as(&userns.gids)) =>
        {
            Ok(())
        }
        (Ok(NamespaceMode::Pod), None) => Err(invalid(
            FIELD,
            "asks for the pod's user namespace, and the pod runs in the node's",
        )),
        (Ok(NamespaceMode::Node), Some(_)) => Err(invalid(
            FIELD,
            "asks for the node's user namespace, and its pod has one of its own",
        )),
        _ => Err(invalid(
            FIELD,
            "a container shares its pod's user namespace, with the pod's mappings",
        )),
    }
}

/// Checks a mount's own mappings (`Mount.uidMappings`), which kubelet
/// leaves empty: pier idmaps every mount of a pod with its own user
/// namespace with the pod's mappings, so others cannot be honoured.
pub fn check_mount_mappings(mounts: &[Mount], pod: Option<&Mappings>) -> Result<(), Error> {
    for m in mounts {
        for (field, ranges, pod_map) in [
            (
                "config.mounts.uidMappings",
                &m.uid_mappings,
                pod.map(|p| &p.uids),
            ),
            (
                "config.mounts.gidMappings",
                &m.gid_mappings,
                pod.map(|p| &p.gids),
            ),
        ] {
            if ranges.is_empty() || pod_map.is_some_and(|p| p.same_as(ranges)) {
                continue;
            }
            return Err(invalid(
                field,
                format!(
                    "{}: a mount is idmapped with its pod's user namespace mappings, and \
                     takes no others",
                    m.container_path
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{IdMapping, LinuxPodSandboxConfig, LinuxSandboxSecurityContext};

    fn pod(options: NamespaceOption) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(options),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn userns(mode: NamespaceMode, host: u32) -> Option<UserNamespace> {
        let range = vec![IdMapping {
            host_id: host,
            container_id: 0,
            length: 65536,
        }];
        Some(UserNamespace {
            mode: mode as i32,
            uids: range.clone(),
            gids: range,
        })
    }

    #[test]
    fn pod_mode_gives_mappings_and_node_mode_none() {
        let own = pod(NamespaceOption {
            userns_options: userns(NamespaceMode::Pod, 131_072),
            ..Default::default()
        });
        let maps = of_pod(&own).expect("valid").expect("own namespace");
        assert_eq!(maps.uids.to_host(0), Some(131_072));
        let node = pod(NamespaceOption {
            userns_options: userns(NamespaceMode::Node, 0),
            ..Default::default()
        });
        assert_eq!(of_pod(&node).expect("valid"), None);
        assert_eq!(of_pod(&PodSandboxConfig::default()).expect("valid"), None);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_naming_the_field() {
        let host_net = pod(NamespaceOption {
            network: NamespaceMode::Node as i32,
            userns_options: userns(NamespaceMode::Pod, 131_072),
            ..Default::default()
        });
        let err = of_pod(&host_net).expect_err("accepted").to_string();
        assert!(
            err.contains("userns_options") && err.contains("network"),
            "{err}"
        );
        let root = pod(NamespaceOption {
            userns_options: userns(NamespaceMode::Pod, 0),
            ..Default::default()
        });
        let err = of_pod(&root).expect_err("accepted").to_string();
        assert!(err.contains("userns_options.uids"), "{err}");
        let container = pod(NamespaceOption {
            userns_options: userns(NamespaceMode::Container, 131_072),
            ..Default::default()
        });
        assert!(of_pod(&container).is_err());
    }

    #[test]
    fn containers_follow_their_pod() {
        let maps = of_pod(&pod(NamespaceOption {
            userns_options: userns(NamespaceMode::Pod, 131_072),
            ..Default::default()
        }))
        .expect("valid");
        let same = NamespaceOption {
            userns_options: userns(NamespaceMode::Pod, 131_072),
            ..Default::default()
        };
        assert!(check_container(Some(&same), maps.as_ref()).is_ok());
        assert!(check_container(None, maps.as_ref()).is_ok());
        let other = NamespaceOption {
            userns_options: userns(NamespaceMode::Pod, 262_144),
            ..Default::default()
        };
        assert!(check_container(Some(&other), maps.as_ref()).is_err());
        assert!(check_container(Some(&same), None).is_err());
    }
}
