//! The image mirror critest pulls from: every image critest v1.26.1 uses,
//! built by `../shared/cri-tools/images.sh` and served by a
//! `docker-registry` on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root, from this crate's manifest dir.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent")
        .to_owned()
}

/// The cri-tools folder holding `images.sh`: `$PIER_CRI_TOOLS_SRC` or
/// `../shared/cri-tools` beside the repository.
fn tools_src() -> Result<PathBuf, String> {
    let dir = std::env::var_os("PIER_CRI_TOOLS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/cri-tools"));
    let script = dir.join("images.sh");
    if script.is_file() {
        Ok(script)
    } else {
        Err(format!(
            "{} not found (set PIER_CRI_TOOLS_SRC to the cri-tools folder)",
            script.display()
        ))
    }
}

/// A `docker-registry` on a free loopback port serving every image critest
/// v1.26.1 pulls, under their upstream paths (built by `images.sh`, whose
/// build cache lives in `target/cri-harness`). Stopped on drop.
pub struct CritestMirror {
    script: PathBuf,
    host: String,
    harness_dir: PathBuf,
}

impl CritestMirror {
    /// Builds (or reuses) the images and starts the registry; `Err` says why
    /// the mirror cannot exist on this machine.
    pub fn start() -> Result<Self, String> {
        let script = tools_src()?;
        let mirror = Self {
            script,
            host: format!("127.0.0.1:{}", crate::free_port()),
            harness_dir: workspace().join("target/cri-harness"),
        };
        let out = mirror.run("all");
        if !out.status.success() {
            panic!(
                "images.sh all failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(mirror)
    }

    /// `host:port` of the registry.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// pierd's flags to pull registry.k8s.io and gcr.io through the mirror.
    pub fn pierd_args(&self) -> Vec<String> {
        let url = format!("http://{}", self.host);
        vec![
            "--registry-mirror".into(),
            format!("registry.k8s.io={url}"),
            "--registry-mirror".into(),
            format!("gcr.io={url}"),
            "--insecure-registry".into(),
            self.host.clone(),
        ]
    }

    fn run(&self, verb: &str) -> Output {
        Command::new("bash")
            .arg(&self.script)
            .arg(verb)
            .env("HARNESS_DIR", &self.harness_dir)
            .env("HARNESS_REGISTRY", &self.host)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.script.display()))
    }
}

impl Drop for CritestMirror {
    fn drop(&mut self) {
        let _ = self.run("stop-registry");
    }
}
