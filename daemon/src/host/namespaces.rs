//! Running the namespace-pinning helper (`pierd pin-namespaces`, in
//! `crate::pinns`) as its own short-lived process: the daemon never unshares
//! or forks itself.

use std::path::{Path, PathBuf};

use crate::pinns::PinRequest;

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

/// Runs the helper for `request`, creating the directories its pins and the
/// infra process's root go in. Returns the pid of `pier-infra` if it was
/// asked to start one.
pub async fn run_helper(request: &PinRequest) -> Result<Option<i32>, NamespaceError> {
    let create_dir = |path: &Path| {
        std::fs::create_dir_all(path).map_err(|source| NamespaceError::CreateDir {
            path: path.to_owned(),
            source,
        })
    };
    let exe = std::env::current_exe().map_err(NamespaceError::OwnBinary)?;
    for path in [
        &request.net,
        &request.ipc,
        &request.uts,
        &request.pid,
        &request.user,
    ]
    .into_iter()
    .flatten()
    {
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
    }
    if let Some(root) = &request.infra_root {
        create_dir(root)?;
    }
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(request.args());
    let output = cmd.output().await.map_err(NamespaceError::Spawn)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr.trim().trim_start_matches("pierd: ");
        return Err(NamespaceError::Helper(message.to_owned()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let infra_pid = stdout
        .lines()
        .find_map(|line| line.strip_prefix("infra-pid ")?.trim().parse::<i32>().ok());
    match infra_pid {
        None if request.pid.is_some() => Err(NamespaceError::InfraUnreported),
        pid => Ok(pid),
    }
}

/// The first process of the PID namespace pinned at `pin` (the pod's
/// `pier-infra`), found by the namespace's inode among the node's
/// processes: for when a crash came between starting it and recording its
/// pid.
pub fn pid_namespace_init(pin: &Path) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(pin).ok()?.ino();
    let wanted = format!("pid:[{inode}]");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let ns = std::fs::read_link(entry.path().join("ns/pid")).ok()?;
            if ns.to_str() != Some(wanted.as_str()) {
                return None;
            }
            // Its own pid in the namespace is the last of NSpid's: 1 for the init.
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let nspid = status.lines().find(|l| l.starts_with("NSpid:"))?;
            (nspid.split_whitespace().last() == Some("1")).then_some(pid)
        })
}
