//! Invoking the OCI runtime binary directly (start, kill, update, delete),
//! as CRI-O does.

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
}

/// Runs `<runtime> --root <root> <args>`; its stderr becomes the error.
pub async fn run(runtime: &Path, root: &Path, args: &[&str]) -> Result<(), RuncError> {
    run_with_input(runtime, root, args, None).await
}

/// Like `run`, feeding `input` to the runtime's stdin (`update --resources -`).
pub async fn run_with_input(
    runtime: &Path,
    root: &Path,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<(), RuncError> {
    let spawn_error = |source| RuncError::Spawn {
        binary: runtime.to_owned(),
        source,
    };
    let mut child = tokio::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).await.map_err(spawn_error)?;
    }
    let output = child.wait_with_output().await.map_err(spawn_error)?;
    if output.status.success() {
        return Ok(());
    }
    Err(RuncError::Failed {
        command: format!("{} {}", runtime.display(), args.join(" ")),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
