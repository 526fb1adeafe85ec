//! critest's "Security Context > SeccompProfilePath" and "NoNewPrivs"
//! specs. critest v1.26 names profiles by the deprecated
//! `seccomp_profile_path` (`unconfined`, `docker/default`,
//! `localhost/<path>`); kubelet today sends the `seccomp` SecurityProfile.
//! Each spec is checked in both forms where both exist.

use std::path::Path;
use std::time::Duration;

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::*;
use pier_tests::workload::*;

/// Denies sethostname, allows everything else.
const BLOCK_HOSTNAME: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}"#;
/// Denies chmod. glibc's chmod() is fchmodat (and fchmodat2 on new kernels),
/// so those are listed too, as later critest versions do.
const BLOCK_CHMOD: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}"#;

/// A profile as the container asks for it, in one of the CRI's two forms.
#[derive(Debug, Clone)]
enum Profile {
    /// The deprecated `seccomp_profile_path` string.
    Path(String),
    /// The `seccomp` SecurityProfile.
    Field(ProfileType, String),
}

impl Profile {
    fn localhost_forms(file: &Path) -> [Self; 2] {
        [
            Self::Path(format!("localhost/{}", file.display())),
            Self::Field(ProfileType::Localhost, file.display().to_string()),
        ]
    }

    #[allow(deprecated)]
    fn apply(&self, context: &mut LinuxContainerSecurityContext) {
        match self {
            Self::Path(path) => context.seccomp_profile_path = path.clone(),
            Self::Field(kind, reference) => {
                context.seccomp = Some(SecurityProfile {
                    profile_type: *kind as i32,
                    localhost_ref: reference.clone(),
                })
            }
        }
    }
}

/// Profile files in a temp dir, as critest writes them before each spec.
struct Profiles {
    dir: tempfile::TempDir,
}

impl Profiles {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("seccomp-tests")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("block-host-name.json"), BLOCK_HOSTNAME).expect("profile");
        std::fs::write(dir.path().join("block-chmod.json"), BLOCK_CHMOD).expect("profile");
        Self { dir }
    }

    fn block_hostname(&self) -> std::path::PathBuf {
        self.dir.path().join("block-host-name.json")
    }

    fn block_chmod(&self) -> std::path::PathBuf {
        self.dir.path().join("block-chmod.json")
    }
}

/// A running pod (privileged or not) for seccomp containers.
async fn seccomp_pod(node: &mut Node, privileged: bool) -> (String, PodSandboxConfig) {
    let mut pod = node.pod("seccomp-sandbox");
    pod_security(&mut pod).privileged = privileged;
    let id = node.run_pod(&pod).await;
    (id, pod)
}

/// Runs a container with `profile`, extra capabilities and privilege.
async fn run_with(
    node: &mut Node,
    (pod_id, pod): &(String, PodSandboxConfig),
    name: &str,
    profile: Option<&Profile>,
    caps: &[&str],
    privileged: bool,
) -> String {
    let mut config = node.container(name, &["sleep", "60"]);
    let context = security(&mut config);
    context.privileged = privileged;
    context.capabilities = Some(Capability {
        add_capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        ..Default::default()
    });
    if let Some(profile) = profile {
        profile.apply(context);
    }
    node.run(pod_id, pod, config).await
}

/// The `Seccomp:` mode of the container's processes (0 off, 2 filtered).
async fn seccomp_mode(cri: &mut Runtime, id: &str) -> String {
    let out = exec(cri, id, &["grep", "Seccomp:", "/proc/self/status"], 30).await;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.trim().trim_start_matches("Seccomp:").trim().to_owned()
}

