//! StopPodSandbox and RemovePodSandbox. Both are idempotent: every step
//! tolerates what an earlier call, a failed setup or a crash already released.

use k8s_cri::v1::{ContainerEventType, PodSandboxConfig};
use pier_storage::SandboxRecord;
use tokio::sync::OwnedMutexGuard;

use super::{NOT_READY, SandboxRuntime, config_of, files, namespaces};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::events::PodSnapshots;
use crate::failpoint::crash_point;
use crate::network::{cni, conflist::NetworkConfig};

/// Releases the network, namespaces and shm of a sandbox. Failures are
/// logged, never fatal: what cannot be released now is retried next time.
pub(super) async fn release(
    daemon: &Daemon,
    id: &str,
    config: &PodSandboxConfig,
    runtime: &SandboxRuntime,
) {
    if let (Some(netns), Some(list)) = (&runtime.netns, &runtime.cni_conflist)
        && netns.exists()
    {
        let network = NetworkConfig::from_stored(list.clone());
        let metadata = config.metadata.clone().unwrap_or_default();
        let pod = cni::Attachment {
            sandbox_id: id,
            netns,
            pod_name: &metadata.name,
            pod_namespace: &metadata.namespace,
            pod_uid: &metadata.uid,
            runtime_config: &runtime.cni_runtime_config,
        };
        let dirs = &daemon.config.cni.plugin_dirs;
        let added = runtime.cni_result.as_ref();
        if let Err(e) = daemon.host.network_del(&network, dirs, &pod, added).await {
            tracing::warn!(error = %e, "CNI DEL failed; the network may keep the pod's address");
        }
        crash_point("pod.cni_deleted");
    }
    namespaces::unpin(&*daemon.host, runtime);
    crash_point("pod.namespaces_unpinned");
    if let Some(shm) = &runtime.shm {
        daemon.host.unmount_shm(shm);
    }
}

/// Finds the sandbox, takes its lock, marks it not ready and releases its
/// network, namespaces and shm: the common first half of stop and remove.
/// `None` when the sandbox does not exist (already gone, which is fine for
/// both). Its containers live in the namespaces released here: the caller
/// stops or removes them first. The returned record has the state the
/// sandbox had before.
///
/// The row says not ready before anything is released: a crash half way
/// through must not leave a pod listed ready whose address is gone (the
/// next start releases what a not-ready sandbox still holds).
async fn released(
    daemon: &Daemon,
    id: &str,
) -> Result<Option<(SandboxRecord, SandboxRuntime, OwnedMutexGuard<()>)>, Error> {
    let Some(record) = daemon.find_sandbox(id).await? else {
        return Ok(None);
    };
    tracing::Span::current().record("pod_id", record.id.as_str());
    let guard = daemon.locks.lock(&record.id).await;
    if record.state != NOT_READY {
        let sandbox = record.id.clone();
        daemon
            .db(move |db| db.set_sandbox_state(&sandbox, NOT_READY))
            .await?;
    }
    let runtime = SandboxRuntime::from_record(&record);
    release(daemon, &record.id, &config_of(&record), &runtime).await;
    Ok(Some((record, runtime, guard)))
}

/// Stops a sandbox whose containers are stopped: its network and namespaces
/// are released, its row stays, not ready. Unknown ids are fine (already gone).
pub async fn stop(daemon: &Daemon, id: &str) -> Result<(), Error> {
    let Some((record, _, _guard)) = released(daemon, id).await? else {
        return Ok(());
    };
    if record.state != NOT_READY {
        crash_point("stop_pod.stopped");
        tracing::info!("sandbox stopped");
        let stopped = ContainerEventType::ContainerStoppedEvent;
        daemon
            .events
            .emit(daemon, &record.id, &record.id, stopped)
            .await;
    }
    Ok(())
}

/// Removes a sandbox whose containers are removed, and all its state,
/// stopping it first if needed. Unknown ids are fine (already gone).
pub async fn remove(daemon: &Daemon, id: &str) -> Result<(), Error> {
    let Some((record, runtime, _guard)) = released(daemon, id).await? else {
        return Ok(());
    };
    if !runtime.dir.as_os_str().is_empty() {
        files::remove_dir(&runtime.dir)
            .map_err(Error::io(format!("remove {}", runtime.dir.display())))?;
        crash_point("remove_pod.dir_removed");
    }
    // Taken while the row exists: the event names the pod it was.
    let last = match daemon.events.wanted() {
        true => daemon.snapshot(&record.id).await,
        false => None,
    };
    let sandbox = record.id.clone();
    daemon.db(move |db| db.delete_sandbox(&sandbox)).await?;
    crash_point("remove_pod.row_deleted");
    tracing::info!("sandbox removed");
    if let Some(last) = last {
        let deleted = ContainerEventType::ContainerDeletedEvent;
        daemon.events.send(&record.id, deleted, last);
    }
    Ok(())
}
