//! CreateContainer: checks, then the row (reserving the name), then rootfs,
//! bundle and monitor (`setup`). Each step's failure undoes the earlier
//! ones; a crash leaves a `creating` row that the next start cleans up.

use k8s_cri::v1::ContainerEventType;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_cri::v1::{ContainerConfig, CreateContainerRequest, NamespaceMode};
use pier_storage::{ContainerRecord, SandboxRecord};
use prost::Message;

use super::setup::Setup;
use super::spec;
use super::{CREATED, CREATING, ContainerRuntime, lifecycle};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::failpoint::crash_point;
use crate::sandbox::{self, READY, SandboxRuntime};

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// Creates a container in a ready sandbox and returns its id.
pub async fn create(
    daemon: &Arc<Daemon>,
    request: CreateContainerRequest,
) -> Result<String, Error> {
    let config = request.config.ok_or_else(|| invalid("config", "missing"))?;
    let metadata = config
        .metadata
        .clone()
        .ok_or_else(|| invalid("config.metadata", "missing"))?;
    if metadata.name.is_empty() {
        return Err(invalid("config.metadata.name", "must not be empty"));
    }
    let image_ref = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_ref.is_empty() {
        return Err(invalid("config.image.image", "must name an image"));
    }
    crate::validate::container_config(&config)?;
    let sandbox = daemon.require_sandbox(&request.pod_sandbox_id).await?;
    if sandbox.state != READY {
        return Err(Error::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            sandbox.id
        )));
    }
    check_features(daemon, &config, &sandbox).await?;
    let image = daemon
        .images
        .status(&image_ref)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "image",
            id: format!("{image_ref} (pull it first)"),
        })?;

    let id = crate::ids::new_id().map_err(Error::io("generate a container id"))?;
    tracing::Span::current().record("container_id", id.as_str());
    let _guard = daemon.locks.lock(&id).await;
    let handler_name = if sandbox.runtime_handler.is_empty() {
        daemon.config.runtime.default_runtime.clone()
    } else {
        sandbox.runtime_handler.clone()
    };
    let handler = daemon
        .config
        .runtime
        .handlers
        .get(&handler_name)
        .cloned()
        .unwrap_or_default();
    let (runtime_root, _) = daemon.config.runtime_root(&handler_name, &handler);
    let runtime_bin = crate::binaries::resolve(&handler.path).ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "OCI runtime {} is not installed",
            handler.path.display()
        ))
    })?;
    let state_dir = pier_storage::ContainerDir::new(&daemon.config.root, &id)?;
    let runtime_dir = daemon.config.container_run_dir(&id);
    let sandbox_config = sandbox::config_of(&sandbox);
    let log_path = if sandbox_config.log_directory.is_empty() || config.log_path.is_empty() {
        runtime_dir.join("output.log")
    } else {
        PathBuf::from(&sandbox_config.log_directory).join(&config.log_path)
    };
    let mut runtime = ContainerRuntime {
        bundle: state_dir.bundle(),
        runtime_dir: runtime_dir.clone(),
        exit_dirs: vec![runtime_dir.clone(), state_dir.exit()],
        log_path,
        runtime: runtime_bin,
        runtime_root,
        image_ref: image_ref.clone(),
        stop_signal: image.config.stop_signal.clone(),
        ..Default::default()
    };
    let record = ContainerRecord {
        id: id.clone(),
        sandbox_id: sandbox.id.clone(),
        name: metadata.name.clone(),
        attempt: metadata.attempt,
        image_id: image.id.clone(),
        state: CREATING.into(),
        created_at: crate::time::now_ns(),
        config: config.encode_to_vec(),
        runtime: runtime.to_bytes(),
        ..Default::default()
    };
    daemon.db(move |db| db.insert_container(&record)).await?;
    crash_point("create_container.row_inserted");

    let setup = Setup {
        daemon,
        id: &id,
        config: &config,
        sandbox_config: &sandbox_config,
        sandbox: &SandboxRuntime::from_record(&sandbox),
        image: &image,
    };
    let made = setup.run(&mut runtime).await;
    if let Err(e) = made {
        tracing::warn!(error = %e, "container setup failed; undoing it");
        lifecycle::discard(daemon, &id, &runtime).await;
        return Err(e);
    }
    let bytes = runtime.to_bytes();
    let row = id.clone();
    daemon
        .db(move |db| {
            db.set_container_runtime(&row, &bytes)?;
            db.set_container_progress(&row, &lifecycle::progress(CREATED))
        })
        .await?;
    crash_point("create_container.row_created");
    super::exits::watch(Arc::clone(daemon), id.clone(), runtime.clone());
    tracing::info!(pid = runtime.pid, "container created");
    let created = ContainerEventType::ContainerCreatedEvent;
    daemon
        .events
        .emit(&**daemon, &sandbox.id, &id, created)
        .await;
    Ok(id)
}

/// Checks, before anything is made, what the container asks of its pod and
/// of the node: its mounts, its user namespace (its pod's), and recursive
/// read-only mounts only where the pod's runtime handler has them.
async fn check_features(
    daemon: &Daemon,
    config: &ContainerConfig,
    sandbox: &SandboxRecord,
) -> Result<(), Error> {
    spec::mounts::check(&config.mounts)?;
    let pod = SandboxRuntime::from_record(sandbox);
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    crate::userns::check_container(options, pod.userns_mappings())?;
    crate::userns::check_mount_mappings(&config.mounts, pod.userns_mappings())?;
    if config.mounts.iter().any(|m| m.recursive_read_only) {
        let (conf, host) = (&daemon.config, &*daemon.host);
        let handler = &sandbox.runtime_handler;
        if !daemon
            .features
            .handler(conf, host, handler)
            .await
            .recursive_read_only
        {
            return Err(Error::FailedPrecondition(format!(
                "config.mounts.recursive_read_only: runtime handler {handler:?} does not \
                 support recursive read-only mounts here (they need mount_setattr, Linux \
                 5.12, and a runtime whose features list `rro`)"
            )));
        }
    }
    Ok(())
}

/// The PID namespace of the container a TARGET-mode container joins.
pub(super) async fn target_pid_namespace(
    daemon: &Daemon,
    config: &k8s_cri::v1::ContainerConfig,
) -> Result<Option<PathBuf>, Error> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let Some(options) = options else {
        return Ok(None);
    };
    if options.pid != NamespaceMode::Target as i32 {
        return Ok(None);
    }
    let target = daemon
        .find_container(&options.target_id)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "target container",
            id: options.target_id.clone(),
        })?;
    let target = ContainerRuntime::from_record(&target);
    Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", target.pid))))
}
