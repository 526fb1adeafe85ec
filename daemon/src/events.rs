//! Container lifecycle events for `GetContainerEvents` (kubelet's evented
//! PLEG): each event carries the pod's status and all its containers'
//! statuses as they are right after the change, so kubelet can update its
//! cache without another call.

use k8s_cri::v1::{ContainerEventResponse, ContainerEventType, ContainerStatus, PodSandboxStatus};
use tokio::sync::broadcast;

use crate::container::{self, ContainerRuntime};
use crate::daemon::Daemon;
use crate::sandbox::{self, SandboxRuntime};

/// Events a subscriber may fall behind by before its stream is ended; it
/// then relists, as kubelet does on any stream error.
const BACKLOG: usize = 1024;

/// What a pod looked like at one moment: its status and its containers'.
pub type PodSnapshot = (PodSandboxStatus, Vec<ContainerStatus>);

#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<ContainerEventResponse>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.sender.subscribe()
    }

    /// Whether anyone listens; snapshots cost database reads, so callers
    /// skip them when nobody does.
    pub fn wanted(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Sends an event about `subject` (a container, or the sandbox itself)
    /// with the pod as it is now.
    pub async fn emit(
        &self,
        daemon: &Daemon,
        sandbox_id: &str,
        subject: &str,
        kind: ContainerEventType,
    ) {
        if !self.wanted() {
            return;
        }
        if let Some(snapshot) = snapshot(daemon, sandbox_id).await {
            self.send(subject, kind, snapshot);
        }
    }

    /// Sends an event with a snapshot taken earlier: for a sandbox that is
    /// gone by the time the event is due.
    pub fn send(&self, subject: &str, kind: ContainerEventType, (pod, containers): PodSnapshot) {
        let event = ContainerEventResponse {
            container_id: subject.to_owned(),
            container_event_type: kind as i32,
            created_at: crate::time::now_ns(),
            pod_sandbox_status: Some(pod),
            containers_statuses: containers,
        };
        // An error only means the last subscriber left meanwhile.
        let _ = self.sender.send(event);
    }
}

/// The pod's status and its containers' statuses, or `None` if it is gone.
pub async fn snapshot(daemon: &Daemon, sandbox_id: &str) -> Option<PodSnapshot> {
    let id = sandbox_id.to_owned();
    let read = daemon
        .db(move |db| {
            let Some(sandbox) = db.sandbox(&id)? else {
                return Ok(None);
            };
            Ok(Some((sandbox, db.containers_in_sandbox(&id)?)))
        })
        .await;
    let (record, containers) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(pod_id = %sandbox_id, error = %e, "read the pod for a container event");
            return None;
        }
    };
    let pod = sandbox::status_of(
        &record,
        &sandbox::config_of(&record),
        &SandboxRuntime::from_record(&record),
    );
    let containers = containers
        .iter()
        .map(|c| container::status_of(c, &ContainerRuntime::from_record(c)))
        .collect();
    Some((pod, containers))
}
