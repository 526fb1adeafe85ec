//! Locating the workspace's binaries from a test executable.

use std::path::PathBuf;

/// The directory holding `pierd` and `pier-monitor`: `$PIER_BIN_DIR`, or the
/// cargo profile directory this test binary was built into
/// (`target/<profile>/deps/<test>` → `target/<profile>`).
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PIER_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary has no profile dir")
        .to_owned()
}

/// Path of a workspace binary, with a clear message when it was not built.
pub fn path(name: &str) -> PathBuf {
    let path = dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: build the workspace binaries first (cargo build --workspace --bins) \
         or set PIER_BIN_DIR",
        path.display()
    );
    path
}
