//! A private `pierd`: its own config, state root, run root and socket in a
//! temp dir, so tests run in parallel with each other and with a live pierd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::{Cri, bins};

/// The default CNI network pier ships, used unless a test asks otherwise.
pub const DEFAULT_CONFLIST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../contrib/cni/10-pier.conflist"
));

/// How to start a test pierd.
#[derive(Debug, Clone)]
pub struct PierdOptions {
    /// Contents of the main config file.
    pub config: String,
    /// CNI configurations written into the private conf dir, by file name.
    pub cni_files: Vec<(String, String)>,
    /// Serve this socket instead of a private one.
    pub socket: Option<PathBuf>,
    /// A private bridge network to use as the pod network (replaces `cni_files`).
    pub network: Option<TestNetwork>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// The run root, relative to the test's temp dir (`run` by default).
    pub runroot: Option<PathBuf>,
    /// Extra environment variables (`FAILPOINTS` arms a crash point).
    pub env: Vec<(String, String)>,
}

impl Default for PierdOptions {
    fn default() -> Self {
        Self {
            config: String::new(),
            cni_files: vec![("10-pier.conflist".into(), DEFAULT_CONFLIST.into())],
            socket: None,
            network: None,
            args: Vec::new(),
            runroot: None,
            env: Vec::new(),
        }
    }
}

/// A CNI bridge network private to one test: its own bridge device, subnet
/// and IPAM state, no masquerading, removed when the test's pierd stops.
#[derive(Debug, Clone)]
pub struct TestNetwork {
    pub bridge: String,
    /// The first three octets of the /24 pods get addresses from (two
    /// octets of a /16 for a [`TestNetwork::wide`] one).
    pub subnet_prefix: String,
    /// 24, or 16 for a wide network.
    pub prefix_len: u8,
}

impl TestNetwork {
    pub fn new() -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        Self {
            bridge: format!("pt{:x}{n:x}", pid % 0xfffff),
            subnet_prefix: format!("10.{}.{}", 100 + pid % 100, n % 256),
            prefix_len: 24,
        }
    }

    /// A network with room for 65,000 pods: 10.`second_octet`.0.0/16.
    /// Tests use 10.100-199.x.0/24; benchmarks at scale take an octet
    /// above those.
    pub fn wide(second_octet: u8) -> Self {
        Self {
            subnet_prefix: format!("10.{second_octet}"),
            prefix_len: 16,
            ..Self::new()
        }
    }

    /// The subnet in CIDR notation.
    pub fn subnet(&self) -> String {
        match self.prefix_len {
            16 => format!("{}.0.0/16", self.subnet_prefix),
            _ => format!("{}.0/24", self.subnet_prefix),
        }
    }

    /// The conflist, with host-local keeping its leases under `state_dir`.
    pub fn conflist(&self, state_dir: &Path) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{bridge}","plugins":[
              {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,
                "ipam":{{"type":"host-local","dataDir":"{dir}","ranges":[[{{"subnet":"{net}"}}]],
                         "routes":[{{"dst":"0.0.0.0/0"}}]}}}},
              {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
            bridge = self.bridge,
            dir = state_dir.display(),
            net = self.subnet(),
        )
    }
}

impl Default for TestNetwork {
    fn default() -> Self {
        Self::new()
    }
}

/// A running pierd. Dropping it stops it (SIGTERM, then SIGKILL) and removes
/// its temp dir; the log is printed when the test is panicking.
pub struct Pierd {
    dir: TempDir,
    child: Option<Child>,
    socket: PathBuf,
    network: Option<TestNetwork>,
    options: PierdOptions,
}

impl Pierd {
    /// Starts a pierd with default options and waits until it answers.
    pub async fn start() -> Self {
        Self::start_with(PierdOptions::default()).await
    }