/// Whether `hostname ANewHostName` works in the container.
async fn can_set_hostname(cri: &mut Runtime, id: &str) -> bool {
    exec(cri, id, &["hostname", "ANewHostName"], 30)
        .await
        .exit_code
        == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_profile_runs_without_seccomp() {
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, false).await;
    for (n, profile) in [
        Profile::Path("unconfined".into()),
        Profile::Field(ProfileType::Unconfined, String::new()),
    ]
    .iter()
    .enumerate()
    {
        let id = run_with(
            &mut node,
            &pod,
            &format!("unconfined-{n}"),
            Some(profile),
            &[],
            false,
        )
        .await;
        assert_eq!(seccomp_mode(&mut node.cri, &id).await, "0", "{profile:?}");
    }
    remove_pod(&mut node.cri, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_profile_at_all_is_unconfined() {
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, false).await;
    let none = run_with(&mut node, &pod, "no-profile", None, &[], false).await;
    assert_eq!(seccomp_mode(&mut node.cri, &none).await, "0");
    let empty_path = run_with(
        &mut node,
        &pod,
        "empty-path",
        Some(&Profile::Path(String::new())),
        &[],
        false,
    )
    .await;
    assert_eq!(seccomp_mode(&mut node.cri, &empty_path).await, "0");
    remove_pod(&mut node.cri, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_profile_blocks_what_it_lists() {
    let profiles = Profiles::new();
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, false).await;
    for (n, profile) in Profile::localhost_forms(&profiles.block_chmod())
        .iter()
        .enumerate()
    {
        let id = run_with(
            &mut node,
            &pod,
            &format!("block-chmod-{n}"),
            Some(profile),
            &[],
            false,
        )
        .await;
        let out = exec(&mut node.cri, &id, &["chmod", "400", "/"], 30).await;
        assert_ne!(out.exit_code, 0, "{profile:?}: chmod was allowed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Operation not permitted"),
            "{profile:?}: {stderr}"
        );
        assert_eq!(seccomp_mode(&mut node.cri, &id).await, "2");
    }
    remove_pod(&mut node.cri, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfined_with_sys_admin_can_set_the_hostname() {
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, false).await;
    let unconfined = Profile::Field(ProfileType::Unconfined, String::new());
    let id = run_with(
        &mut node,
        &pod,
        "unconfined-sys-admin",
        Some(&unconfined),
        &["SYS_ADMIN"],
        false,
    )
    .await;
    assert!(can_set_hostname(&mut node.cri, &id).await);
    remove_pod(&mut node.cri, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_profile_blocks_sethostname_even_with_sys_admin() {
    let profiles = Profiles::new();
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, false).await;
    for (n, profile) in Profile::localhost_forms(&profiles.block_hostname())
        .iter()
        .enumerate()
    {
        let id = run_with(
            &mut node,
            &pod,
            &format!("block-hostname-{n}"),
            Some(profile),
            &["SYS_ADMIN"],
            false,
        )
        .await;
        assert!(!can_set_hostname(&mut node.cri, &id).await, "{profile:?}");
    }
    remove_pod(&mut node.cri, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_profile_path_without_localhost_prefix_is_refused() {
    let profiles = Profiles::new();
    let mut node = Node::start().await;
    let (pod_id, pod) = seccomp_pod(&mut node, false).await;
    let mut config = node.container("no-localhost-prefix", &["sleep", "60"]);
    Profile::Path(profiles.block_hostname().display().to_string()).apply(security(&mut config));
    let err = try_create(&mut node.cri, &pod_id, &pod, config)
        .await
        .expect_err("a bare profile path was accepted");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("localhost/"), "{}", err.message());
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_container_ignores_a_profile_blocking_sethostname() {
    let profiles = Profiles::new();
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, true).await;
    for (n, profile) in Profile::localhost_forms(&profiles.block_hostname())
        .iter()
        .enumerate()
    {
        let id = run_with(
            &mut node,
            &pod,
            &format!("privileged-{n}"),
            Some(profile),
            &[],
            true,
        )
        .await;
        assert!(can_set_hostname(&mut node.cri, &id).await, "{profile:?}");
        assert_eq!(seccomp_mode(&mut node.cri, &id).await, "0");
    }
    remove_pod(&mut node.cri, &pod.0).await;
}

/// docker/default in both forms: the legacy path and RuntimeDefault.
fn runtime_default_forms() -> [Profile; 3] {
    [
        Profile::Path("docker/default".into()),
        Profile::Path("runtime/default".into()),
        Profile::Field(ProfileType::RuntimeDefault, String::new()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_default_profile_filters_the_container() {
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, false).await;
    for (n, profile) in runtime_default_forms().iter().enumerate() {
        let id = run_with(
            &mut node,
            &pod,
            &format!("default-{n}"),
            Some(profile),
            &[],
            false,
        )
        .await;
        assert_eq!(seccomp_mode(&mut node.cri, &id).await, "2", "{profile:?}");
    }
    remove_pod(&mut node.cri, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_default_profile_with_sys_admin_can_set_the_hostname() {
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, false).await;
    for (n, profile) in runtime_default_forms().iter().enumerate() {
        let id = run_with(
            &mut node,
            &pod,
            &format!("default-admin-{n}"),
            Some(profile),
            &["SYS_ADMIN"],
            false,
        )
        .await;
        assert!(can_set_hostname(&mut node.cri, &id).await, "{profile:?}");
    }
    remove_pod(&mut node.cri, &pod.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_default_profile_without_extra_caps_blocks_sethostname() {
    let mut node = Node::start().await;
    let pod = seccomp_pod(&mut node, false).await;
    for (n, profile) in runtime_default_forms().iter().enumerate() {
        let id = run_with(
            &mut node,
            &pod,
            &format!("default-plain-{n}"),
            Some(profile),
            &[],
            false,
        )
        .await;
        assert!(!can_set_hostname(&mut node.cri, &id).await, "{profile:?}");
        assert_eq!(seccomp_mode(&mut node.cri, &id).await, "2");
    }
    remove_pod(&mut node.cri, &pod.0).await;
}

/// Runs critest's no-new-privileges probe as uid 1000: a setuid-root
/// program printing its effective uid. Returns what it printed.
async fn effective_uid_with_no_new_privs(no_new_privs: bool) -> String {
    let mut node = Node::start().await;
    let probe = pier_tests::ImageSpec::default()
        .file(
            "usr/local/bin/nnp",
            pier_tests::native::euid_reporter(),
            0o4755,
        )
        .entrypoint(&["/usr/local/bin/nnp"])
        .cmd(&[]);
    let image = node.add_image(&probe, "tests/nonewprivs:1").await;
    let pod = node.pod("nonewprivs");
    let pod_id = node.run_pod(&pod).await;
    let mut config = plain_container("alpine-nnp", &image, &[]);
    config.log_path = "alpine-nnp.log".into();
    let context = security(&mut config);
    context.no_new_privs = no_new_privs;
    context.run_as_user = Some(Int64Value { value: 1000 });
    let log = Node::log_path(&pod, &config);
    let id = node.run(&pod_id, &pod, config).await;
    let exited = wait_exited(&mut node.cri, &id, Duration::from_secs(30)).await;
    assert_eq!(exited.exit_code, 0, "{}", exited.message);
    remove_pod(&mut node.cri, &pod_id).await;
    let lines = log_lines(&log);
    let line = lines
        .iter()
        .find(|l| l.stream == "stdout")
        .expect("probe output");
    line.text.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_new_privs_keeps_a_setuid_program_unprivileged() {
    assert_eq!(
        effective_uid_with_no_new_privs(true).await,
        "Effective uid: 1000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_no_new_privs_a_setuid_program_escalates() {
    assert_eq!(
        effective_uid_with_no_new_privs(false).await,
        "Effective uid: 0"
    );
}
