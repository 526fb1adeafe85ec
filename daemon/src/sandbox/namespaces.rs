//! Pinning a pod's namespaces through the `pierd pin-namespaces` helper.

use std::path::Path;

use crate::error::Error;

use super::SandboxRuntime;

/// Runs the helper to create and pin the namespaces `runtime` names, with the
/// pod's hostname and namespaced sysctls applied inside them.
pub async fn pin(runtime: &SandboxRuntime, sysctls: &[(String, String)]) -> Result<(), Error> {
    if runtime.netns.is_none() && runtime.ipcns.is_none() && runtime.utsns.is_none() {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| Error::Setup {
        what: "find pierd's own binary for the namespace helper".into(),
        reason: e.to_string(),
    })?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("pin-namespaces");
    for (flag, path) in [
        ("--net", &runtime.netns),
        ("--ipc", &runtime.ipcns),
        ("--uts", &runtime.utsns),
    ] {
        if let Some(path) = path {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::Setup {
                    what: format!("create {}", parent.display()),
                    reason: e.to_string(),
                })?;
            }
            cmd.arg(flag).arg(path);
        }
    }
    if runtime.utsns.is_some() {
        cmd.arg("--hostname").arg(&runtime.hostname);
    }
    for (key, value) in sysctls {
        cmd.arg("--sysctl").arg(format!("{key}={value}"));
    }
    let output = cmd.output().await.map_err(|e| Error::Setup {
        what: "run the namespace helper".into(),
        reason: e.to_string(),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(Error::Setup {
        what: "pin pod namespaces".into(),
        reason: stderr.trim().trim_start_matches("pierd: ").to_owned(),
    })
}

/// Releases every pinned namespace of the sandbox.
pub fn unpin(runtime: &SandboxRuntime) {
    for path in [&runtime.netns, &runtime.ipcns, &runtime.utsns]
        .into_iter()
        .flatten()
    {
        crate::pinns::unpin(Path::new(path));
    }
}
