//! A crash at every step that changes the node: for each named failpoint
//! (pierd and pier-monitor built with `--features failpoints`, as
//! contrib/test.sh does), a pierd with that point armed is sent the call
//! that reaches it, dies there as from SIGKILL, and is started again on the
//! same state. Then:
//!
//! 1. what the CRI lists matches what exists on the node: every mount,
//!    namespace pin, cgroup, process, runc container, IPAM lease and file
//!    that names a pod or container belongs to one the CRI lists, every
//!    ready pod has its namespaces, address and shm, every live container its
//!    monitor, runc state and rootfs, and no layer is left half unpacked;
//! 2. kubelet's retry of the same call with the same metadata succeeds, or
//!    fails naming the listed object in the way (which kubelet then removes:
//!    after that the retry succeeds);
//! 3. removing everything through the CRI leaves the node as it was before
//!    the case began.
//!
//! What kubelet sends on a retry (kubernetes/kubernetes,
//! pkg/kubelet/kuberuntime/kuberuntime_manager.go `computePodActions`, which
//! calls pkg/kubelet/kuberuntime/util/util.go `PodSandboxChanged`;
//! kuberuntime_sandbox.go `generatePodSandboxConfig` takes its attempt):
//! a pod with no sandbox listed gets a new RunPodSandbox with attempt 0 and
//! the same name, namespace and uid; a listed sandbox that is not ready gets
//! stopped and replaced with attempt + 1. kuberuntime_container.go
//! `startContainer`: a container is created with attempt = the restart count
//! of the container status listed under that name plus one, or 0 when none
//! is listed (and no log file of an earlier attempt exists). StopContainer,
//! StopPodSandbox and RemovePodSandbox are simply called again with the
//! same id until they succeed. So a retry with the same metadata is what
//! kubelet sends whenever the crashed call left nothing listed.

use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::consistency::{consistency, listed, monitors_of};
use pier_tests::image::ExtraFile;
use pier_tests::node_state::{NodeScope, NodeState};
use pier_tests::workload;
use pier_tests::{ImageSpec as TestImage, Pierd, PierdOptions, Registry, TestNetwork};

#[path = "crash_failpoints/scene.rs"]
mod scene;
use scene::{Scene, stop_container};

/// The call a case crashes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    RunPod,
    /// RunPodSandbox of a pod that shares its PID namespace (infra process).
    RunPodSharedPid,
    CreateContainer,
    StartContainer,
    StopContainer,
    RemoveContainer,
    StopPod,
    RemovePod,
    PullImage,
    /// StartContainer of a container that exits at once: its monitor dies
    /// around the exit file, pierd does not.
    StartShortLived,
}

/// Where the crash happens: pierd, or the container's monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dies {
    Pierd,
    Monitor,
}

struct Case {
    point: &'static str,
    call: Call,
    dies: Dies,
    /// The OCI runtime's `create` is slow (see `slow_create_runtime`): it
    /// still runs when pierd starts again, as on a loaded node (CI saw a
    /// `runc create` write mount points into the unmounted rootfs).
    slow_create: bool,
}

const fn case(point: &'static str, call: Call) -> Case {
    Case {
        point,
        call,
        dies: Dies::Pierd,
        slow_create: false,
    }
}

const fn monitor_case(point: &'static str, call: Call) -> Case {
    Case {
        point,
        call,
        dies: Dies::Monitor,
        slow_create: false,
    }
}

const fn slow_create_case(point: &'static str) -> Case {
    Case {
        slow_create: true,
        ..case(point, Call::CreateContainer)
    }
}

impl Case {
    /// Its name in failures and in the names of what it makes.
    fn label(&self) -> String {
        if self.slow_create {
            format!("{}+slow-create", self.point)
        } else {
            self.point.to_owned()
        }
    }
}

