//! Pod sandboxes: pinned namespaces, CNI network, per-pod files.

mod files;
pub mod namespaces;
mod reconcile;
mod run;
mod teardown;
mod view;

use std::path::PathBuf;

use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::userns::{Mappings, PodUserns};
use pier_storage::SandboxRecord;

pub use reconcile::reconcile;
pub use run::run;
pub use teardown::{remove, stop};
pub use view::{list, status, status_of};

/// Sandbox states as stored.
pub const READY: &str = "ready";
pub const NOT_READY: &str = "notready";

/// What pierd set up for a sandbox, stored as JSON in its row so that stop,
/// remove and a restarted pierd know exactly what to release.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxRuntime {
    /// `<runroot>/sandboxes/<id>`: hostname, resolv.conf, hosts, shm.
    pub dir: PathBuf,
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// The pod's own user namespace (`hostUsers: false`): its pin and its
    /// mappings. The pod's other namespaces belong to it.
    #[serde(default)]
    pub userns: Option<PodUserns>,
    /// The pinned shared PID namespace, for pods whose PID mode is POD.
    pub pidns: Option<PathBuf>,
    /// The `pier-infra` process holding `pidns`, as (pid, start time).
    pub infra: Option<(i32, u64)>,
    /// The pod's /dev/shm tmpfs; `None` with host IPC.
    pub shm: Option<PathBuf>,
    pub hostname: String,
    /// The CNI network list used for ADD, kept for DEL even if the conf dir changes.
    pub cni_conflist: Option<serde_json::Value>,
    pub cni_result: Option<serde_json::Value>,
    /// The runtime config (port mappings) given to ADD; DEL needs the same.
    pub cni_runtime_config: serde_json::Value,
    pub ips: Vec<String>,
}

impl SandboxRuntime {
    pub fn from_record(record: &SandboxRecord) -> Self {
        serde_json::from_slice(&record.runtime).unwrap_or_else(|e| {
            tracing::warn!(pod_id = %record.id, error = %e, "unreadable sandbox runtime state");
            Self::default()
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The pod's id mappings, if it has a user namespace of its own.
    pub fn userns_mappings(&self) -> Option<&Mappings> {
        self.userns.as_ref().map(|u| &u.mappings)
    }
}

/// The pod's CRI config as stored in its row.
pub fn config_of(record: &SandboxRecord) -> PodSandboxConfig {
    PodSandboxConfig::decode(record.config.as_slice()).unwrap_or_default()
}

/// The namespace modes a pod asked for (defaults: its own of each).
#[derive(Debug, Clone, Copy)]
pub struct Namespaces {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
}

impl Namespaces {
    pub fn of(config: &PodSandboxConfig) -> Self {
        let options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let mode = |m: Option<i32>| {
            m.and_then(|m| NamespaceMode::try_from(m).ok())
                .unwrap_or(NamespaceMode::Pod)
        };
        Self {
            network: mode(options.map(|o| o.network)),
            pid: mode(options.map(|o| o.pid)),
            ipc: mode(options.map(|o| o.ipc)),
        }
    }

    pub fn host_network(&self) -> bool {
        self.network == NamespaceMode::Node
    }

    pub fn host_ipc(&self) -> bool {
        self.ipc == NamespaceMode::Node
    }

    /// Whether the pod's containers share one PID namespace held by pier-infra.
    pub fn shared_pid(&self) -> bool {
        self.pid == NamespaceMode::Pod
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}
