//! StartContainer, StopContainer, RemoveContainer, ExecSync,
//! ReopenContainerLog, and the restart reconciliation of containers.

use k8s_cri::v1::ContainerEventType;
use std::sync::Arc;
use std::time::Duration;

use pier_proto::client::Client;
use pier_proto::monitor::StartFailure;
use pier_storage::ContainerRecord;
use pier_storage::db::ContainerProgress;

use super::{CREATED, CREATING, ContainerRuntime, EXITED, RUNNING, exits};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::failpoint::crash_point;
use crate::host::{OciRuntime, Urgency};

/// How long a container gets to exit after SIGKILL before Stop gives up.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// A progress row for `state` with nothing else known yet.
pub fn progress(state: &str) -> ContainerProgress {
    ContainerProgress {
        state: state.into(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
    }
}

/// Starts a created container.
pub async fn start(daemon: &Daemon, id: &str) -> Result<(), Error> {
    let Some((_guard, record)) = daemon.lock_container(id).await? else {
        return Err(Error::NotFound {
            kind: "container",
            id: id.to_owned(),
        });
    };
    tracing::Span::current().record("container_id", record.id.as_str());
    if record.state != CREATED {
        return Err(Error::FailedPrecondition(format!(
            "container {} is {}, not created",
            record.id, record.state
        )));
    }
    let runtime = ContainerRuntime::from_record(&record);
    // Taken before runc start: a container that exits at once must never
    // show a finish time earlier than its start time.
    let mut started = progress(RUNNING);
    started.started_at = crate::time::now_ns();
    daemon.host.runtime_start(runtime.oci(), &record.id).await?;
    crash_point("start_container.runc_started");
    let row = record.id.clone();
    // The exit watcher may already have recorded a container that exited at
    // once; never overwrite that with `running`.
    daemon
        .db(move |db| match db.container(&row)? {
            Some(c) if c.state == EXITED => {
                let mut done = progress(EXITED);
                done.started_at = started.started_at;
                done.finished_at = c.finished_at;
                done.exit_code = c.exit_code;
                done.reason = c.reason;
                done.message = c.message;
                db.set_container_progress(&row, &done)
            }
            _ => db.set_container_progress(&row, &started),
        })
        .await?;
    crash_point("start_container.row_running");
    tracing::info!("container started");
    let started = ContainerEventType::ContainerStartedEvent;
    daemon
        .events
        .emit(daemon, &record.sandbox_id, &record.id, started)
        .await;
    Ok(())
}

/// Stops a container: its stop signal, then SIGKILL after `timeout`
/// seconds (0: at once). Stopping an exited or unknown container is fine.
pub async fn stop(daemon: &Daemon, id: &str, timeout: i64) -> Result<(), Error> {
    let Some((_guard, record)) = daemon.lock_container(id).await? else {
        return Ok(());
    };
    tracing::Span::current().record("container_id", record.id.as_str());
    stop_locked(daemon, &record, timeout).await
}

/// Stops the container of `record`, read under its lock.
async fn stop_locked(daemon: &Daemon, record: &ContainerRecord, timeout: i64) -> Result<(), Error> {
    let id = record.id.as_str();
    if record.state == EXITED || record.state == CREATING {
        return Ok(());
    }
    let runtime = ContainerRuntime::from_record(record);
    let mut exited = daemon.exits.subscribe(id);
    if exited.borrow().is_some() {
        return Ok(());
    }
    if timeout > 0 {
        let signal = if runtime.stop_signal.is_empty() {
            "SIGTERM"
        } else {
            &runtime.stop_signal
        };
        kill(daemon, &runtime, id, signal).await;
        let waited = tokio::time::timeout(
            Duration::from_secs(timeout as u64),
            exited.wait_for(Option::is_some),
        )
        .await;
        if waited.is_ok() {
            return Ok(());
        }
    }
    kill(daemon, &runtime, id, "SIGKILL").await;
    crash_point("stop_container.killed");
    match tokio::time::timeout(KILL_GRACE, exited.wait_for(Option::is_some)).await {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::StillRunning {
            id: id.to_owned(),
            waited: KILL_GRACE,
        }),
    }
}

