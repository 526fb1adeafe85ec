//! Random and boundary CRI requests against a real pierd (issue #13, part
//! 4): empty and huge ids, names, labels and annotations; paths with `..`,
//! NUL bytes and symlinks in log paths and mounts; absurd resources.
//!
//! For every request: pierd does not panic, bad input is never INTERNAL or
//! UNKNOWN, and a rejected call leaves the node as it found it (what the CRI
//! lists, the files under pierd's roots, the log and host-path areas, and
//! the mounts under them). An accepted call is undone through the CRI and
//! must leave pierd's roots as they were.
//!
//! The cases come from a fixed seed, so a run is repeatable; set
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` for a longer exploration, and
//! `PIER_BAD_INPUT_SURVEY=1` to list every INTERNAL answer instead of
//! stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_cri::v1::*;
use pier_tests::workload::{self, Node, Runtime};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use tonic::Code;

/// Cases per property unless `PROPTEST_CASES` says otherwise: enough to
/// reach every mutation several times within a minute or two.
const CASES: u32 = 48;
/// The seed of the cases CI runs.
const SEED: u64 = 0x5eed_b4d1;

// ---------------------------------------------------------------- inputs

/// A string from the shapes that break parsers and paths.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9][a-z0-9-]{0,20}",
        1 => Just(String::new()),
        2 => prop::sample::select(vec![
            "..", "../..", "a/b", "/", ".", "a\0b", "\0", "line\nbreak", "é", " ",
            "a b", "-", "*", "%00", "=", "a=b", "\u{202e}rtl",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(vec![64usize, 254, 4097, 70_000]).prop_map(|n| "x".repeat(n)),
        1 => any::<String>(),
    ]
}

/// A host path: inside the test's area (plain, missing, through a symlink,
/// escaping with `..`), relative, with a NUL, or one of the node's files.
fn host_path(area: &Path) -> impl Strategy<Value = String> + use<> {
    let area = area.display().to_string();
    prop_oneof![
        Just(format!("{area}/dir")),
        Just(format!("{area}/missing/deeper")),
        Just(format!("{area}/link")),
        Just(format!("{area}/link/inside")),
        Just(format!("{area}/dir/../../escape")),
        Just(format!("{area}/nul\0byte")),
        Just("relative/dir".to_owned()),
        Just("../../escape".to_owned()),
        Just("/dev/null".to_owned()),
        Just(String::new()),
        text(),
    ]
}

/// A path as a container would see it.
fn container_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/data".to_owned()),
        Just("/data/../../etc".to_owned()),
        Just("relative".to_owned()),
        Just("/proc/self".to_owned()),
        Just("/a\0b".to_owned()),
        Just(String::new()),
        text().prop_map(|t| format!("/{t}")),
    ]
}

/// A number from the edges of its type and the values near zero.
fn int64() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            i64::MIN + 1,
            -1_000_000_007,
            -2,
            -1,
            0,
            1,
            2,
            1023,
            1024,
            4096,
            1 << 31,
            u32::MAX as i64,
            1 << 40,
            i64::MAX - 1,
            i64::MAX,
        ]),
        any::<i64>(),
    ]
}

fn int32() -> impl Strategy<Value = i32> {
    prop_oneof![
        prop::sample::select(vec![i32::MIN, -1, 0, 1, 2, 3, 4, 65535, 65536, i32::MAX]),
        any::<i32>(),
    ]
}

fn labels() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(text(), text(), 0..4)
}

/// What a mutation of a pod config changes.
#[derive(Debug, Clone)]
enum PodChange {
    Name(String),
    Namespace(String),
    Uid(String),
    Attempt(u32),
    Hostname(String),
    LogDirectory(String),
    Labels(HashMap<String, String>),
    Annotations(HashMap<String, String>),
    Dns(Vec<String>, Vec<String>, Vec<String>),
    Port(i32, i32, i32, String),
    CgroupParent(String),
    Sysctls(HashMap<String, String>),
    Namespaces(i32, i32, i32, String),
    RunAsUser(i64),
    SupplementalGroups(Vec<i64>),
    Resources(i64, i64, i64, i64),
    Seccomp(i32, String),
    Handler(String),
}

fn pod_change(area: PathBuf) -> impl Strategy<Value = PodChange> {
    prop_oneof![
        text().prop_map(PodChange::Name),
        text().prop_map(PodChange::Namespace),
        text().prop_map(PodChange::Uid),
        any::<u32>().prop_map(PodChange::Attempt),
        text().prop_map(PodChange::Hostname),
        host_path(&area).prop_map(PodChange::LogDirectory),
        labels().prop_map(PodChange::Labels),
        labels().prop_map(PodChange::Annotations),
        (
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(text(), 0..3)
        )
            .prop_map(|(s, d, o)| PodChange::Dns(s, d, o)),
        (int32(), int32(), int32(), text()).prop_map(|(p, c, h, ip)| PodChange::Port(p, c, h, ip)),
        text().prop_map(PodChange::CgroupParent),
        prop::collection::hash_map(
            prop_oneof![
                Just("net.ipv4.ip_forward".to_owned()),
                Just("kernel.shm_rmid_forced".to_owned()),
                Just("vm.swappiness".to_owned()),
                text()
            ],
            text(),
            0..3
        )
        .prop_map(PodChange::Sysctls),
        (int32(), int32(), int32(), text())
            .prop_map(|(n, p, i, t)| PodChange::Namespaces(n, p, i, t)),
        int64().prop_map(PodChange::RunAsUser),
        prop::collection::vec(int64(), 0..4).prop_map(PodChange::SupplementalGroups),
        (int64(), int64(), int64(), int64())
            .prop_map(|(p, q, s, m)| PodChange::Resources(p, q, s, m)),
        (int32(), host_path(&area)).prop_map(|(t, p)| PodChange::Seccomp(t, p)),
        text().prop_map(PodChange::Handler),
    ]
}

/// What a mutation of a container config changes.
#[derive(Debug, Clone)]
enum ContainerChange {
    Name(String),
    Attempt(u32),
    Image(String),
    Command(Vec<String>),
    Args(Vec<String>),
    WorkingDir(String),
    Env(String, String),
    Mount(String, String, bool, i32, bool),
    Device(String, String, String),
    Labels(HashMap<String, String>),
    Annotations(HashMap<String, String>),
    LogPath(String),
    Resources(Box<LinuxContainerResources>),
    User(i64, i64, String, Vec<i64>),
    Capabilities(Vec<String>, Vec<String>),
    Flags(bool, bool, bool, bool, bool),
    Paths(Vec<String>, Vec<String>),
    Seccomp(i32, String),
    Apparmor(i32, String),
    PodId(String),
}

fn resources() -> impl Strategy<Value = LinuxContainerResources> {
    (
        (int64(), int64(), int64(), int64(), int64(), int64()),
        (text(), text()),
        prop::collection::vec((text(), any::<u64>()), 0..2),
        prop::collection::hash_map(text(), text(), 0..2),
    )
        .prop_map(
            |((period, quota, shares, memory, oom, swap), (cpus, mems), huge, unified)| {
                LinuxContainerResources {
                    cpu_period: period,
                    cpu_quota: quota,
                    cpu_shares: shares,
                    memory_limit_in_bytes: memory,
                    oom_score_adj: oom,
                    memory_swap_limit_in_bytes: swap,
                    cpuset_cpus: cpus,
                    cpuset_mems: mems,
                    hugepage_limits: huge
                        .into_iter()
                        .map(|(page_size, limit)| HugepageLimit { page_size, limit })
                        .collect(),
                    unified,
                }
            },
        )
}

fn argv() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            2 => Just("sleep".to_owned()),
            1 => Just("/bin/sleep".to_owned()),
            1 => Just("3600".to_owned()),
            1 => Just("/no/such/binary".to_owned()),
            2 => text(),
        ],
        0..4,
    )
}

fn container_change(area: PathBuf) -> impl Strategy<Value = ContainerChange> {
    prop_oneof![
        text().prop_map(ContainerChange::Name),
        any::<u32>().prop_map(ContainerChange::Attempt),
        text().prop_map(ContainerChange::Image),
        argv().prop_map(ContainerChange::Command),
        argv().prop_map(ContainerChange::Args),
        prop_oneof![container_path(), text()].prop_map(ContainerChange::WorkingDir),
        (text(), text()).prop_map(|(k, v)| ContainerChange::Env(k, v)),
        (
            container_path(),
            host_path(&area),
            any::<bool>(),
            int32(),
            any::<bool>()
        )
            .prop_map(|(c, h, ro, p, rro)| ContainerChange::Mount(c, h, ro, p, rro)),
        (container_path(), host_path(&area), text())
            .prop_map(|(c, h, perm)| ContainerChange::Device(c, h, perm)),
        labels().prop_map(ContainerChange::Labels),
        labels().prop_map(ContainerChange::Annotations),
        prop_oneof![
            Just("../../escape.log".to_owned()),
            Just("/etc/absolute.log".to_owned()),
            Just("dir/../../up.log".to_owned()),
            Just("link/into-sentinel.log".to_owned()),
            Just("nul\0.log".to_owned()),
            text(),
        ]
        .prop_map(ContainerChange::LogPath),
        resources().prop_map(|r| ContainerChange::Resources(Box::new(r))),
        (
            int64(),
            int64(),
            text(),
            prop::collection::vec(int64(), 0..3)
        )
            .prop_map(|(u, g, name, groups)| ContainerChange::User(u, g, name, groups)),
        (
            prop::collection::vec(
                prop_oneof![Just("NET_ADMIN".to_owned()), Just("ALL".to_owned()), text()],
                0..3
            ),
            prop::collection::vec(prop_oneof![Just("ALL".to_owned()), text()], 0..3)
        )
            .prop_map(|(add, drop)| ContainerChange::Capabilities(add, drop)),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(p, ro, nnp, tty, stdin)| ContainerChange::Flags(p, ro, nnp, tty, stdin)),
        (
            prop::collection::vec(container_path(), 0..3),
            prop::collection::vec(container_path(), 0..3)
        )
            .prop_map(|(masked, ro)| ContainerChange::Paths(masked, ro)),
        (int32(), host_path(&area)).prop_map(|(t, p)| ContainerChange::Seccomp(t, p)),
        (int32(), text()).prop_map(|(t, p)| ContainerChange::Apparmor(t, p)),
        text().prop_map(ContainerChange::PodId),
    ]
}

// ---------------------------------------------------------------- the node

/// What the node holds, as far as a rejected call must not change it.
#[derive(Debug, PartialEq)]
struct World {
    pods: Vec<(String, i32)>,
    containers: Vec<(String, i32)>,
    images: Vec<String>,
    /// Files under pierd's roots: (is a directory, size of a file).
    roots: BTreeMap<PathBuf, (bool, u64)>,
    /// Files the requests may name: the log and host-path areas.
    areas: BTreeMap<PathBuf, (bool, u64)>,
    mounts: Vec<String>,
}

/// Every file under `dir`, symlinks not followed.
fn tree(dir: &Path, out: &mut BTreeMap<PathBuf, (bool, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        // SQLite's shared-memory index changes on reads; its content is
        // what the CRI lists show.
        let volatile = path.to_string_lossy().ends_with("-shm");
        out.insert(
            path.clone(),
            (
                meta.is_dir(),
                if meta.is_dir() || volatile {
                    0
                } else {
                    meta.len()
                },
            ),
        );
        if meta.is_dir() {
            tree(&path, out);
        }
    }
}

/// A pierd on its own network with a busybox image, a pod and a sleeping
/// container as the fixed part of the node, and an area of host paths with
/// a symlink into a sentinel directory nothing may write to.
struct Fixture {
    node: Node,
    images: ImageServiceClient,
    pod: PodSandboxConfig,
    pod_id: String,
    sleeper: String,
    area: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

type ImageServiceClient =
    k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>;

impl Fixture {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (node, images, pod, pod_id, sleeper) = runtime.block_on(async {
            let mut node = Node::start().await;
            let images = node.pierd.cri().await.images;
            let pod = node.pod("fixed");
            let pod_id = node.run_pod(&pod).await;
            let sleeper = node
                .run(&pod_id, &pod, node.container("sleeper", &["sleep", "3600"]))
                .await;
            (node, images, pod, pod_id, sleeper)
        });
        let area = tempfile::tempdir().expect("area");
        std::fs::create_dir(area.path().join("dir")).expect("area dir");
        std::fs::create_dir(area.path().join("sentinel")).expect("sentinel");
        std::os::unix::fs::symlink(area.path().join("sentinel"), area.path().join("link"))
            .expect("symlink");
        Self {
            node,
            images,
            pod,
            pod_id,
            sleeper,
            area,
            runtime,
        }
    }

    fn cri(&self) -> Runtime {
        self.node.cri.clone()
    }

    /// The node once the background deletion of removed containers' files
    /// (`.trash-*` under the state root) is done.
    async fn world(&self) -> World {
        for _ in 0..50 {
            let world = self.world_now().await;
            let trash = world
                .roots
                .keys()
                .any(|p| p.to_string_lossy().contains("/.trash-"));
            // runc's state of a removed container goes in the background too.
            let runc_state = self.node.pierd.runroot().join("runtime/runc");
            let stray_state = world.roots.keys().any(|p| {
                p.parent() == Some(runc_state.as_path())
                    && !world.containers.iter().any(|(id, _)| p.ends_with(id))
            });
            if !trash && !stray_state {
                return world;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.world_now().await
    }

    async fn world_now(&self) -> World {
        let mut cri = self.cri();
        let mut images = self.images.clone();
        let mut pods: Vec<(String, i32)> = cri
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
            .into_iter()
            .map(|p| (p.id, p.state))
            .collect();
        pods.sort();
        let mut containers: Vec<(String, i32)> = cri
            .list_containers(ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect();
        containers.sort();
        let mut image_ids: Vec<String> = images
            .list_images(ListImagesRequest::default())
            .await
            .expect("ListImages")
            .into_inner()
            .images
            .into_iter()
            .map(|i| i.id)
            .collect();
        image_ids.sort();
        let mut roots = BTreeMap::new();
        tree(&self.node.pierd.root(), &mut roots);
        tree(&self.node.pierd.runroot(), &mut roots);
        let mut areas = BTreeMap::new();
        tree(self.area.path(), &mut areas);
        tree(self.node.logs.path(), &mut areas);
        let ours = [
            self.node.pierd.root(),
            self.node.pierd.runroot(),
            self.area.path().to_owned(),
            self.node.logs.path().to_owned(),
        ];
        let mounts = workload::mount_points()
            .into_iter()
            .filter(|m| ours.iter().any(|dir| Path::new(m).starts_with(dir)))
            .collect();
        World {
            pods,
            containers,
            images: image_ids,
            roots,
            areas,
            mounts,
        }
    }

    /// Runs `cases` inputs of `strategy` through `case`, from a fixed seed.
    fn check<S: Strategy>(
        &self,
        strategy: S,
        case: impl Fn(&Self, S::Value) -> Result<(), TestCaseError>,
    ) {
        let config = Config {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(CASES),
            failure_persistence: None,
            max_shrink_iters: 64,
            ..Config::default()
        };
        let mut config = config;
        // A fixed seed unless `PROPTEST_RNG_SEED` asks for another.
        if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
            config.rng_seed = RngSeed::Fixed(SEED);
        }
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |input| case(self, input));
        if let Err(e) = result {
            let log = self.node.pierd.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("{e}\n---- pierd log (last lines) ----\n{}", tail.join("\n"));
        }
    }

    /// The checks every answer gets: no INTERNAL or UNKNOWN for what the
    /// client sent, and pierd still alive and serving.
    async fn judge<T>(
        &self,
        call: &str,
        input: &dyn std::fmt::Debug,
        answer: &Result<T, tonic::Status>,
    ) -> Result<(), TestCaseError> {
        if let Err(status) = answer {
            // A survey lists every such answer instead of stopping at the first.
            if std::env::var_os("PIER_BAD_INPUT_SURVEY").is_some()
                && matches!(
                    status.code(),
                    Code::Internal | Code::Unknown | Code::Unavailable
                )
            {
                eprintln!(
                    "SURVEY {call} {:?} {} <- {input:?}",
                    status.code(),
                    status.message()
                );
                return Ok(());
            }
            prop_assert!(
                !matches!(
                    status.code(),
                    Code::Internal | Code::Unknown | Code::Unavailable
                ),
                "{call} answered {:?} ({}) to {input:?}",
                status.code(),
                status.message()
            );
        }
        let mut cri = self.cri();
        let alive = cri.version(VersionRequest::default()).await;
        prop_assert!(
            alive.is_ok(),
            "pierd stopped answering after {call} {input:?}"
        );
        prop_assert!(
            !self.node.pierd.log().contains("panicked"),
            "pierd panicked on {call} {input:?}"
        );
        Ok(())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let mut cri = self.cri();
        let pod = self.pod_id.clone();
        self.runtime
            .block_on(async move { workload::remove_pod(&mut cri, &pod).await });
    }
}

/// What differs between two snapshots of files: one line per path.
fn file_diff(
    before: &BTreeMap<PathBuf, (bool, u64)>,
    after: &BTreeMap<PathBuf, (bool, u64)>,
) -> String {
    let mut out = String::new();
    for (path, was) in before {
        match after.get(path) {
            None => out += &format!("\n  gone: {}", path.display()),
            Some(now) if now != was => {
                out += &format!("\n  changed: {} {was:?} -> {now:?}", path.display())
            }
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out += &format!("\n  new: {}", path.display());
    }
    out
}

/// The parts of the node a call changed, described; empty when none did.
/// `all` includes the areas the requests name and the image list.
fn changes(before: &World, after: &World, all: bool) -> String {
    let mut out = String::new();
    if before.pods != after.pods {
        out += &format!("\n pods {:?} -> {:?}", before.pods, after.pods);
    }
    if before.containers != after.containers {
        out += &format!(
            "\n containers {:?} -> {:?}",
            before.containers, after.containers
        );
    }
    if before.mounts != after.mounts {
        out += &format!("\n mounts {:?} -> {:?}", before.mounts, after.mounts);
    }
    // The database's files grow with rows written and deleted again (a
    // request refused once its image is mounted); the rows themselves are
    // what the CRI lists above show.
    let kept = |files: &BTreeMap<PathBuf, (bool, u64)>| {
        let mut files = files.clone();
        files.retain(|p, _| !p.to_string_lossy().contains("pier.db"));
        files
    };
    out += &file_diff(&kept(&before.roots), &kept(&after.roots));
    if all {
        if before.images != after.images {
            out += &format!("\n images {:?} -> {:?}", before.images, after.images);
        }
        out += &file_diff(&before.areas, &after.areas);
    }
    out
}

/// A refused call must leave the node as it found it.
fn unchanged(
    call: &str,
    input: &dyn std::fmt::Debug,
    before: &World,
    after: &World,
) -> Result<(), TestCaseError> {
    let diff = changes(before, after, true);
    prop_assert!(
        diff.is_empty(),
        "{} refused {:?} but changed the node:{}",
        call,
        input,
        diff
    );
    Ok(())
}

/// A call accepted and undone through the CRI must leave pierd's own state
/// as it was; kubelet-owned files it made (pod log directories, host-path
/// volumes created as DirectoryOrCreate) may stay.
fn roots_restored(
    call: &str,
    input: &dyn std::fmt::Debug,
    before: &World,
    after: &World,
) -> Result<(), TestCaseError> {
    let diff = changes(before, after, false);
    prop_assert!(
        diff.is_empty(),
        "{} accepted {:?}, and its undo left:{}",
        call,
        input,
        diff
    );
    Ok(())
}

// ---------------------------------------------------------------- requests

fn apply_pod(config: &mut PodSandboxConfig, change: &PodChange) -> String {
    let metadata = config.metadata.get_or_insert_with(Default::default);
    let mut handler = String::new();
    match change.clone() {
        PodChange::Name(v) => metadata.name = v,
        PodChange::Namespace(v) => metadata.namespace = v,
        PodChange::Uid(v) => metadata.uid = v,
        PodChange::Attempt(v) => metadata.attempt = v,
        PodChange::Hostname(v) => config.hostname = v,
        PodChange::LogDirectory(v) => config.log_directory = v,
        PodChange::Labels(v) => config.labels = v,
        PodChange::Annotations(v) => config.annotations = v,
        PodChange::Dns(servers, searches, options) => {
            config.dns_config = Some(DnsConfig {
                servers,
                searches,
                options,
            })
        }
        PodChange::Port(protocol, container_port, host_port, host_ip) => {
            config.port_mappings.push(PortMapping {
                protocol,
                container_port,
                host_port,
                host_ip,
            })
        }
        PodChange::CgroupParent(v) => {
            config
                .linux
                .get_or_insert_with(Default::default)
                .cgroup_parent = v
        }
        PodChange::Sysctls(v) => config.linux.get_or_insert_with(Default::default).sysctls = v,
        PodChange::Namespaces(network, pid, ipc, target_id) => {
            workload::pod_security(config).namespace_options = Some(NamespaceOption {
                network,
                pid,
                ipc,
                target_id,
                ..Default::default()
            })
        }
        PodChange::RunAsUser(v) => {
            workload::pod_security(config).run_as_user = Some(Int64Value { value: v })
        }
        PodChange::SupplementalGroups(v) => workload::pod_security(config).supplemental_groups = v,
        PodChange::Resources(period, quota, shares, memory) => {
            let linux = config.linux.get_or_insert_with(Default::default);
            linux.resources = Some(LinuxContainerResources {
                cpu_period: period,
                cpu_quota: quota,
                cpu_shares: shares,
                memory_limit_in_bytes: memory,
                ..Default::default()
            })
        }
        PodChange::Seccomp(profile_type, localhost_ref) => {
            workload::pod_security(config).seccomp = Some(SecurityProfile {
                profile_type,
                localhost_ref,
            })
        }
        PodChange::Handler(v) => handler = v,
    }
    handler
}

fn apply_container(config: &mut ContainerConfig, pod_id: &mut String, change: &ContainerChange) {
    let metadata = config.metadata.get_or_insert_with(Default::default);
    match change.clone() {
        ContainerChange::Name(v) => metadata.name = v,
        ContainerChange::Attempt(v) => metadata.attempt = v,
        ContainerChange::Image(v) => {
            config.image = Some(ImageSpec {
                image: v,
                ..Default::default()
            })
        }
        ContainerChange::Command(v) => config.command = v,
        ContainerChange::Args(v) => config.args = v,
        ContainerChange::WorkingDir(v) => config.working_dir = v,
        ContainerChange::Env(key, value) => config.envs.push(KeyValue { key, value }),
        ContainerChange::Mount(container_path, host_path, readonly, propagation, rro) => {
            config.mounts.push(Mount {
                container_path,
                host_path,
                readonly,
                propagation,
                recursive_read_only: rro,
                ..Default::default()
            })
        }
        ContainerChange::Device(container_path, host_path, permissions) => {
            config.devices.push(Device {
                container_path,
                host_path,
                permissions,
            })
        }
        ContainerChange::Labels(v) => config.labels = v,
        ContainerChange::Annotations(v) => config.annotations = v,
        ContainerChange::LogPath(v) => config.log_path = v,
        ContainerChange::Resources(r) => {
            config.linux.get_or_insert_with(Default::default).resources = Some(*r)
        }
        ContainerChange::User(uid, gid, name, groups) => {
            let security = workload::security(config);
            security.run_as_user = Some(Int64Value { value: uid });
            security.run_as_group = Some(Int64Value { value: gid });
            security.run_as_username = name;
            security.supplemental_groups = groups;
        }
        ContainerChange::Capabilities(add, drop) => {
            workload::security(config).capabilities = Some(Capability {
                add_capabilities: add,
                drop_capabilities: drop,
                ..Default::default()
            })
        }
        ContainerChange::Flags(privileged, readonly, no_new_privs, tty, stdin) => {
            let security = workload::security(config);
            security.privileged = privileged;
            security.readonly_rootfs = readonly;
            security.no_new_privs = no_new_privs;
            config.tty = tty;
            config.stdin = stdin;
        }
        ContainerChange::Paths(masked, readonly) => {
            let security = workload::security(config);
            security.masked_paths = masked;
            security.readonly_paths = readonly;
        }
        ContainerChange::Seccomp(profile_type, localhost_ref) => {
            workload::security(config).seccomp = Some(SecurityProfile {
                profile_type,
                localhost_ref,
            })
        }
        ContainerChange::Apparmor(profile_type, localhost_ref) => {
            workload::security(config).apparmor = Some(SecurityProfile {
                profile_type,
                localhost_ref,
            })
        }
        ContainerChange::PodId(v) => *pod_id = v,
    }
}

// ---------------------------------------------------------------- properties

#[test]
fn run_pod_sandbox_refuses_bad_configs_cleanly() {
    let f = Fixture::new();
    let strategy = prop::collection::vec(pod_change(f.area.path().to_owned()), 1..4);
    f.check(strategy, |f, changes| {
        f.runtime.block_on(async {
            let mut config = f.node.pod("random");
            config.log_directory = f.node.logs.path().join("random").display().to_string();
            let mut handler = String::new();
            for change in &changes {
                let h = apply_pod(&mut config, change);
                if matches!(change, PodChange::Handler(_)) {
                    handler = h;
                }
            }
            let before = f.world().await;
            let mut cri = f.cri();
            let answer = cri
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: handler,
                })
                .await
                .map(|r| r.into_inner().pod_sandbox_id);
            f.judge("RunPodSandbox", &changes, &answer).await?;
            match answer {
                Ok(id) => {
                    workload::remove_pod(&mut cri, &id).await;
                    roots_restored("RunPodSandbox", &changes, &before, &f.world().await)
                }
                Err(_) => unchanged("RunPodSandbox", &changes, &before, &f.world().await),
            }
        })
    });
}

#[test]
fn create_container_refuses_bad_configs_cleanly() {
    let f = Fixture::new();
    let strategy = prop::collection::vec(container_change(f.area.path().to_owned()), 1..4);
    f.check(strategy, |f, changes| {
        f.runtime.block_on(async {
            let mut config = f.node.container("random", &["sleep", "3600"]);
            config.log_path = "random/0.log".into();
            let mut pod_id = f.pod_id.clone();
            for change in &changes {
                apply_container(&mut config, &mut pod_id, change);
            }
            let before = f.world().await;
            let mut cri = f.cri();
            let answer = workload::try_create(&mut cri, &pod_id, &f.pod, config).await;
            f.judge("CreateContainer", &changes, &answer).await?;
            match answer {
                Ok(id) => {
                    // What was accepted must also start, or say why not
                    // without INTERNAL.
                    let started = cri
                        .start_container(StartContainerRequest {
                            container_id: id.clone(),
                        })
                        .await
                        .map(|_| ());
                    f.judge("StartContainer", &changes, &started).await?;
                    cri.stop_container(StopContainerRequest {
                        container_id: id.clone(),
                        timeout: 0,
                    })
                    .await
                    .expect("StopContainer");
                    cri.remove_container(RemoveContainerRequest { container_id: id })
                        .await
                        .expect("RemoveContainer");
                    roots_restored("CreateContainer", &changes, &before, &f.world().await)
                }
                Err(_) => unchanged("CreateContainer", &changes, &before, &f.world().await),
            }
        })
    });
}

/// A call that names a container or pod by id (or names an image).
#[derive(Debug, Clone)]
enum ByName {
    ContainerStatus(String),
    PodStatus(String),
    StartContainer(String),
    StopContainer(String, i64),
    RemoveContainer(String),
    StopPod(String),
    RemovePod(String),
    ReopenLog(String),
    Stats(String),
    Exec(String, Vec<String>, i64),
    ExecSyncOther(String),
    Update(String),
    ImageStatus(String),
    RemoveImage(String),
    PullImage(String),
}

fn by_name() -> impl Strategy<Value = ByName> {
    let id = || prop_oneof![text(), "[0-9a-f]{64}", Just("0".repeat(64)),];
    prop_oneof![
        id().prop_map(ByName::ContainerStatus),
        id().prop_map(ByName::PodStatus),
        id().prop_map(ByName::StartContainer),
        (id(), int64()).prop_map(|(i, t)| ByName::StopContainer(i, t)),
        id().prop_map(ByName::RemoveContainer),
        id().prop_map(ByName::StopPod),
        id().prop_map(ByName::RemovePod),
        id().prop_map(ByName::ReopenLog),
        id().prop_map(ByName::Stats),
        // Any command with a short timeout, or `true` with any timeout: a
        // timeout of 0 or less means none, which a random command could use
        // to hold the test up.
        (id(), argv(), 1i64..=2).prop_map(|(i, a, t)| ByName::Exec(i, a, t)),
        (id(), int64()).prop_map(|(i, t)| ByName::Exec(i, vec!["true".into()], t)),
        id().prop_map(ByName::ExecSyncOther),
        id().prop_map(ByName::Update),
        prop_oneof![
            text(),
            Just("a@sha256:zz".to_owned()),
            Just("::".to_owned())
        ]
        .prop_map(ByName::ImageStatus),
        prop_oneof![text(), Just("sha256:".to_owned()), "sha256:[0-9a-f]{64}"]
            .prop_map(ByName::RemoveImage),
        prop_oneof![
            Just("a@sha256:zz".to_owned()),
            Just("UPPER/case".to_owned()),
            Just("127.0.0.1:1/none:1".to_owned()),
            Just(String::new()),
            Just("x".repeat(4097)),
            Just("a\0b".to_owned()),
        ]
        .prop_map(ByName::PullImage),
    ]
}

/// Runs one call that names something; the result with its status only.
async fn call_by_name(f: &Fixture, call: &ByName) -> Result<(), tonic::Status> {
    let mut cri = f.cri();
    let mut images = f.images.clone();
    match call.clone() {
        ByName::ContainerStatus(container_id) => cri
            .container_status(ContainerStatusRequest {
                container_id,
                verbose: true,
            })
            .await
            .map(|_| ()),
        ByName::PodStatus(pod_sandbox_id) => cri
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id,
                verbose: true,
            })
            .await
            .map(|_| ()),
        ByName::StartContainer(container_id) => cri
            .start_container(StartContainerRequest { container_id })
            .await
            .map(|_| ()),
        ByName::StopContainer(container_id, timeout) => cri
            .stop_container(StopContainerRequest {
                container_id,
                timeout,
            })
            .await
            .map(|_| ()),
        ByName::RemoveContainer(container_id) => cri
            .remove_container(RemoveContainerRequest { container_id })
            .await
            .map(|_| ()),
        ByName::StopPod(pod_sandbox_id) => cri
            .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id })
            .await
            .map(|_| ()),
        ByName::RemovePod(pod_sandbox_id) => cri
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id })
            .await
            .map(|_| ()),
        ByName::ReopenLog(container_id) => cri
            .reopen_container_log(ReopenContainerLogRequest { container_id })
            .await
            .map(|_| ()),
        ByName::Stats(container_id) => cri
            .container_stats(ContainerStatsRequest { container_id })
            .await
            .map(|_| ()),
        ByName::Exec(container_id, cmd, timeout) => {
            // The fixed container, by its full id: what it runs must not
            // matter to pierd.
            let id = if container_id.len() % 2 == 0 {
                f.sleeper.clone()
            } else {
                container_id
            };
            cri.exec_sync(ExecSyncRequest {
                container_id: id,
                cmd,
                timeout,
            })
            .await
            .map(|_| ())
        }
        ByName::ExecSyncOther(container_id) => cri
            .exec(ExecRequest {
                container_id,
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ByName::Update(container_id) => cri
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id,
                linux: Some(LinuxContainerResources::default()),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ByName::ImageStatus(image) => images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                verbose: true,
            })
            .await
            .map(|_| ()),
        ByName::RemoveImage(image) => images
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ()),
        ByName::PullImage(image) => images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    }
}

#[test]
fn calls_naming_what_does_not_exist_change_nothing() {
    let f = Fixture::new();
    f.check(by_name(), |f, call| {
        f.runtime.block_on(async {
            let before = f.world().await;
            let answer = call_by_name(f, &call).await;
            f.judge("call", &call, &answer).await?;
            // None of these names anything but the fixed pod and container
            // by their full ids, and ExecSync in the sleeper stores nothing.
            unchanged("call", &call, &before, &f.world().await)
        })
    });
}

#[test]
fn update_container_resources_refuses_absurd_values_cleanly() {
    let f = Fixture::new();
    f.check(resources(), |f, resources| {
        f.runtime.block_on(async {
            let mut cri = f.cri();
            let before = f.world().await;
            let answer = cri
                .update_container_resources(UpdateContainerResourcesRequest {
                    container_id: f.sleeper.clone(),
                    linux: Some(resources.clone()),
                    ..Default::default()
                })
                .await
                .map(|_| ());
            f.judge("UpdateContainerResources", &resources, &answer)
                .await?;
            if answer.is_err() {
                unchanged(
                    "UpdateContainerResources",
                    &resources,
                    &before,
                    &f.world().await,
                )?;
            }
            // Whatever was accepted, the sleeper still runs.
            let status = workload::status(&mut cri, &f.sleeper).await;
            prop_assert_eq!(
                status.state,
                ContainerState::ContainerRunning as i32,
                "the container died after UpdateContainerResources {:?}",
                resources
            );
            Ok(())
        })
    });
}
