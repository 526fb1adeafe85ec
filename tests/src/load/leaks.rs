//! What a runtime leaves behind: pods and containers it still lists after
//! every client removed its own, and processes and mounts of its private
//! directory that were not there before the load.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;

use crate::Cri;

/// How long clean-up may lag behind the calls that asked for it: exit
/// watchers and the runtime's delete run in the background.
const SETTLE: Duration = Duration::from_secs(20);

/// The processes and mount points that belong to a runtime's private
/// directory: those whose command line names it or whose root lies under it
/// (containers, monitors, shims), the daemon itself excepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    pub processes: BTreeSet<(u32, String)>,
    pub mounts: BTreeSet<String>,
}

impl Footprint {
    pub fn take(dir: &Path, daemon_pid: u32) -> Self {
        let wanted = dir.display().to_string();
        let mut processes = BTreeSet::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == daemon_pid || pid == std::process::id() {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let rooted = std::fs::read_link(entry.path().join("root"))
                .is_ok_and(|root| root.starts_with(dir));
            if rooted || cmdline.contains(&wanted) {
                processes.insert((pid, cmdline.trim().to_owned()));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&wanted))
            .map(str::to_owned)
            .collect();
        Self { processes, mounts }
    }

    /// What this has that `before` did not.
    fn beyond(&self, before: &Self) -> Vec<String> {
        let old: BTreeSet<u32> = before.processes.iter().map(|(pid, _)| *pid).collect();
        let processes = self
            .processes
            .iter()
            .filter(|(pid, _)| !old.contains(pid))
            .map(|(pid, cmd)| format!("process {pid}: {cmd}"));
        let mounts = self
            .mounts
            .difference(&before.mounts)
            .map(|m| format!("mount {m}"));
        processes.chain(mounts).collect()
    }
}

/// Lists what the runtime still has (a leak: every client removed its own
/// pods), removes it so nothing outlives the run, then waits for the
/// processes and mounts to go back to `before`.
pub async fn find(socket: &Path, dir: &Path, daemon_pid: u32, before: &Footprint) -> Vec<String> {
    let mut leaks = Vec::new();
    let Ok(mut cri) = Cri::connect(socket).await else {
        return vec!["the runtime no longer accepts connections".into()];
    };
    let pods = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map(|r| r.into_inner().items)
        .unwrap_or_default();
    let containers = cri
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .map(|r| r.into_inner().containers)
        .unwrap_or_default();
    for container in &containers {
        leaks.push(format!(
            "container {} ({:?}) still listed",
            container.id,
            container.state()
        ));
    }
    for pod in &pods {
        leaks.push(format!("pod {} ({:?}) still listed", pod.id, pod.state()));
    }
    for pod in pods {
        let stop = StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        };
        let _ = cri.runtime.stop_pod_sandbox(stop).await;
        let remove = RemovePodSandboxRequest {
            pod_sandbox_id: pod.id,
        };
        let _ = cri.runtime.remove_pod_sandbox(remove).await;
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = Footprint::take(dir, daemon_pid).beyond(before);
        if left.is_empty() || Instant::now() > deadline {
            leaks.extend(left);
            return leaks;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