    pub async fn start_with(options: PierdOptions) -> Self {
        let dir = short_tempdir();
        let socket = options
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("pier.sock"));
        let child = spawn(dir.path(), &socket, &options);
        let network = options.network.clone();
        let mut pierd = Self {
            dir,
            child: Some(child),
            socket,
            network,
            options,
        };
        pierd.wait_until_serving().await;
        pierd
    }

    /// Starts pierd again on the same state, run root and socket, after
    /// `terminate` or `kill`, and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "pierd is still running");
        self.child = Some(spawn(self.dir.path(), &self.socket, &self.options));
        self.wait_until_serving().await;
    }

    /// Starts pierd again on the same state after `terminate` or `kill`,
    /// expecting it to refuse to start; returns its exit status and what it
    /// logged while trying (the log starts anew with each start).
    pub fn restart_refused(&mut self) -> (ExitStatus, String) {
        assert!(self.child.is_none(), "pierd is still running");
        let mut child = spawn(self.dir.path(), &self.socket, &self.options);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait pierd") {
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pierd did not exit although it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like [`Self::restart`], with the options changed first (a crash test
    /// disarms its failpoint this way).
    pub async fn restart_with(&mut self, change: impl FnOnce(&mut PierdOptions)) {
        change(&mut self.options);
        self.restart().await;
    }

    /// Waits up to `within` for pierd to exit on its own (a crash) and reaps
    /// it; `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("wait pierd") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a `pierd` subcommand (`check`, `config`) with this pierd's
    /// configuration, state root and run root.
    pub fn subcommand(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(bins::path("pierd"));
        configure(&mut command, self.dir.path(), &self.socket, &self.options);
        command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run a pierd subcommand")
    }

    /// The temp dir holding everything of this pierd: config, state and run
    /// roots, socket, CNI state, log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a pierd that is expected to refuse to start; returns its exit
    /// status and log. It gets its own fresh state and run roots.
    pub fn run_refused(options: &PierdOptions, socket: &Path) -> (ExitStatus, String) {
        let dir = short_tempdir();
        let mut child = spawn(dir.path(), socket, options);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait pierd") {
                let log = std::fs::read_to_string(dir.path().join("pierd.log")).unwrap_or_default();
                return (status, log);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pierd did not exit although it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut cri) = Cri::connect(&self.socket).await {
                let version = cri
                    .runtime
                    .version(k8s_cri::v1::VersionRequest::default())
                    .await;
                if version.is_ok() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("pierd exited with {status} before serving:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pierd not serving after 30s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A connected CRI client.
    pub async fn cri(&self) -> Cri {
        Cri::connect(&self.socket).await.expect("connect to pierd")
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn runroot(&self) -> PathBuf {
        runroot(self.dir.path(), &self.options)
    }
    pub fn network(&self) -> Option<&TestNetwork> {
        self.network.as_ref()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What pierd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pierd.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for pierd to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop(Signal::SIGTERM)
    }

    /// Sends SIGKILL (a crash) and reaps pierd.
    pub fn kill(&mut self) -> ExitStatus {
        self.stop(Signal::SIGKILL)
    }

    fn stop(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("pierd already stopped");
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, signal);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("wait pierd") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().expect("wait pierd");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes every pod (and so every container) a CRI runtime still has, through
/// its socket. Runs on a thread of its own: `Drop` may be called
/// inside a test's tokio runtime, which must not be blocked on.
pub fn remove_all_pods(socket: &Path) {
    let socket = socket.to_owned();
    let cleanup = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let work = async {
                let Ok(mut cri) = Cri::connect(&socket).await else {
                    return;
                };
                let pods = cri
                    .runtime
                    .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default());
                let Ok(pods) = pods.await else { return };
                for pod in pods.into_inner().items {
                    let id = pod.id;
                    let stop = k8s_cri::v1::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    };
                    let _ = cri.runtime.stop_pod_sandbox(stop).await;
                    let remove = k8s_cri::v1::RemovePodSandboxRequest { pod_sandbox_id: id };
                    let _ = cri.runtime.remove_pod_sandbox(remove).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(60), work).await;
        });
    });
    let _ = cleanup.join();
}

/// Detaches whatever is still mounted under `dir`, deepest first, so the
/// temp dir can be deleted even after a crash of the code under test.
fn unmount_all_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let dir = dir.display().to_string();
    let mut points: Vec<&str> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Kills the processes whose root directory lies under `dir`: the
/// `pier-infra` processes of pods a crashed or killed pierd left behind
/// (each is chrooted into its sandbox directory).
pub fn kill_processes_rooted_under(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("root")).is_ok_and(|root| root.starts_with(dir)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for Pierd {
    fn drop(&mut self) {
        // A test that failed half way leaves pods and containers behind.
        if self.child.is_some() {
            remove_all_pods(&self.socket);
            self.terminate();
        }
        kill_processes_rooted_under(self.dir.path());
        unmount_all_under(self.dir.path());
        if let Some(network) = &self.network {
            let _ = Command::new("ip")
                .args(["link", "del", &network.bridge])
                .output();
        }
        if std::thread::panicking() {
            eprintln!("---- pierd log ----\n{}", self.log());
        }
        // For debugging a passing run: keep every pierd's log.
        if let Some(dir) = std::env::var_os("PIER_TEST_LOG_DIR") {
            let name = self.dir.path().file_name().unwrap_or_default().to_owned();
            let _ = std::fs::copy(
                self.dir.path().join("pierd.log"),
                std::path::Path::new(&dir).join(name),
            );
        }
    }
}

/// A temp dir with a short path: monitor control sockets live at
/// `<runroot>/containers/<64-hex id>/monitor.sock`, and a Unix socket path
/// must fit in 108 bytes. Searchable by others (0711), as `/var/lib` and
/// `/run` are: the root of a pod with its own user namespace is an
/// unprivileged id on the node, and runc walks down to the pod's rootfs as
/// that id.
fn short_tempdir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("p")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the temp dir");
    dir
}

fn runroot(dir: &Path, options: &PierdOptions) -> PathBuf {
    dir.join(options.runroot.as_deref().unwrap_or(Path::new("run")))
}

/// Starts the pierd binary with everything pointed into `dir`.
fn spawn(dir: &Path, socket: &Path, options: &PierdOptions) -> Child {
    let cni = dir.join("cni");
    std::fs::create_dir_all(&cni).expect("mkdir cni");
    match &options.network {
        Some(network) => {
            let conflist = network.conflist(&dir.join("cni-state"));
            std::fs::write(cni.join("10-test.conflist"), conflist).expect("write conflist");
        }
        None => {
            for (name, text) in &options.cni_files {
                std::fs::write(cni.join(name), text).expect("write conflist");
            }
        }
    }
    std::fs::create_dir_all(dir.join("pier.d")).expect("mkdir pier.d");
    std::fs::write(dir.join("pier.toml"), &options.config).expect("write config");
    let log = std::fs::File::create(dir.join("pierd.log")).expect("create log");
    let mut command = Command::new(bins::path("pierd"));
    configure(&mut command, dir, socket, options);
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn pierd")
}

/// Points a pierd command line at the test's files.
fn configure(command: &mut Command, dir: &Path, socket: &Path, options: &PierdOptions) {
    let cni = dir.join("cni");
    command
        .arg("--config")
        .arg(dir.join("pier.toml"))
        .arg("--config-dir")
        .arg(dir.join("pier.d"))
        .arg("--listen")
        .arg(socket)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(runroot(dir, options))
        .arg("--cni-config-dir")
        .arg(&cni)
        .args(["--log-level", "info,pierd=debug,pier_storage=debug"])
        .args(&options.args)
        .envs(options.env.iter().map(|(k, v)| (k, v)));
}
