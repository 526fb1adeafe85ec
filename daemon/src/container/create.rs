//! CreateContainer: row first (reserving the name), then rootfs, bundle and
//! monitor. Each step's failure undoes the earlier ones; a crash leaves a
//! `creating` row that the next start cleans up.

use k8s_cri::v1::ContainerEventType;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_cri::v1::{CreateContainerRequest, NamespaceMode};
use pier_proto::args::MonitorArgs;
use pier_storage::ContainerRecord;
use prost::Message;

use super::launch::Launch;
use super::spec::{self, SpecInput, UserDb};
use super::{CREATED, CREATING, ContainerRuntime, lifecycle, user};
use crate::daemon::Daemon;
use crate::error::Error;
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
    let sandbox = daemon.require_sandbox(&request.pod_sandbox_id).await?;
    if sandbox.state != READY {
        return Err(Error::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            sandbox.id
        )));
    }
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

    let made = set_up(
        daemon,
        &id,
        &config,
        &sandbox_config,
        &sandbox,
        &image,
        &mut runtime,
    )
    .await;
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
    super::exits::watch(Arc::clone(daemon), id.clone(), runtime.clone());
    tracing::info!(pid = runtime.pid, "container created");
    let created = ContainerEventType::ContainerCreatedEvent;
    daemon
        .events
        .emit(&**daemon, &sandbox.id, &id, created)
        .await;
    Ok(id)
}

#[allow(clippy::too_many_arguments)]
async fn set_up(
    daemon: &Daemon,
    id: &str,
    config: &k8s_cri::v1::ContainerConfig,
    sandbox_config: &k8s_cri::v1::PodSandboxConfig,
    sandbox: &pier_storage::SandboxRecord,
    image: &pier_storage::Image,
    runtime: &mut ContainerRuntime,
) -> Result<(), Error> {
    for dir in [&runtime.bundle, &runtime.runtime_dir, &runtime.exit_dirs[1]] {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    }
    if let Some(parent) = runtime.log_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("create {}", parent.display())))?;
    }
    runtime.rootfs = daemon.images.create_rootfs(id, &image.id).await?;

    let sandbox_runtime = SandboxRuntime::from_record(sandbox);
    let target_pid_namespace = target_pid_namespace(daemon, config).await?;
    let users = UserDb::read(&runtime.rootfs);
    let parent = sandbox_config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .unwrap_or_default();
    let input = SpecInput {
        config,
        sandbox_config,
        sandbox: &sandbox_runtime,
        image: &image.config,
        rootfs: &runtime.rootfs,
        users: &users,
        target_pid_namespace,
        cgroups_path: spec::cgroups_path(daemon.config.runtime.cgroup_manager, parent, id),
    };
    let oci = spec::generate(&input)?;
    let config_json = runtime.bundle.join("config.json");
    oci.save(&config_json).map_err(|source| Error::SaveSpec {
        path: config_json.clone(),
        source,
    })?;

    let monitor =
        crate::binaries::resolve_own(&daemon.config.runtime.monitor_path).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "monitor {} not found beside pierd or in PATH",
                daemon.config.runtime.monitor_path.display()
            ))
        })?;
    let logs = &daemon.config.container_logs;
    let launch = Launch {
        monitor,
        args: MonitorArgs {
            id: id.to_owned(),
            bundle: runtime.bundle.clone(),
            runtime: runtime.runtime.clone(),
            runtime_args: vec!["--root".into(), runtime.runtime_root.clone().into()],
            log_path: runtime.log_path.clone(),
            exit_dirs: runtime.exit_dirs.clone(),
            runtime_dir: runtime.runtime_dir.clone(),
            terminal: config.tty,
            stdin: config.stdin,
            sync_fd: None,
            start_gate_fd: None,
            log_max_line: logs.max_line_size,
            log_max_size: logs.max_file_size,
        },
    };
    let host = Arc::clone(&daemon.host);
    let created = tokio::task::spawn_blocking(move || host.launch_monitor(&launch)).await??;
    runtime.pid = created.pid;
    runtime.start_time = created.start_time;
    runtime.monitor_pid = created.monitor_pid;
    runtime.monitor_start_time = created.monitor_start_time;
    // runc has set the process's ids by the time `create` returns (its init
    // waits for `start` after changing them), so they can be read back now.
    runtime.user = match user::read(created.pid, sandbox_runtime.userns_mappings()) {
        Ok(user) => Some(user),
        Err(e) => {
            tracing::warn!(pid = created.pid, error = %e, "read the container process's identity");
            None
        }
    };
    Ok(())
}

/// The PID namespace of the container a TARGET-mode container joins.
async fn target_pid_namespace(
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
