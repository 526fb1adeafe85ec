//! Pods and containers for end-to-end tests: a pierd with a busybox image
//! pulled from the test registry, pod and container configs, and the calls
//! every container test makes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;

use crate::{ImageSpec as TestImage, Pierd, PierdOptions, Registry, TestNetwork};

pub type Runtime =
    k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// A pierd that trusts the test registry, with a busybox image pulled.
pub async fn setup(registry: &Registry) -> (Pierd, String) {
    setup_with(registry, String::new()).await
}

/// [`setup`] with `config` as pierd's main config file.
pub async fn setup_with(registry: &Registry, config: String) -> (Pierd, String) {
    let pushed = TestImage::default().push(registry, "tests/busybox:1").await;
    let pierd = Pierd::start_with(PierdOptions {
        config,
        network: Some(TestNetwork::new()),
        args: vec!["--insecure-registry".into(), registry.host()],
        ..Default::default()
    })
    .await;
    pull(&pierd, &pushed.reference).await;
    (pierd, pushed.reference)
}

/// Pulls `reference` into `pierd`.
pub async fn pull(pierd: &Pierd, reference: &str) {
    try_pull(pierd, reference)
        .await
        .unwrap_or_else(|e| panic!("PullImage {reference}: {e}"));
}

/// PullImage's answer: the image id, or the status it was refused with.
pub async fn try_pull(pierd: &Pierd, reference: &str) -> Result<String, tonic::Status> {
    let mut images = pierd.cri().await.images;
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: reference.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

pub fn pod(name: &str, log_dir: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "pier-tests".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        ..Default::default()
    }
}

pub fn container(name: &str, image: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("app".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn run(
    cri: &mut Runtime,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let created = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: created.clone(),
    })
    .await
    .expect("StartContainer");
    created
}

pub async fn status(cri: &mut Runtime, id: &str) -> ContainerStatus {
    let response = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus");
    response.into_inner().status.expect("status")
}

pub async fn wait_exited(cri: &mut Runtime, id: &str, within: Duration) -> ContainerStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = status(cri, id).await;
        if status.state == ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?} after {within:?}",
            status.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `pod` (with a cluster-like DNS config) and returns its id and config.
pub async fn running_pod(
    cri: &mut Runtime,
    mut pod: PodSandboxConfig,
) -> (String, PodSandboxConfig) {
    pod.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.pier.test".into()],
        options: vec!["ndots:2".into()],
    });
    let id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    (id, pod)
}

