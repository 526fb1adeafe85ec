//! Small static programs for test images, for what busybox cannot show.
//! Built with the system C compiler (the one Rust links with), once per
//! test process.

use std::process::Command;
use std::sync::OnceLock;

/// Prints the effective uid it runs with. critest's `nonewprivs` image runs
/// such a program setuid root to see whether `no_new_privs` held the
/// privilege back; busybox cannot stand in, as it drops setuid privileges
/// itself before any applet runs.
const EUID_REPORTER: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) {
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
"#;

/// The statically linked `EUID_REPORTER` binary.
pub fn euid_reporter() -> &'static [u8] {
    static BINARY: OnceLock<Vec<u8>> = OnceLock::new();
    BINARY.get_or_init(|| compile_static(EUID_REPORTER))
}

fn compile_static(source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, out) = (dir.path().join("prog.c"), dir.path().join("prog"));
    std::fs::write(&src, source).expect("write C source");
    let built = Command::new("cc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run cc (the C compiler Rust links with)");
    assert!(
        built.status.success(),
        "cc -static failed (libc6-dev installed?): {}",
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::read(&out).expect("read the compiled program")
}
