//! Containers: OCI spec, monitor launch, lifecycle, exits and views.

pub mod cgroup;
mod create;
pub mod exits;
pub mod launch;
mod lifecycle;
mod setup;
pub mod spec;
mod stage;
pub mod stats;
mod user;
mod view;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use k8s_cri::v1::ContainerConfig;
use pier_storage::ContainerRecord;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::host::{OciRuntime, Process};

pub use create::create;
pub use lifecycle::{
    exec_sync, reconcile, remove, reopen_log, start, stop, stop_all_in_sandbox, update_resources,
};
pub use view::{list, select, status, status_of};

/// Container states as stored. `creating` marks a row whose setup has not
/// finished; a crash leaves it for the next start to clean up.
pub const CREATING: &str = "creating";
pub const CREATED: &str = "created";
pub const RUNNING: &str = "running";
pub const EXITED: &str = "exited";

/// What pierd set up for a container, stored as JSON in its row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerRuntime {
    /// Holds config.json; under the container's state dir.
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// `<runroot>/containers/<id>`: monitor socket, pid files, exit file.
    pub runtime_dir: PathBuf,
    /// Where the monitor writes its exit file (tmpfs first, then durable).
    pub exit_dirs: Vec<PathBuf>,
    pub log_path: PathBuf,
    /// The OCI runtime binary and its `--root`.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// The image as the request named it, and the stop signal from its config.
    pub image_ref: String,
    pub stop_signal: String,
    pub pid: i32,
    pub start_time: u64,
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
    /// The identity the container's first process started with, for
    /// ContainerStatus.
    #[serde(default)]
    pub user: Option<k8s_cri::v1::LinuxContainerUser>,
}

impl ContainerRuntime {
    pub fn from_record(record: &ContainerRecord) -> Self {
        serde_json::from_slice(&record.runtime).unwrap_or_else(|e| {
            tracing::warn!(container_id = %record.id, error = %e, "unreadable container runtime state");
            Self::default()
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join(pier_proto::CONTROL_SOCKET)
    }

    /// The OCI runtime that runs the container.
    pub fn oci(&self) -> OciRuntime<'_> {
        OciRuntime {
            binary: &self.runtime,
            root: &self.runtime_root,
        }
    }

    /// The container's monitor process.
    pub fn monitor(&self) -> Process {
        Process {
            pid: self.monitor_pid,
            start_time: self.monitor_start_time,
        }
    }
}

/// The container's CRI config as stored in its row.
pub fn config_of(record: &ContainerRecord) -> ContainerConfig {
    ContainerConfig::decode(record.config.as_slice()).unwrap_or_default()
}
