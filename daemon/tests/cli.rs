//! The `pierd` binary's command line: environment variables, precedence, errors.

use std::process::{Command, Output};

fn pierd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pierd"));
    cmd.arg("--config")
        .arg("/dev/null")
        .arg("--config-dir")
        .arg(dir.path());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run pierd")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "pierd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn environment_variables_set_values() {
    let out = pierd(
        &["config"],
        &[
            ("PIER_LISTEN", "/tmp/env.sock"),
            ("PIER_REGISTRY_MIRROR", "docker.io=http://127.0.0.1:5000"),
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("listen = \"/tmp/env.sock\""), "{text}");
    assert!(
        text.contains("\"docker.io\" = [\"http://127.0.0.1:5000\"]"),
        "{text}"
    );
}

#[test]
fn flags_beat_environment_variables() {
    let out = pierd(
        &["config", "--listen", "/tmp/flag.sock"],
        &[("PIER_LISTEN", "/tmp/env.sock")],
    );
    assert!(stdout(&out).contains("listen = \"/tmp/flag.sock\""));
}

#[test]
fn bad_flag_value_stops_startup_naming_it() {
    let out = pierd(&["--streaming-address", "nowhere"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--streaming-address"), "{err}");
}

#[test]
fn relative_path_from_flag_is_refused() {
    let out = pierd(&["config", "--root", "relative"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("command line") && err.contains("root"),
        "{err}"
    );
}
