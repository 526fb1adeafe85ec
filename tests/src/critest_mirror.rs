//! The image mirror critest pulls from: every image critest v1.26.1 uses,
//! built by `../shared/cri-tools/images.sh` and served by a
//! `docker-registry` on a free loopback port.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::cri_tools::{dir_from_env, existing, workspace};

/// The cri-tools folder's `images.sh`: in `$PIER_CRI_TOOLS_SRC` or in
/// `../shared/cri-tools` beside the repository.
fn tools_src() -> Result<PathBuf, String> {
    let dir = dir_from_env("PIER_CRI_TOOLS_SRC", || {
        workspace().join("../shared/cri-tools")
    });
    existing(
        &dir,
        "images.sh",
        "set PIER_CRI_TOOLS_SRC to the cri-tools folder",
    )
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