/// Signals the container's processes. A container that is already gone
/// makes runc fail; that is not an error here.
async fn kill(daemon: &Daemon, runtime: &ContainerRuntime, id: &str, signal: &str) {
    if let Err(e) = daemon.host.runtime_kill(runtime.oci(), id, signal).await {
        tracing::debug!(error = %e, signal, "runc kill");
    }
}

/// Removes a container, killing it first if it runs. Its log file stays,
/// as kubelet expects. Removing an unknown container is fine.
pub async fn remove(daemon: &Daemon, id: &str) -> Result<(), Error> {
    let Some((_guard, record)) = daemon.lock_container(id).await? else {
        return Ok(());
    };
    tracing::Span::current().record("container_id", record.id.as_str());
    stop_locked(daemon, &record, 0).await?;
    discard(daemon, &record.id, &ContainerRuntime::from_record(&record)).await;
    tracing::info!("container removed");
    let deleted = ContainerEventType::ContainerDeletedEvent;
    daemon
        .events
        .emit(daemon, &record.sandbox_id, &record.id, deleted)
        .await;
    Ok(())
}

/// Deletes everything of a container but its log: runtime state, rootfs,
/// bundle, monitor files, row. Best effort and idempotent, for remove and
/// for undoing a failed create.
pub async fn discard(daemon: &Daemon, id: &str, runtime: &ContainerRuntime) {
    let began = std::time::Instant::now();
    // Once the exit is published, the exit watcher deletes the runtime's
    // state (runc keeps it in `<root>/<id>`); a second delete here would
    // only race it. What neither reaches, the next startup sweeps.
    let exit_known = daemon.exits.is_published(id);
    let has_state = runtime.runtime_root.join(id).exists();
    if has_state && !exit_known && !runtime.runtime.as_os_str().is_empty() {
        let _ = daemon
            .host
            .runtime_delete(runtime.oci(), id, Urgency::Now)
            .await;
    }
    crash_point("remove_container.runtime_deleted");
    let runtime_done = began.elapsed();
    // Rootfs, writable layer, bundle and durable exit file (one folder), and
    // the monitor's run dir: independent, so both go at once. The row goes
    // last, so a crash before it leaves a container the next start removes.
    let run_dir = runtime.runtime_dir.clone();
    let metrics = Arc::clone(&daemon.metrics);
    let (files, run_dir) = tokio::join!(
        daemon.images.remove_container_files(id),
        tokio::task::spawn_blocking(move || {
            metrics.retire_log_counters(&run_dir);
            match std::fs::remove_dir_all(&run_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err((run_dir, e)),
                _ => Ok(()),
            }
        }),
    );
    if let Err(e) = files {
        tracing::warn!(container_id = %id, error = %e, "remove container files");
    }
    if let Ok(Err((dir, e))) = run_dir {
        tracing::warn!(container_id = %id, dir = %dir.display(), error = %e, "remove monitor dir");
    }
    crash_point("remove_container.files_removed");
    let rootfs_done = began.elapsed();
    let row = id.to_owned();
    if let Err(e) = daemon.db(move |db| db.delete_container(&row)).await {
        tracing::warn!(container_id = %id, error = %e, "delete container row");
    }
    crash_point("remove_container.row_deleted");
    daemon.exits.forget(id);
    tracing::debug!(?runtime_done, ?rootfs_done, total = ?began.elapsed(), "container discarded");
}

/// Stops every container of a sandbox (StopPodSandbox), or removes them
/// (RemovePodSandbox).
pub async fn stop_all_in_sandbox(
    daemon: &Daemon,
    sandbox_id: &str,
    and_remove: bool,
) -> Result<(), Error> {
    let sandbox = sandbox_id.to_owned();
    let containers = daemon
        .db(move |db| db.containers_in_sandbox(&sandbox))
        .await?;
    for container in containers {
        if and_remove {
            remove(daemon, &container.id).await?;
        } else {
            stop(daemon, &container.id, 0).await?;
        }
    }
    Ok(())
}

