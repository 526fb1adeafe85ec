//! Locating the workspace's binaries from a test executable.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Overrides where binaries are looked for (for programs that are not cargo
/// test binaries, such as benchmarks). The first call wins.
pub fn set_dir(dir: &Path) {
    let _ = DIR.set(dir.to_owned());
}

/// The directory holding `pierd` and `pier-monitor`: `set_dir`'s, `$PIER_BIN_DIR`, or the
/// cargo profile directory this test binary was built into
/// (`target/<profile>/deps/<test>` → `target/<profile>`).
pub fn dir() -> PathBuf {
    if let Some(dir) = DIR.get() {
        return dir.clone();
    }
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
