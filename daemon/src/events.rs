//! What happened to containers, for whoever waits on it: lifecycle events
//! for `GetContainerEvents` (kubelet's evented PLEG), each carrying the
//! pod's status and all its containers' statuses as they are right after
//! the change, so kubelet can update its cache without another call; and
//! each container's exit status, for StopContainer to wait on.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_cri::v1::{ContainerEventResponse, ContainerEventType, ContainerStatus, PodSandboxStatus};
use pier_proto::exit_file::ExitStatus;
use tokio::sync::{broadcast, watch};

use futures_util::future::BoxFuture;

/// Events a subscriber may fall behind by before its stream is ended; it
/// then relists, as kubelet does on any stream error.
const BACKLOG: usize = 1024;

/// What a pod looked like at one moment: its status and its containers'.
pub type PodSnapshot = (PodSandboxStatus, Vec<ContainerStatus>);

/// Reads a pod as it is now, for the events about it. The daemon is one
/// (`container::view`), so events need not know how a pod is stored.
pub trait PodSnapshots: Sync {
    /// The pod's status and its containers' statuses, or `None` if it is gone.
    fn snapshot<'a>(&'a self, sandbox_id: &'a str) -> BoxFuture<'a, Option<PodSnapshot>>;
}

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
    /// with the pod as `pods` reads it now.
    pub async fn emit(
        &self,
        pods: &dyn PodSnapshots,
        sandbox_id: &str,
        subject: &str,
        kind: ContainerEventType,
    ) {
        if !self.wanted() {
            return;
        }
        if let Some(snapshot) = pods.snapshot(sandbox_id).await {
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

/// Exit statuses, published as the monitors report them, for StopContainer
/// to wait on.
#[derive(Debug, Default)]
pub struct ExitWatch {
    channels: Mutex<HashMap<String, watch::Sender<Option<ExitStatus>>>>,
}

impl ExitWatch {
    fn sender(&self, id: &str) -> watch::Sender<Option<ExitStatus>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(id.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }

    /// Resolves to the container's exit status once it is known.
    pub fn subscribe(&self, id: &str) -> watch::Receiver<Option<ExitStatus>> {
        self.sender(id).subscribe()
    }

    /// Whether the container's exit has been published (without making a
    /// channel for a container nobody waits on).
    pub fn is_published(&self, id: &str) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels.get(id).is_some_and(|c| c.borrow().is_some())
    }

    /// Records the container's exit for everyone waiting on it.
    pub fn publish(&self, id: &str, status: ExitStatus) {
        self.sender(id).send_replace(Some(status));
    }

    /// How many containers have a channel.
    #[cfg(test)]
    pub fn channels(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Drops the channel of a removed container.
    pub fn forget(&self, id: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}
