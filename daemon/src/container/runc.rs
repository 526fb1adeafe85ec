//! Invoking the OCI runtime binary directly (start, kill, delete), as CRI-O does.

use std::path::Path;

use crate::error::Error;

/// Runs `<runtime> --root <root> <args>`; its stderr becomes the error.
pub async fn run(runtime: &Path, root: &Path, args: &[&str]) -> Result<(), Error> {
    let output = tokio::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Setup {
            what: format!("run {}", runtime.display()),
            reason: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Runtime {
        command: format!("{} {}", runtime.display(), args.join(" ")),
        message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
