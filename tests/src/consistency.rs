//! What the CRI lists against what the node holds (mounts, namespace pins,
//! IPAM leases, runc state, monitors), for tests that crash or stress pierd
//! and then check that nothing leaked and nothing was lost.

use std::collections::{BTreeSet, HashMap};

use k8s_cri::v1::*;

use crate::Pierd;
use crate::node_state::{NodeScope, NodeState};
use crate::workload::Runtime;

/// How many pier-monitor processes name container `id`.
pub fn monitors_of(pierd: &Pierd, id: &str) -> usize {
    let state = NodeState::capture(&NodeScope {
        dir: pierd.dir().to_owned(),
        runc_root: pierd.runroot().join("runtime/runc"),
        cgroup_parent: None,
        pierd_pid: pierd.pid(),
    });
    state
        .processes
        .iter()
        .filter(|p| p.comm == "pier-monitor" && p.cmdline.contains(id))
        .count()
}

/// Everything the CRI lists, by id.
pub struct Listed {
    pub pods: HashMap<String, PodSandbox>,
    pub containers: HashMap<String, Container>,
}

/// What the CRI lists now.
pub async fn listed(cri: &mut Runtime) -> Listed {
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    let containers = cri
        .list_containers(ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    Listed {
        pods: pods.into_iter().map(|p| (p.id.clone(), p)).collect(),
        containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
    }
}

/// Every pod or container thing on the node belongs to a listed object,
/// and every listed object has what its state says it has; one line per
/// disagreement.
pub async fn consistency(pierd: &Pierd, scope: &NodeScope) -> Vec<String> {
    let mut cri = pierd.cri().await.runtime;
    let listed = listed(&mut cri).await;
    let node = NodeState::capture(scope);
    let mut problems = Vec::new();
    for (kind, item, id) in node.owned_items() {
        // Layers and blobs are named by digests, not by objects.
        if item.starts_with("root/layers") || item.starts_with("root/blobs") {
            continue;
        }
        if !listed.pods.contains_key(&id) && !listed.containers.contains_key(&id) {
            problems.push(format!(
                "{kind} {item} belongs to {id}, which the CRI does not list"
            ));
        }
    }
    for file in &node.files {
        let name = file.rsplit('/').next().unwrap_or_default();
        if name.starts_with(".tmp-") || name.starts_with(".trash-") {
            problems.push(format!("half-made layer left: {file}"));
        }
    }
    let ready = PodSandboxState::SandboxReady as i32;
    let leases: BTreeSet<&String> = node.leases.values().collect();
    for (id, pod) in &listed.pods {
        let has_mount = |what: &str| node.mounts.contains(&format!("run/{what}/{id}"));
        let live = ["netns", "utsns", "ipcns"].map(has_mount);
        if pod.state == ready {
            if live.contains(&false) {
                problems.push(format!("ready pod {id} lacks a namespace pin ({live:?})"));
            }
            if !leases.contains(id) {
                problems.push(format!("ready pod {id} holds no IPAM address"));
            }
            if !node.mounts.contains(&format!("run/sandboxes/{id}/shm")) {
                problems.push(format!("ready pod {id} has no /dev/shm mount"));
            }
        } else if live.contains(&true) || leases.contains(id) {
            problems.push(format!(
                "pod {id} is listed not ready but keeps namespaces {live:?} or an address"
            ));
        }
    }
    let running = [
        ContainerState::ContainerCreated,
        ContainerState::ContainerRunning,
    ]
    .map(|s| s as i32);
    for (id, container) in &listed.containers {
        let rootfs_mounted = node
            .mounts
            .contains(&format!("root/containers/{id}/merged"));
        if !running.contains(&container.state) {
            // Its exit released it (RemoveContainer only moves files).
            if container.state == ContainerState::ContainerExited as i32 && rootfs_mounted {
                problems.push(format!("exited container {id} keeps its rootfs mounted"));
            }
            continue;
        }
        let runtime_status = node.runtime_containers.get(id).map(String::as_str);
        let listed_status = match container.state == running[0] {
            true => "created",
            false => "running",
        };
        match runtime_status {
            None => problems.push(format!("live container {id} has no runc state")),
            Some(status) if status != listed_status => problems.push(format!(
                "container {id} is listed {listed_status}, runc says {status}"
            )),
            Some(_) => {}
        }
        let monitor = node
            .processes
            .iter()
            .any(|p| p.comm == "pier-monitor" && p.cmdline.contains(id.as_str()));
        if !monitor {
            problems.push(format!("live container {id} has no monitor"));
        }
        if !rootfs_mounted {
            problems.push(format!("live container {id} has no rootfs mount"));
        }
    }
    problems
}