pub async fn exec_out(cri: &mut Runtime, id: &str, script: &str) -> (i32, String) {
    let out = cri
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A container the way critest builds its own: a command and an image, an
/// empty Linux section (so the runtime's defaults for namespaces and
/// security), and no log path unless one is set.
pub fn plain_container(name: &str, image: &str, argv: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: argv.iter().map(|s| (*s).to_owned()).collect(),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// The security context of a container config, created if absent.
pub fn security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The security context of a pod config, created if absent.
pub fn pod_security(config: &mut PodSandboxConfig) -> &mut LinuxSandboxSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// Runs `config` as it is (no DNS config added) and returns the pod's id.
pub async fn run_pod(cri: &mut Runtime, config: &PodSandboxConfig) -> String {
    cri.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .expect("RunPodSandbox")
    .into_inner()
    .pod_sandbox_id
}

/// Stops and removes a pod, as every critest spec does when it ends.
pub async fn remove_pod(cri: &mut Runtime, id: &str) {
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("StopPodSandbox");
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("RemovePodSandbox");
}

/// The result of CreateContainer, for tests that expect it to fail.
pub async fn try_create(
    cri: &mut Runtime,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    cri.create_container(CreateContainerRequest {
        pod_sandbox_id: pod_id.into(),
        config: Some(config),
        sandbox_config: Some(pod.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

/// Creates a container without starting it.
pub async fn create(
    cri: &mut Runtime,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    try_create(cri, pod_id, pod, config)
        .await
        .expect("CreateContainer")
}

pub async fn start(cri: &mut Runtime, id: &str) {
    cri.start_container(StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .expect("StartContainer");
}

/// ExecSync with an argv as given (no shell added).
pub async fn exec(cri: &mut Runtime, id: &str, argv: &[&str], timeout: i64) -> ExecSyncResponse {
    cri.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: argv.iter().map(|s| (*s).to_owned()).collect(),
        timeout,
    })
    .await
    .expect("ExecSync")
    .into_inner()
}

/// Containers listed with an id filter, as critest looks one up.
pub async fn list_by_id(cri: &mut Runtime, id: &str) -> Vec<Container> {
    cri.list_containers(ListContainersRequest {
        filter: Some(ContainerFilter {
            id: id.into(),
            ..Default::default()
        }),
    })
    .await
    .expect("ListContainers")
    .into_inner()
    .containers
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: String,
    pub text: String,
}

/// The lines of a CRI log file (empty if it does not exist yet). Each line
/// must have the CRI shape: an RFC 3339 timestamp, the stream, a P/F tag.
pub fn log_lines(path: &std::path::Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (time, stream, tag) = (parts.next(), parts.next(), parts.next());
            let time = time.unwrap_or_default();
            assert!(
                time.len() > 20 && time.ends_with('Z') && time.as_bytes().get(10) == Some(&b'T'),
                "not a CRI log line: {line:?}"
            );
            assert!(
                matches!(tag, Some("P" | "F")),
                "not a CRI log line: {line:?}"
            );
            LogLine {
                stream: stream.unwrap_or_default().to_owned(),
                text: parts.next().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// Waits until the log at `path` has a line from `stream` that `matches`.
pub async fn wait_for_log_line(
    path: &std::path::Path,
    stream: &str,
    matches: impl Fn(&str) -> bool,
    within: Duration,
) -> Vec<LogLine> {
    let deadline = Instant::now() + within;
    loop {
        let lines = log_lines(path);
        if lines.iter().any(|l| l.stream == stream && matches(&l.text)) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "no matching {stream} line in {} after {within:?}: {lines:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status line of `GET /` from an HTTP server, retried until it answers.
pub async fn http_get(addr: std::net::SocketAddr, within: Duration) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + within;
    loop {
        let attempt = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: pier-tests\r\n\r\n")?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(reply)
        })
        .await
        .expect("http thread");
        let last = match attempt {
            Ok(reply) if !reply.is_empty() => {
                return reply.lines().next().unwrap_or_default().to_owned();
            }
            Ok(_) => "empty reply".to_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "no HTTP answer from {addr} within {within:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A shell script running a busybox httpd that serves a one-line page on
/// `port`, in the foreground.
pub fn web_server_script(port: u16) -> String {
    format!("mkdir -p /www && echo pier-page > /www/index.html && exec httpd -f -p {port} -h /www")
}

/// The command of a container running [`web_server_script`].
pub fn web_server(port: u16) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), web_server_script(port)]
}

/// What a CRI validation spec starts from: a registry serving the busybox
/// image, a pierd on a private network that pulled it, a runtime client, and
/// a directory for pod logs. Fields drop in order: the client, the logs,
/// then pierd (which removes what a failed test left), then the registry.
pub struct Node {
    pub cri: Runtime,
    pub image: String,
    pub logs: tempfile::TempDir,
    pub pierd: Pierd,
    pub registry: Registry,
}

impl Node {
    pub async fn start() -> Self {
        let registry = Registry::start();
        let (pierd, image) = setup(&registry).await;
        let cri = pierd.cri().await.runtime;
        Self {
            cri,
            image,
            logs: tempfile::tempdir().expect("tempdir"),
            pierd,
            registry,
        }
    }

    /// A pod config named `name` with its own log directory and, as
    /// critest sends it, no hostname: the runtime picks one.
    pub fn pod(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            hostname: String::new(),
            ..pod(name, &self.logs.path().join(name))
        }
    }

    /// Runs a pod as configured; returns its id.
    pub async fn run_pod(&mut self, config: &PodSandboxConfig) -> String {
        run_pod(&mut self.cri, config).await
    }

    /// A container of the busybox image running `argv`.
    pub fn container(&self, name: &str, argv: &[&str]) -> ContainerConfig {
        plain_container(name, &self.image, argv)
    }

    /// Creates and starts a container; returns its id.
    pub async fn run(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> String {
        run(&mut self.cri, pod_id, pod, config).await
    }

    /// The host path of a container's log.
    pub fn log_path(pod: &PodSandboxConfig, config: &ContainerConfig) -> std::path::PathBuf {
        std::path::Path::new(&pod.log_directory).join(&config.log_path)
    }
}

impl Node {
    /// Pushes another test image to the node's registry and pulls it.
    pub async fn add_image(&self, spec: &TestImage, repo_tag: &str) -> String {
        let pushed = spec.push(&self.registry, repo_tag).await;
        pull(&self.pierd, &pushed.reference).await;
        pushed.reference
    }
}

/// Runs `argv` in a container until its stdout satisfies `done`; returns
/// that stdout. For checks right after StartContainer: runc returns once the
/// init is released, and its exec of the command follows a moment later.
pub async fn exec_until(
    cri: &mut Runtime,
    id: &str,
    argv: &[&str],
    done: impl Fn(&str) -> bool,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = exec(cri, id, argv, 30).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.exit_code == 0 && done(&stdout) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{argv:?} in {id}: exit {}, stdout {stdout:?}, stderr {:?} after {within:?}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A container command that says it started, then sleeps.
pub const SLEEP: &[&str] = &["sh", "-c", "echo started; exec sleep 100000"];

/// The container's first process as the node sees it (the pid in the
/// verbose ContainerStatus).
pub async fn host_pid(cri: &mut Runtime, id: &str) -> i32 {
    let info = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .info;
    let info: serde_json::Value =
        serde_json::from_str(info.get("info").expect("verbose info")).expect("info is JSON");
    info["pid"].as_i64().expect("pid") as i32
}

/// A field of `/proc/<pid>/status`, as the node reads it.
pub fn proc_status(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// Runs `script` in the container; returns (exit code, stdout, stderr).
pub async fn sh(cri: &mut Runtime, id: &str, script: &str) -> (i32, String, String) {
    let out = exec(cri, id, &["sh", "-c", script], 30).await;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.exit_code, text(&out.stdout), text(&out.stderr))
}

/// Runs `script` in the container, which must succeed; returns its stdout.
pub async fn sh_ok(cri: &mut Runtime, id: &str, script: &str) -> String {
    let (code, out, err) = sh(cri, id, script).await;
    assert_eq!(code, 0, "{script}: {err}");
    out
}

/// The mount points of the node's mount namespace.
pub fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}