/// Applies new cgroup limits to a created or running container (`runc update`).
pub async fn update_resources(
    daemon: &Daemon,
    id: &str,
    resources: Option<k8s_cri::v1::LinuxContainerResources>,
) -> Result<(), Error> {
    let record = daemon.require_container(id).await?;
    let _guard = daemon.locks.lock(&record.id).await;
    if record.state != CREATED && record.state != RUNNING {
        return Err(Error::FailedPrecondition(format!(
            "container {} is {}; only created or running containers can be updated",
            record.id, record.state
        )));
    }
    let Some(resources) = resources else {
        return Ok(());
    };
    crate::validate::resources(&resources)?;
    let mut json = super::spec::resources(Some(&resources), Vec::new());
    // Device rules are fixed at create; an empty list here would not mean "none".
    if let Some(object) = json.as_object_mut() {
        object.remove("devices");
    }
    let runtime = ContainerRuntime::from_record(&record);
    let input = json.to_string();
    daemon
        .host
        .runtime_update(runtime.oci(), &record.id, input.as_bytes())
        .await?;
    let mut config = super::config_of(&record);
    config.linux.get_or_insert_default().resources = Some(resources);
    let bytes = prost::Message::encode_to_vec(&config);
    let row = record.id.clone();
    daemon
        .db(move |db| db.set_container_config(&row, &bytes))
        .await?;
    tracing::info!("container resources updated");
    Ok(())
}

/// Runs a command in a running container through its monitor.
pub async fn exec_sync(
    daemon: &Daemon,
    id: &str,
    cmd: Vec<String>,
    timeout: i64,
) -> Result<pier_proto::monitor::ExecResult, Error> {
    let record = daemon.require_container(id).await?;
    if record.state != RUNNING {
        return Err(Error::FailedPrecondition(format!(
            "container {} is not running",
            record.id
        )));
    }
    if cmd.is_empty() {
        return Err(Error::InvalidArgument {
            field: "cmd",
            reason: "must not be empty".into(),
        });
    }
    let socket = ContainerRuntime::from_record(&record).control_socket();
    let timeout = Duration::from_secs(timeout.max(0) as u64);
    let argv = cmd.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut client = Client::connect(&socket)?;
        client.exec(argv, Vec::new(), timeout)
    })
    .await?
    .map_err(Error::monitor(format!("exec in container {}", record.id)))?;
    if result.timed_out {
        return Err(Error::ExecTimedOut {
            id: record.id,
            cmd,
            timeout,
        });
    }
    match result.start_failure() {
        StartFailure::None => Ok(result),
        kind => Err(Error::ExecStart {
            id: record.id,
            cmd,
            reason: result.start_error,
            not_found: kind == StartFailure::NotFound,
        }),
    }
}

/// Asks the monitor to reopen the log file after kubelet rotated it.
pub async fn reopen_log(daemon: &Daemon, id: &str) -> Result<(), Error> {
    let record = daemon.require_container(id).await?;
    if record.state != RUNNING {
        return Err(Error::FailedPrecondition(format!(
            "container {} is not running",
            record.id
        )));
    }
    let socket = ContainerRuntime::from_record(&record).control_socket();
    let what = format!("reopen the log of container {}", record.id);
    tokio::task::spawn_blocking(move || Client::connect(&socket)?.reopen_log())
        .await?
        .map_err(Error::monitor(what))
}

