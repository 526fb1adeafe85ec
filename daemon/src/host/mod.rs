//! The runtime seam: everything pierd does to the node beyond its own files
//! and database goes through [`Host`]: the OCI runtime's commands, the
//! container monitors and other processes it watches, a pod's pinned
//! namespaces and `/dev/shm`, and the CNI plugins. [`linux::LinuxHost`] is
//! the real thing; unit tests hold a fake that records what it was asked,
//! so the lifecycle logic above it runs without root, runc or a kernel's
//! namespaces.

#[cfg(test)]
pub mod fake;
mod leftovers;
pub mod linux;
mod namespaces;
mod runc;
mod runc_direct;

use std::io;
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use pier_proto::monitor::Created;
use serde_json::Value;

use crate::container::launch::{BundleReady, Launch, LaunchError};
use crate::network::cni::{Attachment, CniError};
use crate::network::conflist::NetworkConfig;
use crate::pinns::PinRequest;

pub use namespaces::NamespaceError;
pub use runc::{RuncError, Urgency};

/// An OCI runtime binary and the root it keeps its containers' state under.
#[derive(Debug, Clone, Copy)]
pub struct OciRuntime<'a> {
    pub binary: &'a Path,
    pub root: &'a Path,
}

/// A process as pierd knows it. A pid alone can be recycled; with the start
/// time (clock ticks after boot) it names one process only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    pub pid: i32,
    pub start_time: u64,
}

/// Everything pierd does to the node, in one place.
pub trait Host: Send + Sync {
    /// `start <id>`: runs a created container's process.
    fn runtime_start<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RuncError>>;

    /// `state <id>`: the container's status as the runtime sees it
    /// (`created`, `running`, `stopped`, `paused`).
    fn runtime_state<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<String, RuncError>>;

    /// `kill --all <id> <signal>`: signals every process of the container.
    fn runtime_kill<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
        signal: &'a str,
    ) -> BoxFuture<'a, Result<(), RuncError>>;

    /// `update --resources - <id>`, with the resources (OCI JSON) on stdin.
    fn runtime_update<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
        resources: &'a [u8],
    ) -> BoxFuture<'a, Result<(), RuncError>>;

    /// `delete --force <id>`: the runtime's state of the container, and any
    /// process of it still running.
    fn runtime_delete<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
        urgency: Urgency,
    ) -> BoxFuture<'a, Result<(), RuncError>>;

    /// Spawns a container's monitor and waits for its report (`runc create`
    /// done). Blocking: call it on a blocking thread.
    /// The monitor's `runc create` waits for `ready`; dropped unsent, the
    /// monitor ends at once and the launch fails with `Cancelled`.
    fn launch_monitor(&self, launch: &Launch, ready: BundleReady) -> Result<Created, LaunchError>;

    /// Resolves once `process` has exited; at once if it already has. An
    /// error means it cannot be watched.
    fn wait_exit(&self, process: Process) -> BoxFuture<'_, io::Result<()>>;

    /// The start time of the process with this pid, if there is one.
    fn start_time(&self, pid: i32) -> Option<u64>;

    /// Whether `process` still runs (and its pid is not another's by now).
    fn is_alive(&self, process: Process) -> bool {
        self.start_time(process.pid) == Some(process.start_time)
    }

    /// Sends SIGKILL to `process` if it still runs.
    fn kill(&self, process: Process) -> nix::Result<()>;

    /// Kills whatever a create of `id` that pierd did not see through left
    /// running (its monitor, the runtime's `create`, the container's init),
    /// found without a recorded pid, and resolves once all of it has ended:
    /// nothing may write to the rootfs while it is removed.
    fn end_interrupted_create<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Vec<Process>>;

    /// Creates and pins the namespaces `request` names (through the
    /// `pierd pin-namespaces` helper). For a PID namespace the helper starts
    /// `pier-infra`, which is returned.
    fn pin_namespaces<'a>(
        &'a self,
        request: &'a PinRequest,
    ) -> BoxFuture<'a, Result<Option<Process>, NamespaceError>>;

    /// Whether `path` is still a pinned namespace (a reboot empties /run).
    fn is_pinned(&self, path: &Path) -> bool;

    /// The first process (the pod's infra) of the PID namespace pinned at
    /// `pin`, if one still runs.
    fn pid_namespace_init(&self, pin: &Path) -> Option<Process>;

    /// Releases a pinned namespace; one already released is fine.
    fn unpin_namespace(&self, path: &Path);

    /// Mounts a pod's private `/dev/shm` (a tmpfs) at `path`, which exists.
    fn mount_shm(&self, path: &Path) -> nix::Result<()>;

    /// Unmounts a pod's `/dev/shm`; an absent mount is fine.
    fn unmount_shm(&self, path: &Path);

    /// CNI ADD: `lo` first, then the network's plugins in order. Returns
    /// the last plugin's result.
    fn network_add<'a>(
        &'a self,
        network: &'a NetworkConfig,
        plugin_dirs: &'a [PathBuf],
        pod: &'a Attachment<'a>,
    ) -> BoxFuture<'a, Result<Value, CniError>>;

    /// CNI DEL through the network's plugins in reverse, each handed the ADD
    /// result.
    fn network_del<'a>(
        &'a self,
        network: &'a NetworkConfig,
        plugin_dirs: &'a [PathBuf],
        pod: &'a Attachment<'a>,
        add_result: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<(), CniError>>;
}