const CASES: &[Case] = &[
    case("run_pod.row_inserted", Call::RunPod),
    case("run_pod.namespaces_pinned", Call::RunPod),
    case("run_pod.infra_started", Call::RunPodSharedPid),
    case("run_pod.cni_added", Call::RunPod),
    case("run_pod.row_ready", Call::RunPod),
    case("create_container.row_inserted", Call::CreateContainer),
    case("create_container.rootfs_mounted", Call::CreateContainer),
    case("create_container.bundle_written", Call::CreateContainer),
    case("create_container.monitor_started", Call::CreateContainer),
    slow_create_case("create_container.monitor_started"),
    case("create_container.runc_created", Call::CreateContainer),
    case("create_container.row_created", Call::CreateContainer),
    case("start_container.runc_started", Call::StartContainer),
    case("start_container.row_running", Call::StartContainer),
    case("stop_container.killed", Call::StopContainer),
    case("remove_container.runtime_deleted", Call::RemoveContainer),
    case("remove_container.files_removed", Call::RemoveContainer),
    case("remove_container.row_deleted", Call::RemoveContainer),
    case("pod.cni_deleted", Call::StopPod),
    case("pod.namespaces_unpinned", Call::StopPod),
    case("stop_pod.stopped", Call::StopPod),
    case("remove_pod.dir_removed", Call::RemovePod),
    case("remove_pod.row_deleted", Call::RemovePod),
    case("pull.layer_unpacked", Call::PullImage),
    case("pull.layer_renamed", Call::PullImage),
    case("pull.image_row", Call::PullImage),
    monitor_case("monitor.start_gate_opened", Call::CreateContainer),
    monitor_case("monitor.before_exit_file", Call::StartShortLived),
    monitor_case("monitor.exit_file_written", Call::StartShortLived),
];

/// Cases that run at once: each has its own pierd, network and cgroup
/// parent, so they only share the CPU.
const PARALLEL: usize = 4;

/// Images every case uses: busybox (pulled before the case) and one with a
/// layer of its own (pulled by the pull cases).
#[derive(Clone)]
struct Images {
    registry: String,
    busybox: String,
    extra: String,
}

