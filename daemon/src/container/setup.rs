//! The making of a container once its row exists: rootfs, image volumes,
//! `config.json`, and the monitor that runs `runc create`. What is mounted
//! only for runc to copy (`stage`) is released as soon as it has.

use std::path::Path;
use std::sync::Arc;

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use pier_proto::args::MonitorArgs;
use pier_storage::{Image, LayerView};

use super::create::target_pid_namespace;
use super::launch::Launch;
use super::spec::{self, SpecInput, UserDb};
use super::stage::Stage;
use super::{ContainerRuntime, user};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::failpoint::crash_point;
use crate::sandbox::SandboxRuntime;

/// What a container is made from.
pub struct Setup<'a> {
    pub daemon: &'a Daemon,
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox_config: &'a PodSandboxConfig,
    pub sandbox: &'a SandboxRuntime,
    pub image: &'a Image,
}

impl Setup<'_> {
    /// Makes the container, filling in `runtime` as it goes (what is in it
    /// is what a failure must undo).
    pub async fn run(&self, runtime: &mut ContainerRuntime) -> Result<(), Error> {
        for dir in [&runtime.bundle, &runtime.runtime_dir, &runtime.exit_dirs[1]] {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        }
        // The container's log directory (`<name>/` in the pod's), made here
        // and removed again if the container is refused after all.
        let new_log_dir = runtime
            .log_path
            .parent()
            .filter(|parent| !parent.exists())
            .map(Path::to_owned);
        let new_log = !runtime.log_path.exists();
        if let Some(parent) = runtime.log_path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("create {}", parent.display())))?;
        }
        let userns = self.sandbox.userns.as_ref().map(|u| u.path.as_path());
        let made = match Stage::new(&self.daemon.config.runroot, self.id, userns) {
            Ok(mut stage) => {
                let made = self.staged(runtime, &mut stage).await;
                // By now runc has its own copies of what was staged, or has failed.
                tokio::task::spawn_blocking(move || stage.release()).await?;
                made
            }
            Err(e) => Err(e),
        };
        if made.is_err() {
            // The container never ran: a log it was given is pierd's own.
            if new_log {
                let _ = std::fs::remove_file(&runtime.log_path);
            }
            // Only when empty: nothing else is deleted.
            if let Some(dir) = new_log_dir {
                let _ = std::fs::remove_dir(dir);
            }
        }
        made
    }

    async fn staged(&self, runtime: &mut ContainerRuntime, stage: &mut Stage) -> Result<(), Error> {
        let began = std::time::Instant::now();
        // The monitor is spawned and moved to its cgroup (a few
        // milliseconds, mostly the cgroup moves) while the bundle is made;
        // it runs `runc create` only once told the bundle is ready.
        let launch = self.monitor_launch(runtime)?;
        let (bundle_ready, ready) = tokio::sync::oneshot::channel();
        let host = Arc::clone(&self.daemon.host);
        let launching = tokio::task::spawn_blocking(move || host.launch_monitor(&launch, ready));
        if let Err(e) = self.bundle(runtime, stage).await {
            // Its gate closes unopened: the monitor ends without doing anything.
            drop(bundle_ready);
            let _ = launching.await;
            return Err(e);
        }
        let bundle_done = began.elapsed();
        let _ = bundle_ready.send(());
        let created = launching.await??;
        crash_point("create_container.runc_created");
        tracing::debug!(?bundle_done, created = ?began.elapsed(), "container set up");
        runtime.pid = created.pid;
        runtime.start_time = created.start_time;
        runtime.monitor_pid = created.monitor_pid;
        runtime.monitor_start_time = created.monitor_start_time;
        // runc has set the process's ids by the time `create` returns (its
        // init waits for `start` after changing them): read them back now.
        runtime.user = match user::read(created.pid, self.sandbox.userns_mappings()) {
            Ok(user) => Some(user),
            Err(e) => {
                tracing::warn!(pid = created.pid, error = %e, "read the container process's identity");
                None
            }
        };
        Ok(())
    }

    /// The rootfs, image volumes, `config.json` and exec profile.
    async fn bundle(&self, runtime: &mut ContainerRuntime, stage: &mut Stage) -> Result<(), Error> {
        let images = &self.daemon.images;
        let view = stage.layer_view(images.layers_dir())?;
        let pod_root = self
            .sandbox
            .userns_mappings()
            .and_then(|maps| Some((maps.uids.to_host(0)?, maps.gids.to_host(0)?)));
        let layer_view = match (&view, pod_root) {
            (Some(layers), Some(root_owner)) => Some(LayerView { layers, root_owner }),
            _ => None,
        };
        runtime.rootfs = images
            .create_rootfs(self.id, &self.image.id, layer_view)
            .await?;
        crash_point("create_container.rootfs_mounted");
        let mut image_volumes = Vec::new();
        for (index, mount) in self.config.mounts.iter().enumerate() {
            let Some(image) = &mount.image else {
                continue;
            };
            let target = stage.mount_point(&format!("image-{index}"))?;
            images
                .mount_image_volume(self.id, &image.image, &target, view.as_deref())
                .await?;
            image_volumes.push((mount.container_path.clone(), target));
        }

        let target_pid_namespace = target_pid_namespace(self.daemon, self.config).await?;
        let users = UserDb::read(&runtime.rootfs);
        let parent = self
            .sandbox_config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .unwrap_or_default();
        let manager = self.daemon.config.runtime.cgroup_manager;
        let input = SpecInput {
            config: self.config,
            sandbox_config: self.sandbox_config,
            sandbox: self.sandbox,
            image: &self.image.config,
            rootfs: &runtime.rootfs,
            users: &users,
            target_pid_namespace,
            image_volumes: &image_volumes,
            cgroups_path: spec::cgroups_path(manager, parent, self.id),
        };
        let mut oci = spec::generate(&input)?;
        stage.idmap_binds(&mut oci)?;
        let config_json = runtime.bundle.join("config.json");
        oci.save(&config_json).map_err(|source| Error::SaveSpec {
            path: config_json.clone(),
            source,
        })?;
        if self.native_exec(runtime) {
            let path = runtime.bundle.join(pier_proto::files::EXEC_PROFILE);
            let profile = spec::exec_profile(&oci);
            std::fs::write(
                &path,
                prost::Message::encode_length_delimited_to_vec(&profile),
            )
            .map_err(Error::io(format!("write {}", path.display())))?;
        }
        crash_point("create_container.bundle_written");
        Ok(())
    }

    /// Whether this container's monitor may start exec'd processes itself:
    /// `[exec] native` is on and the runtime is runc, the runtime the
    /// native path reproduces (tests/tests/exec_equivalence.rs).
    fn native_exec(&self, runtime: &ContainerRuntime) -> bool {
        self.daemon.config.exec.native && runtime.runtime.file_name().is_some_and(|n| n == "runc")
    }

    /// How the container's monitor, which runs `runc create`, is started.
    fn monitor_launch(&self, runtime: &ContainerRuntime) -> Result<Launch, Error> {
        let config = &self.daemon.config;
        let monitor =
            crate::binaries::resolve_own(&config.runtime.monitor_path).ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "monitor {} not found beside pierd or in PATH",
                    config.runtime.monitor_path.display()
                ))
            })?;
        let logs = &config.container_logs;
        Ok(Launch {
            monitor,
            args: MonitorArgs {
                id: self.id.to_owned(),
                bundle: runtime.bundle.clone(),
                runtime: runtime.runtime.clone(),
                runtime_args: vec!["--root".into(), runtime.runtime_root.clone().into()],
                log_path: runtime.log_path.clone(),
                exit_dirs: runtime.exit_dirs.clone(),
                runtime_dir: runtime.runtime_dir.clone(),
                terminal: self.config.tty,
                stdin: self.config.stdin,
                sync_fd: None,
                start_gate_fd: None,
                log_max_line: logs.max_line_size,
                log_max_size: logs.max_file_size,
            },
        })
    }
}
