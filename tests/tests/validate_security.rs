//! critest's "Security Context > bucket" specs: users and groups (also the
//! image's own groups), read-only rootfs, privileged or not, capabilities
//! added and dropped, masked and read-only paths.

use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::workload::*;

/// critest's pauseCmd.
const PAUSE: &[&str] = &["sh", "-c", "top"];

/// Runs a pod and one busybox container of `config`; returns the pod id
/// and the container id.
async fn run_one(
    node: &mut Node,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> (String, String) {
    let pod_id = node.run_pod(pod).await;
    let id = node.run(&pod_id, pod, config).await;
    (pod_id, id)
}

fn stdout(out: &ExecSyncResponse) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &ExecSyncResponse) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Execs `argv` and asserts it succeeded with nothing on stderr; returns stdout.
async fn exec_ok(cri: &mut Runtime, id: &str, argv: &[&str]) -> String {
    let out = exec(cri, id, argv, 30).await;
    assert_eq!(out.exit_code, 0, "{argv:?}: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "{argv:?}: {}", stderr(&out));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_groups_are_the_processes_groups() {
    let mut node = Node::start().await;
    let pod = node.pod("supplemental-groups");
    let mut config = node.container("container-with-SupplementalGroups", PAUSE);
    security(&mut config).supplemental_groups = vec![1234, 5678];
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    let groups = exec_ok(&mut node.cri, &id, &["id", "-G"]).await;
    let groups: Vec<&str> = groups.split_whitespace().collect();
    assert!(
        groups.contains(&"1234") && groups.contains(&"5678"),
        "{groups:?}"
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_groups_of_the_user_are_merged_with_supplemental_groups() {
    // The test image's user `pier` (1000) is a member of `extra` (2000) in its /etc/group.
    let mut node = Node::start().await;
    let pod = node.pod("image-groups");
    let mut config = node.container(
        "container-with-image-groups",
        &["sh", "-c", "id -G; sleep 1000"],
    );
    config.log_path = "image-groups.log".into();
    let context = security(&mut config);
    context.run_as_user = Some(Int64Value { value: 1000 });
    context.supplemental_groups = vec![1234];
    let log = Node::log_path(&pod, &config);
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    let expected = "1000 1234 2000";
    wait_for_log_line(&log, "stdout", |t| t == expected, Duration::from_secs(30)).await;
    // Later critest versions also read the identity from the status.
    let user = status(&mut node.cri, &id).await.user.and_then(|u| u.linux);
    let user = user.expect("status.user.linux");
    assert_eq!((user.uid, user.gid), (1000, 1000));
    let mut groups = user.supplemental_groups.clone();
    groups.sort_unstable();
    assert_eq!(groups, [1000, 1234, 2000]);
    assert_eq!(
        exec_ok(&mut node.cri, &id, &["id", "-G"]).await,
        format!("{expected}\n")
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_user_sets_the_uid() {
    let mut node = Node::start().await;
    let pod = node.pod("run-as-user");
    let mut config = node.container("container-with-RunAsUser", PAUSE);
    security(&mut config).run_as_user = Some(Int64Value { value: 1001 });
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    assert_eq!(exec_ok(&mut node.cri, &id, &["id", "-u"]).await, "1001\n");
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_username_is_looked_up_in_the_image() {
    let mut node = Node::start().await;
    let pod = node.pod("run-as-username");
    let mut config = node.container("container-with-RunAsUserName", PAUSE);
    security(&mut config).run_as_username = "nobody".into();
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    assert_eq!(
        exec_ok(&mut node.cri, &id, &["id", "-nu"]).await,
        "nobody\n"
    );
    assert_eq!(exec_ok(&mut node.cri, &id, &["id", "-u"]).await, "65534\n");
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_group_sets_the_gid() {
    let mut node = Node::start().await;
    let pod = node.pod("run-as-group");
    let mut config = node.container(
        "container-with-RunAsGroup",
        &["sh", "-c", "echo $(id -u):$(id -g)"],
    );
    config.log_path = "run-as-group.log".into();
    let context = security(&mut config);
    context.run_as_user = Some(Int64Value { value: 1001 });
    context.run_as_group = Some(Int64Value { value: 1002 });
    let log = Node::log_path(&pod, &config);
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    wait_exited(&mut node.cri, &id, Duration::from_secs(30)).await;
    let lines = log_lines(&log);
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stdout" && l.text == "1001:1002"),
        "{lines:?}"
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_group_without_run_as_user_is_refused() {
    let mut node = Node::start().await;
    let pod = node.pod("run-as-group-alone");
    let pod_id = node.run_pod(&pod).await;
    let mut config = node.container(
        "container-with-RunAsGroup-without-RunAsUser",
        &["sh", "-c", "echo $(id -u):$(id -g)"],
    );
    security(&mut config).run_as_group = Some(Int64Value { value: 1002 });
    let err = try_create(&mut node.cri, &pod_id, &pod, config)
        .await
        .expect_err("created a container with run_as_group alone");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("run_as_group"), "{}", err.message());
    remove_pod(&mut node.cri, &pod_id).await;
}

/// Runs critest's rootfs probe and returns its log lines.
async fn rootfs_probe(readonly: bool) -> Vec<LogLine> {
    let mut node = Node::start().await;
    let pod = node.pod("readonly-rootfs");
    let probe = "touch test.go && [ -f test.go ] && echo 'Found'";
    let mut config = node.container("container-with-ReadOnlyRootfs", &["sh", "-c", probe]);
    config.log_path = "readonly-rootfs.log".into();
    security(&mut config).readonly_rootfs = readonly;
    let log = Node::log_path(&pod, &config);
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    wait_exited(&mut node.cri, &id, Duration::from_secs(30)).await;
    remove_pod(&mut node.cri, &pod_id).await;
    log_lines(&log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_rootfs_takes_a_new_file() {
    let lines = rootfs_probe(false).await;
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stdout" && l.text == "Found"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_rootfs_refuses_a_new_file() {
    let lines = rootfs_probe(true).await;
    let refused = "touch: test.go: Read-only file system";
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stderr" && l.text == refused),
        "{lines:?}"
    );
}

/// Whether `brctl addbr` works in a container: critest's test of network
/// administration rights.
async fn can_add_a_bridge(cri: &mut Runtime, id: &str) -> bool {
    exec(cri, id, &["brctl", "addbr", "foobar"], 30)
        .await
        .exit_code
        == 0
}

async fn privileged_container_manages_network(privileged: bool) -> bool {
    let mut node = Node::start().await;
    let mut pod = node.pod("privileged");
    pod_security(&mut pod).privileged = privileged;
    let mut config = node.container("container-with-isPrivileged", PAUSE);
    security(&mut config).privileged = privileged;
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    let managed = can_add_a_bridge(&mut node.cri, &id).await;
    remove_pod(&mut node.cri, &pod_id).await;
    managed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_container_can_manage_the_network() {
    assert!(privileged_container_manages_network(true).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_container_cannot_manage_the_network() {
    assert!(!privileged_container_manages_network(false).await);
}

fn with_caps(mut config: ContainerConfig, add: &[&str], drop: &[&str]) -> ContainerConfig {
    let owned = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect();
    security(&mut config).capabilities = Some(Capability {
        add_capabilities: owned(add),
        drop_capabilities: owned(drop),
        add_ambient_capabilities: Vec::new(),
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_capability_is_granted_and_absent_by_default() {
    let mut node = Node::start().await;
    let pod = node.pod("add-capability");
    let pod_id = node.run_pod(&pod).await;
    let added = with_caps(node.container("with-NET_ADMIN", PAUSE), &["NET_ADMIN"], &[]);
    let added = node.run(&pod_id, &pod, added).await;
    assert!(can_add_a_bridge(&mut node.cri, &added).await);
    let plain = node.container("container-with-notCapability", PAUSE);
    let plain = node.run(&pod_id, &pod, plain).await;
    assert!(!can_add_a_bridge(&mut node.cri, &plain).await);
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_capability_is_refused() {
    let mut node = Node::start().await;
    let pod = node.pod("drop-capability");
    let config = with_caps(node.container("without-NET_RAW", PAUSE), &[], &["NET_RAW"]);
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    let out = exec(&mut node.cri, &id, &["ping", "127.0.0.1"], 30).await;
    assert_ne!(out.exit_code, 0);
    assert!(!out.stdout.is_empty(), "ping printed nothing");
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

/// The bounding set a container's process reports.
async fn bounding_set(add: &[&str], drop: &[&str]) -> String {
    let mut node = Node::start().await;
    let pod = node.pod("capability-sets");
    let config = with_caps(node.container("capability-set", PAUSE), add, drop);
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    let status = exec_ok(&mut node.cri, &id, &["cat", "/proc/self/status"]).await;
    remove_pod(&mut node.cri, &pod_id).await;
    let line = status
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .expect("CapBnd line");
    line.trim_start_matches("CapBnd:").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_all_capabilities_fills_the_bounding_set() {
    let set = bounding_set(&["ALL"], &[]).await;
    let ours = std::fs::read_to_string("/proc/self/status").expect("own status");
    let ours = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("own CapBnd")
        .trim()
        .to_owned();
    assert_ne!(set, "0000000000000000");
    assert_eq!(set, ours, "ALL is every capability the runtime holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_all_capabilities_empties_the_bounding_set() {
    assert_eq!(bounding_set(&[], &["ALL"]).await, "0000000000000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_path_cannot_be_run() {
    // critest masks /bin/ls of a busybox image whose applets are hard links.
    // Here they are symlinks, and masking one would mask busybox itself: a
    // script of its own stands in.
    let mut node = Node::start().await;
    let probe = pier_tests::ImageSpec::default().file(
        "usr/local/bin/probe",
        "#!/bin/sh\necho probed\n",
        0o755,
    );
    let image = node.add_image(&probe, "tests/probe:1").await;
    let pod = node.pod("masked-paths");
    let pod_id = node.run_pod(&pod).await;
    let plain = plain_container("container-without-maskedpaths", &image, PAUSE);
    let plain = node.run(&pod_id, &pod, plain).await;
    let ran = exec_ok(
        &mut node.cri,
        &plain,
        &["/bin/sh", "-c", "/usr/local/bin/probe"],
    )
    .await;
    assert_eq!(ran, "probed\n");

    let mut config = plain_container("container-with-maskedpaths", &image, PAUSE);
    security(&mut config).masked_paths = vec!["/usr/local/bin/probe".into()];
    let id = node.run(&pod_id, &pod, config).await;
    let out = exec(
        &mut node.cri,
        &id,
        &["/bin/sh", "-c", "/usr/local/bin/probe"],
        30,
    )
    .await;
    assert_ne!(out.exit_code, 0);
    assert_eq!(
        stderr(&out),
        "/bin/sh: /usr/local/bin/probe: Permission denied\n"
    );
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_path_refuses_writes() {
    let mut node = Node::start().await;
    let pod = node.pod("readonly-paths");
    let mut config = node.container("container-with-readonlypaths", PAUSE);
    security(&mut config).readonly_paths = vec!["/tmp".into()];
    let (pod_id, id) = run_one(&mut node, &pod, config).await;
    let out = exec(&mut node.cri, &id, &["touch", "/tmp/test"], 30).await;
    assert_ne!(out.exit_code, 0);
    assert_eq!(stderr(&out), "touch: /tmp/test: Read-only file system\n");
    remove_pod(&mut node.cri, &pod_id).await;
}
