//! Pinning a pod's namespaces, and ending the `pier-infra` process that
//! holds a shared PID namespace, through the host.

use std::path::Path;

use crate::host::{Host, NamespaceError, Process};
use crate::pinns::PinRequest;

use super::SandboxRuntime;

/// Creates and pins the namespaces `runtime` names, with the pod's hostname
/// and namespaced sysctls applied inside them. For a PID namespace the
/// helper also starts `pier-infra`, recorded in `runtime.infra`.
pub async fn pin(
    host: &dyn Host,
    runtime: &mut SandboxRuntime,
    infra: &Path,
    sysctls: &[(String, String)],
) -> Result<(), NamespaceError> {
    let userns = runtime.userns.as_ref();
    let pins = [
        &runtime.netns,
        &runtime.ipcns,
        &runtime.utsns,
        &runtime.pidns,
    ];
    if pins.iter().all(|path| path.is_none()) && userns.is_none() {
        return Ok(());
    }
    let shared_pid = runtime.pidns.is_some();
    let request = PinRequest {
        net: runtime.netns.clone(),
        ipc: runtime.ipcns.clone(),
        uts: runtime.utsns.clone(),
        pid: runtime.pidns.clone(),
        infra: shared_pid.then(|| infra.to_owned()),
        infra_root: shared_pid.then(|| runtime.dir.join("infra")),
        hostname: runtime.utsns.is_some().then(|| runtime.hostname.clone()),
        sysctls: sysctls.to_vec(),
        user: userns.map(|u| u.path.clone()),
        uid_map: userns.map(|u| u.mappings.uids.clone()),
        gid_map: userns.map(|u| u.mappings.gids.clone()),
        inside_userns: false,
    };
    let infra = host.pin_namespaces(&request).await?;
    runtime.infra = infra.map(|p| (p.pid, p.start_time));
    Ok(())
}

/// The pod's infra process, if it has one.
fn infra(runtime: &SandboxRuntime) -> Option<Process> {
    runtime
        .infra
        .map(|(pid, start_time)| Process { pid, start_time })
}

/// Whether the pod's infra process, if it has one, still runs.
pub fn infra_alive(host: &dyn Host, runtime: &SandboxRuntime) -> bool {
    infra(runtime).is_none_or(|infra| host.is_alive(infra))
}

/// Ends the infra process, which takes down whatever still runs in the
/// pod's PID namespace, and releases every pinned namespace of the sandbox.
/// An infra process whose pid a crash kept from being recorded is found
/// through the pinned namespace: unpinning alone would leave it running
/// (it holds the namespace open itself).
pub fn unpin(host: &dyn Host, runtime: &SandboxRuntime) {
    let unrecorded = || {
        let pin = runtime.pidns.as_ref()?;
        host.pid_namespace_init(pin)
    };
    if let Some(infra) = infra(runtime).or_else(unrecorded)
        && let Err(e) = host.kill(infra)
    {
        tracing::warn!(pid = infra.pid, error = %e, "kill the pod's infra process");
    }
    let userns = runtime.userns.as_ref().map(|u| &u.path);
    for path in pinned(runtime).into_iter().chain(userns) {
        host.unpin_namespace(path);
    }
}

/// The pins of the namespaces the pod's containers join (its user
/// namespace, which owns them, comes on its own).
pub fn pinned(runtime: &SandboxRuntime) -> Vec<&std::path::PathBuf> {
    [
        &runtime.netns,
        &runtime.ipcns,
        &runtime.utsns,
        &runtime.pidns,
    ]
    .into_iter()
    .flatten()
    .collect()
}
