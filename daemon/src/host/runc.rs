//! Invoking the OCI runtime binary directly (start, kill, update, delete,
//! state), as CRI-O does.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The runtime ran and failed; its stderr says why.
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    /// pierd's own start of a runc container (`runc_direct`) failed.
    #[error(transparent)]
    Start(#[from] super::runc_direct::DirectError),
}

/// Whether a call answers a request or cleans up behind one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A request waits for it.
    Now,
    /// No request waits (the delete after a container's exit, sweeps at
    /// startup): the runtime runs at a lower CPU priority, so that on a
    /// busy node it yields to the calls kubelet is waiting for. A Go
    /// runtime starts its threads at once, so the priority is set before
    /// exec, by `nice`, not on the pid after spawn.
    Background,
}

/// Niceness of [`Urgency::Background`] runs.
const BACKGROUND_NICENESS: &str = "10";

/// Runs `<runtime> --root <root> <args>`; its stderr becomes the error.
pub async fn run(runtime: &Path, root: &Path, args: &[&str]) -> Result<(), RuncError> {
    run_as(runtime, root, args, None, Urgency::Now)
        .await
        .map(drop)
}

/// `state <id>`: the status the runtime gives the container (`created`,
/// `running`, `stopped`, `paused`).
pub async fn state(runtime: &Path, root: &Path, id: &str) -> Result<String, RuncError> {
    let args = ["state", id];
    let stdout = run_as(runtime, root, &args, None, Urgency::Now).await?;
    let unreadable = |reason: String| RuncError::Failed {
        command: format!("{} {}", runtime.display(), args.join(" ")),
        stderr: format!("unreadable state: {reason}"),
    };
    let state: serde_json::Value =
        serde_json::from_slice(&stdout).map_err(|e| unreadable(e.to_string()))?;
    state["status"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| unreadable("no status".into()))
}

/// Like `run`, feeding `input` to the runtime's stdin (`update --resources -`).
pub async fn run_with_input(
    runtime: &Path,
    root: &Path,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<(), RuncError> {
    run_as(runtime, root, args, input, Urgency::Now)
        .await
        .map(drop)
}

/// `run_with_input` at the given urgency; returns the runtime's stdout.
pub async fn run_as(
    runtime: &Path,
    root: &Path,
    args: &[&str],
    input: Option<&[u8]>,
    urgency: Urgency,
) -> Result<Vec<u8>, RuncError> {
    let spawn_error = |source| RuncError::Spawn {
        binary: runtime.to_owned(),
        source,
    };
    let mut command = match urgency {
        Urgency::Now => tokio::process::Command::new(runtime),
        Urgency::Background => {
            let mut nice = tokio::process::Command::new("nice");
            nice.args(["-n", BACKGROUND_NICENESS]).arg(runtime);
            nice
        }
    };
    let mut child = command
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).await.map_err(spawn_error)?;
    }
    let output = child.wait_with_output().await.map_err(spawn_error)?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(RuncError::Failed {
        command: format!("{} {}", runtime.display(), args.join(" ")),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
