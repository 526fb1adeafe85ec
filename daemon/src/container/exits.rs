//! Noticing container exits without polling: the host tells when each
//! container's monitor exits (through a pidfd), which the monitor does only
//! after the exit file is on disk. One small task per running container,
//! woken once, so the cost does not grow with a polling interval.

use std::sync::Arc;

use k8s_cri::v1::ContainerEventType;
use pier_proto::exit_file::{self, ExitStatus};
use pier_proto::files;

use super::{ContainerRuntime, EXITED};
use crate::daemon::Daemon;
use crate::host::Urgency;
use pier_storage::db::ContainerProgress;

/// Watches the container's monitor and records the exit when it comes.
pub fn watch(daemon: Arc<Daemon>, id: String, runtime: ContainerRuntime) {
    let watched = daemon.metrics.monitor_watched();
    tokio::spawn(async move {
        if let Err(e) = daemon.host.wait_exit(runtime.monitor()).await {
            tracing::warn!(container_id = %id, error = %e, "cannot watch monitor");
        }
        drop(watched);
        // An exited container's rootfs serves no one: release it before the
        // exit is published (as containerd does when a task ends), so that
        // RemoveContainer, whenever it comes, only moves files. Its writable
        // layer stays for ContainerStats and for the removal.
        if let Err(e) = daemon.images.unmount_rootfs(&id).await {
            tracing::warn!(container_id = %id, error = %e, "unmount the rootfs of an exited container");
        }
        if let Err(e) = record_exit(&daemon, &id, &runtime).await {
            tracing::error!(container_id = %id, error = %e, "recording container exit failed");
        }
        // The runtime's state of an exited container is of no more use:
        // delete it now, off every request's path, rather than in
        // RemoveContainer. For a container without a PID namespace of its
        // own this also kills what its main process left running, as
        // kubelet expects of an exited container.
        if let Err(e) = daemon
            .host
            .runtime_delete(runtime.oci(), &id, Urgency::Background)
            .await
        {
            tracing::debug!(container_id = %id, error = %e, "runtime delete after exit");
        }
    });
}

/// Reads the monitor's exit file (tmpfs copy first, then the durable one)
/// and stores the exit. A monitor that died without writing one is recorded
/// as such, never with a guessed code.
pub async fn record_exit(
    daemon: &Daemon,
    id: &str,
    runtime: &ContainerRuntime,
) -> Result<(), crate::error::Error> {
    let status = runtime
        .exit_dirs
        .iter()
        .find_map(|dir| exit_file::read(dir).ok().flatten());
    let (status, reason, message) = match status {
        Some(status) => {
            if status.oom_killed {
                daemon.metrics.container_oom();
            }
            let reason = if status.oom_killed {
                "OOMKilled"
            } else if status.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            (status, reason, String::new())
        }
        None => (
            ExitStatus {
                exit_code: 255,
                finished_ns: crate::time::now_ns(),
                oom_killed: false,
            },
            "MonitorDied",
            format!(
                "pier-monitor exited without an exit file; see {}",
                runtime.runtime_dir.join(files::MONITOR_LOG).display()
            ),
        ),
    };
    let mut progress = ContainerProgress {
        state: EXITED.into(),
        started_at: 0,
        finished_at: status.finished_ns,
        exit_code: status.exit_code,
        reason: reason.into(),
        message,
    };
    let record = id.to_owned();
    // Read and write in one go: StartContainer may record its start time
    // between the two otherwise, and that time must not be lost.
    let recorded = daemon
        .db(move |db| {
            let Some(current) = db.container(&record)? else {
                return Ok(None);
            };
            progress.started_at = current.started_at;
            db.set_container_progress(&record, &progress)?;
            Ok(Some(current.sandbox_id))
        })
        .await;
    let sandbox_id = match recorded {
        // Removed while we waited: nothing to record.
        Err(crate::error::Error::Db(pier_storage::DbError::NotFound { .. })) => None,
        other => other?,
    };
    tracing::info!(container_id = %id, exit_code = status.exit_code, reason, "container exited");
    let Some(sandbox_id) = sandbox_id else {
        // Removed before its exit was read: nobody waits on it any more,
        // and a channel made now would outlive the container.
        return Ok(());
    };
    daemon.exits.publish(id, status);
    let stopped = ContainerEventType::ContainerStoppedEvent;
    daemon.events.emit(daemon, &sandbox_id, id, stopped).await;
    Ok(())
}
