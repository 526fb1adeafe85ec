//! Invoking the OCI runtime binary directly (start, kill, update, delete),
//! as CRI-O does.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::error::Error;

/// Runs `<runtime> --root <root> <args>`; its stderr becomes the error.
pub async fn run(runtime: &Path, root: &Path, args: &[&str]) -> Result<(), Error> {
    run_with_input(runtime, root, args, None).await
}

/// Like `run`, feeding `input` to the runtime's stdin (`update --resources -`).
pub async fn run_with_input(
    runtime: &Path,
    root: &Path,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<(), Error> {
    let spawn_error = |e: std::io::Error| Error::Setup {
        what: format!("run {}", runtime.display()),
        reason: e.to_string(),
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
    Err(Error::Runtime {
        command: format!("{} {}", runtime.display(), args.join(" ")),
        message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