/// At startup: watch the monitors still alive (their containers go on),
/// record the exits that happened while pierd was away from the exit files,
/// and clean up creates a crash interrupted. Watchers start before any
/// status is read, so an exit during startup is not missed.
pub async fn reconcile(daemon: &Arc<Daemon>) -> Result<(), Error> {
    let records = daemon.db(|db| db.containers()).await?;
    // What an interrupted create still runs must end before its staged
    // mounts are released, or it writes into the bare mount points.
    for record in records.iter().filter(|r| r.state == CREATING) {
        let killed = daemon.host.end_interrupted_create(&record.id).await;
        if !killed.is_empty() {
            let pids: Vec<i32> = killed.iter().map(|p| p.pid).collect();
            tracing::warn!(container_id = %record.id, ?pids, "killed what an interrupted create left running");
        }
    }
    super::stage::sweep(&daemon.config.runroot);
    for record in records {
        let runtime = ContainerRuntime::from_record(&record);
        match record.state.as_str() {
            CREATING => {
                tracing::warn!(container_id = %record.id, "removing a container whose create was interrupted");
                if runtime.monitor_pid > 0 && daemon.host.is_alive(runtime.monitor()) {
                    kill(daemon, &runtime, &record.id, "SIGKILL").await;
                }
                let cgroup = bundle_cgroups_path(&runtime.bundle);
                discard(daemon, &record.id, &runtime).await;
                if let Some(path) = cgroup {
                    super::cgroup::remove_empty(&path);
                }
            }
            CREATED | RUNNING => {
                if daemon.host.is_alive(runtime.monitor()) {
                    daemon.metrics.monitor_reattached();
                    if record.state == CREATED {
                        record_start_while_away(daemon, &record.id, &runtime).await?;
                    }
                }
                exits::watch(Arc::clone(daemon), record.id.clone(), runtime);
            }
            _ => {}
        }
    }
    sweep_runtime_state(daemon).await
}

/// The cgroup the bundle's spec gave the container, if the create got as
/// far as writing it.
fn bundle_cgroups_path(bundle: &std::path::Path) -> Option<String> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&text).ok()?;
    Some(spec.pointer("/linux/cgroupsPath")?.as_str()?.to_owned())
}

/// A crash between `runc start` and the row saying so leaves a running
/// container recorded as created: kubelet would see a container that never
/// started and start a second one beside it. The runtime knows better.
async fn record_start_while_away(
    daemon: &Daemon,
    id: &str,
    runtime: &ContainerRuntime,
) -> Result<(), Error> {
    match daemon.host.runtime_state(runtime.oci(), id).await {
        Ok(status) if status == "running" => {
            tracing::warn!(container_id = %id, "container started before a crash recorded it; recording it running");
            // The start itself was not recorded: the first time pierd saw it.
            let mut started = progress(RUNNING);
            started.started_at = crate::time::now_ns();
            let row = id.to_owned();
            daemon
                .db(move |db| db.set_container_progress(&row, &started))
                .await
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(container_id = %id, error = %e, "runtime state");
            Ok(())
        }
    }
}

/// Deletes the OCI runtime's state of containers that exited or no longer
/// exist: what an exit watcher did not reach before pierd stopped. A runtime
/// root the operator configured may be shared with other tools: there only
/// containers pier knows as exited are touched.
async fn sweep_runtime_state(daemon: &Daemon) -> Result<(), Error> {
    let containers = daemon.db(|db| db.containers()).await?;
    let state_of: std::collections::HashMap<String, String> =
        containers.into_iter().map(|c| (c.id, c.state)).collect();
    for (name, handler) in &daemon.config.runtime.handlers {
        let (root, own_root) = daemon.config.runtime_root(name, handler);
        let (Ok(entries), Some(binary)) = (
            std::fs::read_dir(&root),
            crate::binaries::resolve(&handler.path),
        ) else {
            continue;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let stale = match state_of.get(&id) {
                Some(state) => state == EXITED,
                None => own_root,
            };
            if !stale || !entry.path().is_dir() {
                continue;
            }
            tracing::info!(container_id = %id, "deleting runtime state left by an exited container");
            let oci = OciRuntime {
                binary: &binary,
                root: &root,
            };
            if let Err(e) = daemon
                .host
                .runtime_delete(oci, &id, Urgency::Background)
                .await
            {
                tracing::warn!(container_id = %id, error = %e, "runtime delete");
            }
        }
    }
    Ok(())
}