#[test]
fn a_crash_at_any_step_leaves_nothing_kubelet_cannot_see_or_remove() {
    let only = std::env::var("PIER_CRASH_CASES").ok();
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|p| p == c.point))
        })
        .collect();
    let registry = Registry::start();
    let images = runtime().block_on(async {
        let busybox = TestImage::default()
            .push(&registry, "tests/busybox:1")
            .await;
        let extra = TestImage {
            files: vec![ExtraFile {
                path: "/crash-marker".into(),
                contents: b"a layer only this image has\n".to_vec(),
                mode: 0o644,
            }],
            ..Default::default()
        };
        let extra = extra.push(&registry, "tests/crash-extra:1").await;
        Images {
            registry: registry.host(),
            busybox: busybox.reference,
            extra: extra.reference,
        }
    });
    let mut failures = Vec::new();
    for batch in cases.chunks(PARALLEL) {
        std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|case| {
                    let images = images.clone();
                    let thread = scope.spawn(move || runtime().block_on(run_case(case, &images)));
                    (case.label(), thread)
                })
                .collect();
            for (point, thread) in running {
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(problems)) => {
                        failures.push(format!("{point}:\n  {}", problems.join("\n  ")))
                    }
                    Err(panic) => {
                        failures.push(format!("{point}: panicked: {}", panic_text(&panic)))
                    }
                }
            }
        });
    }
    assert!(
        failures.is_empty(),
        "{} of {} failpoints failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

async fn run_case(case: &Case, images: &Images) -> Result<(), Vec<String>> {
    // Made first so that it is dropped last: pierd's drop removes what a
    // failed case left in the cgroup parent before the parent goes.
    let mut scene = Scene::new(case, images);
    let armed = format!("{}=return", case.point);
    let slow_runtime = case.slow_create.then(slow_create_runtime);
    let config = match &slow_runtime {
        Some((_, wrapper)) => format!(
            "[runtime.handlers.runc]\npath = \"{}\"\n",
            wrapper.display()
        ),
        None => String::new(),
    };
    let mut pierd = Pierd::start_with(PierdOptions {
        network: Some(TestNetwork::new()),
        args: vec!["--insecure-registry".into(), images.registry.clone()],
        env: vec![("FAILPOINTS".into(), armed)],
        config,
        ..Default::default()
    })
    .await;
    assert!(
        pierd.log().contains("failpoints compiled in"),
        "this pierd has no failpoints: build it with \
         `cargo build --workspace --bins --features pierd/failpoints,pier-monitor/failpoints` \
         (contrib/test.sh does)"
    );
    // A pull case pulls nothing first: its failpoint would fire there.
    if case.call != Call::PullImage {
        workload::pull(&pierd, &images.busybox).await;
    }
    let scope = |pierd: &Pierd, scene: &Scene| NodeScope {
        dir: pierd.dir().to_owned(),
        runc_root: pierd.runroot().join("runtime/runc"),
        cgroup_parent: Some(scene.cgroup.0.trim_start_matches('/').to_owned()),
        pierd_pid: pierd.pid(),
    };
    let before = NodeState::capture(&scope(&pierd, &scene));

    let mut cri = pierd.cri().await.runtime;
    scene.prepare(case.call, &mut cri).await;
    let answer = scene.call(case.call, &pierd, images).await;
    match case.dies {
        Dies::Pierd => {
            let status = pierd.wait_exit(Duration::from_secs(60));
            let status = status.unwrap_or_else(|| {
                panic!(
                    "pierd did not crash at {} (the call answered {answer:?}):\n{}",
                    case.point,
                    pierd.log()
                )
            });
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "pierd ended with {status}, not SIGKILL"
            );
            assert!(
                answer.is_err(),
                "the call answered {answer:?} although pierd crashed in it"
            );
            let line = format!("failpoint=\"{}\"", case.point);
            let log = pierd.log();
            assert!(
                log.contains(&line) || log.contains(&format!("failpoint={}", case.point)),
                "pierd died, but not at {}:\n{log}",
                case.point
            );
        }
        Dies::Monitor => {
            monitor_crashed(case, &mut scene, &pierd, answer).await;
            pierd.kill();
        }
    }
    drop(cri);
    pierd.restart_with(|options| options.env.clear()).await;
    let mut problems = Vec::new();

    // 1. What the CRI lists is what exists.
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        last = consistency(&pierd, &scope(&pierd, &scene)).await;
        if last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    problems.extend(last.into_iter().map(|p| format!("after restart: {p}")));
    if case.call == Call::StartShortLived {
        problems.extend(recorded_exit(case, &scene, &pierd).await);
    }

    // 2. kubelet's retry.
    if let Err(e) = retry(case, &mut scene, &pierd, images).await {
        problems.push(format!("retry: {e}"));
    }

    // 3. Removal through the CRI restores the node.
    remove_everything(&pierd, images, case.call == Call::PullImage).await;
    let after = NodeState::settle_to(&scope(&pierd, &scene), &before, Duration::from_secs(20));
    problems.extend(
        after
            .diff(&before)
            .into_iter()
            .map(|d| format!("after removal: {d}")),
    );
    if !problems.is_empty() {
        problems.push(format!("---- pierd log ----\n{}", pierd.log()));
        return Err(problems);
    }
    Ok(())
}

/// A runc wrapper slow between checking the container's rootfs and writing
/// into it, as runc is under load (it validates the rootfs, then its init
/// makes the mount points): its `create` finds the rootfs, waits two
/// seconds, makes `dev` in it, then runs runc's. A restarted pierd that
/// removed the rootfs meanwhile finds a `dev` it did not make, unless it
/// ended the create first. In a temp dir that lives as long as the case.
fn slow_create_runtime() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let wrapper = dir.path().join("slow-create-runc");
    let script = r#"#!/bin/sh
case " $* " in *" create "*)
    prev=
    for arg; do [ "$prev" = --bundle ] && bundle=$arg; prev=$arg; done
    rootfs=$(sed -n 's/.*"root":{"path":"\([^"]*\)".*/\1/p' "$bundle/config.json")
    [ -d "$rootfs" ] || { echo "slow-create-runc: no rootfs in $bundle" >&2; exit 1; }
    sleep 2
    mkdir -p "$rootfs/dev"
