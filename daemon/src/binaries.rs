//! Finding the helper binaries pierd runs (OCI runtimes, the monitor).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Resolves a configured binary: a path with a slash is taken as it is, a bare
/// name is looked up in PATH. Returns `None` unless it is an executable file.
pub fn resolve(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 || binary.is_absolute() {
        return is_executable(binary).then(|| binary.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
}

/// Resolves one of pier's own helper binaries (monitor, infra): a bare name is looked up beside pierd's own
/// executable first, so an unpacked build tree works without installing.
pub fn resolve_own(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() == 1 && !binary.is_absolute() {
        let beside = std::env::current_exe().ok()?.with_file_name(binary);
        if is_executable(&beside) {
            return Some(beside);
        }
    }
    resolve(binary)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
