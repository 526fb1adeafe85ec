//! Pinning a pod's namespaces through the `pierd pin-namespaces` helper, and
//! ending the `pier-infra` process that holds a shared PID namespace.

use std::path::{Path, PathBuf};

use crate::container::exits::start_time;

use super::SandboxRuntime;

/// Why the pod's namespaces could not be pinned.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("find pierd's own binary for the namespace helper: {0}")]
    OwnBinary(#[source] std::io::Error),
    #[error("create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run the namespace helper: {0}")]
    Spawn(#[source] std::io::Error),
    /// The helper ran and failed; its stderr says why.
    #[error("pin pod namespaces: {0}")]
    Helper(String),
    #[error("start the pod's infra process: pier-infra (pid {0}) exited at once")]
    InfraExited(i32),
    #[error("start the pod's infra process: the namespace helper did not report pier-infra's pid")]
    InfraUnreported,
}

/// Runs the helper to create and pin the namespaces `runtime` names, with the
/// pod's hostname and namespaced sysctls applied inside them. For a PID
/// namespace the helper also starts `pier-infra`, recorded in `runtime.infra`.
pub async fn pin(
    runtime: &mut SandboxRuntime,
    infra: &Path,
    sysctls: &[(String, String)],
) -> Result<(), NamespaceError> {
    let pins = [
        ("--net", &runtime.netns),
        ("--ipc", &runtime.ipcns),
        ("--uts", &runtime.utsns),
        ("--pid", &runtime.pidns),
    ];
    if pins.iter().all(|(_, path)| path.is_none()) {
        return Ok(());
    }
    let create_dir = |path: &Path| {
        std::fs::create_dir_all(path).map_err(|source| NamespaceError::CreateDir {
            path: path.to_owned(),
            source,
        })
    };
    let exe = std::env::current_exe().map_err(NamespaceError::OwnBinary)?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("pin-namespaces");
    for (flag, path) in pins {
        if let Some(path) = path {
            if let Some(parent) = path.parent() {
                create_dir(parent)?;
            }
            cmd.arg(flag).arg(path);
        }
    }
    if runtime.pidns.is_some() {
        let root = runtime.dir.join("infra");
        create_dir(&root)?;
        cmd.arg("--infra").arg(infra).arg("--infra-root").arg(root);
    }
    if runtime.utsns.is_some() {
        cmd.arg("--hostname").arg(&runtime.hostname);
    }
    for (key, value) in sysctls {
        cmd.arg("--sysctl").arg(format!("{key}={value}"));
    }
    let output = cmd.output().await.map_err(NamespaceError::Spawn)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(NamespaceError::Helper(
            stderr.trim().trim_start_matches("pierd: ").to_owned(),
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let infra_pid = stdout
        .lines()
        .find_map(|line| line.strip_prefix("infra-pid ")?.trim().parse::<i32>().ok());
    if let Some(pid) = infra_pid {
        // Read now, while it surely runs: the pair identifies it from here on.
        runtime.infra = start_time(pid).map(|started| (pid, started));
        if runtime.infra.is_none() {
            return Err(NamespaceError::InfraExited(pid));
        }
    } else if runtime.pidns.is_some() {
        return Err(NamespaceError::InfraUnreported);
    }
    Ok(())
}

/// Whether the pod's infra process, if it has one, still runs.
pub fn infra_alive(runtime: &SandboxRuntime) -> bool {
    runtime
        .infra
        .is_none_or(|(pid, started)| start_time(pid) == Some(started))
}

/// Ends the infra process, which takes down whatever still runs in the
/// pod's PID namespace, and releases every pinned namespace of the sandbox.
pub fn unpin(runtime: &SandboxRuntime) {
    if let Some((pid, started)) = runtime.infra
        && start_time(pid) == Some(started)
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            tracing::warn!(%pid, error = %e, "kill the pod's infra process");
        }
    }
    for path in [
        &runtime.netns,
        &runtime.ipcns,
        &runtime.utsns,
        &runtime.pidns,
    ]
    .into_iter()
    .flatten()
    {
        crate::pinns::unpin(Path::new(path));
    }
}