esac
exec runc "$@"
"#;
    std::fs::write(&wrapper, script).expect("write the runc wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the runc wrapper");
    (dir, wrapper)
}

/// Checks the monitor died at its failpoint and what the call said of it.
async fn monitor_crashed(
    case: &Case,
    scene: &mut Scene,
    pierd: &Pierd,
    answer: Result<(), tonic::Status>,
) {
    match case.call {
        Call::CreateContainer => {
            let status = answer.expect_err("CreateContainer succeeded with no monitor");
            assert!(
                status.message().contains("monitor"),
                "CreateContainer's error does not name the monitor: {status:?}"
            );
        }
        _ => {
            answer.unwrap_or_else(|e| panic!("StartContainer: {e}"));
            // The container exits at once; its monitor dies at the exit file.
            let id = scene.container_id.clone().expect("container id");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let monitors = monitors_of(pierd, &id);
                if monitors == 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "the monitor of {id} still runs");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The exit of a container whose monitor died around its exit file: the
/// real code where the file was written, else `MonitorDied` (255).
async fn recorded_exit(case: &Case, scene: &Scene, pierd: &Pierd) -> Option<String> {
    let id = scene.container_id.as_deref().expect("container id");
    let mut cri = pierd.cri().await.runtime;
    let status = workload::wait_exited(&mut cri, id, Duration::from_secs(20)).await;
    let want = match case.point {
        "monitor.exit_file_written" => (3, "Error"),
        _ => (255, "MonitorDied"),
    };
    let got = (status.exit_code, status.reason.as_str());
    (got != want).then(|| format!("container {id} exited {got:?}, expected {want:?}"))
}

/// Check 2: the same call again, as kubelet sends it. An error must name a
/// listed object; once kubelet has removed that object, the call succeeds.
async fn retry(
    case: &Case,
    scene: &mut Scene,
    pierd: &Pierd,
    images: &Images,
) -> Result<(), String> {
    let call = match case.call {
        // The container exited: kubelet starts a new one, which is a create.
        Call::StartShortLived => return Ok(()),
        call => call,
    };
    let Err(first) = scene.call(call, pierd, images).await else {
        return Ok(());
    };
    let mut cri = pierd.cri().await.runtime;
    let listed = listed(&mut cri).await;
    let message = first.message();
    // A container's error names its pod too: the container is what is in
    // the way.
    let in_the_way = listed
        .containers
        .keys()
        .chain(listed.pods.keys())
        .find(|id| message.contains(id.as_str()))
        .cloned();
    let Some(holder) = in_the_way else {
        return Err(format!("failed naming no listed object: {first:?}"));
    };
    if call == Call::StartContainer {
        // The container runs already: nothing to redo, and nothing to remove.
        let status = workload::status(&mut cri, &holder).await;
        if status.state == ContainerState::ContainerRunning as i32 {
            return Ok(());
        }
        return Err(format!(
            "{first:?}, and the container is {:?}",
            status.state
        ));
    }
    if listed.pods.contains_key(&holder) {
        workload::remove_pod(&mut cri, &holder).await;
    } else {
        stop_container(&mut cri, &holder)
            .await
            .map_err(|e| format!("stop {holder}: {e}"))?;
        cri.remove_container(RemoveContainerRequest {
            container_id: holder.clone(),
        })
        .await
        .map_err(|e| format!("remove {holder}: {e}"))?;
    }
    scene
        .call(call, pierd, images)
        .await
        .map_err(|e| format!("{first:?}; after removing {holder}: {e:?}"))
}

/// Check 3's removal: every pod (with its containers), and the image the
/// case pulled.
async fn remove_everything(pierd: &Pierd, images: &Images, pulled: bool) {
    let mut cri = pierd.cri().await;
    let listed = listed(&mut cri.runtime).await;
    for id in listed.containers.keys() {
        let _ = stop_container(&mut cri.runtime, id).await;
        cri.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
    }
    for id in listed.pods.keys() {
        workload::remove_pod(&mut cri.runtime, id).await;
    }
    if pulled {
        cri.images
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: images.extra.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveImage: {e}"));
    }
}
