//! A private containerd (Debian's, with its CRI plugin) for side-by-side runs:
//! own root, state and sockets in a temp dir, the same runc, CNI plugins and
//! local registry as pier.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pier_tests::{Cri, TestNetwork};
use tempfile::TempDir;

pub struct Containerd {
    dir: TempDir,
    child: Child,
    pub network: TestNetwork,
}

impl Containerd {
    /// Starts containerd with `pause` as its sandbox image, pulled over plain
    /// HTTP from the local registry `registry`.
    pub async fn start(registry: &str, pause: &str) -> Self {
        Self::start_on(registry, pause, TestNetwork::new()).await
    }

    /// [`Containerd::start`] with pods on `network`.
    pub async fn start_on(registry: &str, pause: &str, network: TestNetwork) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("cni")).expect("mkdir");
        std::fs::write(
            d.join("cni/10-bench.conflist"),
            network.conflist(&d.join("cni-state")),
        )
        .expect("conflist");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{ttrpc}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # Like pier, clamp OOM score adjustments the process may not make
  # (a node without CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            ttrpc = d.join("ttrpc.sock").display(),
            opt = d.join("opt").display(),
            cni = d.join("cni").display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd (apt install containerd)");
        let containerd = Self {
            dir,
            child,
            network,
        };
        containerd.wait_until_serving().await;
        containerd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut cri) = Cri::connect(&self.socket()).await
                && cri
                    .runtime
                    .version(k8s_cri::v1::VersionRequest::default())
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        panic!("containerd did not serve CRI within 30s:\n{log}");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A run that failed half way leaves pods, their shims and pause
        // processes: the shims outlive containerd.
        pier_tests::pierd::remove_all_pods(&self.socket());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.network.bridge])
            .output();
        // containerd leaves its mounts (shm, rootfs) when stopped; lazily detach them.
        if let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root = self.dir.path().display().to_string();
            let mut points: Vec<&str> = table
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for point in points {
                let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}
