//! ExecSync that does not end in a plain exit code: a timeout is
//! DEADLINE_EXCEEDED and leaves nothing of the command running; a process
//! that cannot start is NOT_FOUND or FAILED_PRECONDITION naming the cause,
//! and the container's next exec works as before. Each holds for the
//! monitor's own (native) exec and for `runc exec`.

use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use pier_tests::workload::*;
use tonic::Code;

async fn exec_err(cri: &mut Runtime, id: &str, argv: &[&str], timeout: i64) -> tonic::Status {
    let out = cri
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: argv.iter().map(|s| (*s).to_owned()).collect(),
            timeout,
        })
        .await;
    match out {
        Ok(r) => panic!("{argv:?} succeeded: {:?}", r.into_inner()),
        Err(status) => status,
    }
}

/// No `sleep` runs in the container (its init is `top`).
async fn assert_no_sleep(cri: &mut Runtime, id: &str) {
    let out = sh_ok(cri, id, "pidof sleep || true").await;
    assert_eq!(out.trim(), "", "the timed-out exec left processes: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_exec_is_deadline_exceeded_and_its_children_are_killed() {
    timed_out_exec_is_deadline_exceeded(Node::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_runc_exec_is_deadline_exceeded_and_its_children_are_killed() {
    timed_out_exec_is_deadline_exceeded(runc_exec_node().await).await;
}

async fn timed_out_exec_is_deadline_exceeded(mut node: Node) {
    let pod = node.pod("exec-deadline");
    let pod_id = node.run_pod(&pod).await;
    let config = node.container("deadline", &["top"]);
    let id = node.run(&pod_id, &pod, config).await;

    let began = Instant::now();
    // The shell's background child must die with it.
    let status = exec_err(
        &mut node.cri,
        &id,
        &["sh", "-c", "sleep 4321 & sleep 4322; echo never"],
        1,
    )
    .await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("timed out"), "{status:?}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "a 1 s timeout took {:?}",
        began.elapsed()
    );
    assert_no_sleep(&mut node.cri, &id).await;

    // A command that exits on its own within the timeout is a plain result.
    let out = exec(&mut node.cri, &id, &["sh", "-c", "exit 3"], 5).await;
    assert_eq!(out.exit_code, 3);
    remove_pod(&mut node.cri, &pod_id).await;
}

/// A node whose pierd runs every exec through `runc exec`.
async fn runc_exec_node() -> Node {
    let registry = pier_tests::Registry::start();
    let (pierd, image) = setup_with(&registry, "[exec]\nnative = false\n".into()).await;
    Node {
        cri: pierd.cri().await.runtime,
        image,
        logs: tempfile::tempdir().expect("tempdir"),
        pierd,
        registry,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_of_a_missing_binary_is_not_found() {
    missing_binary_is_not_found(Node::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_exec_of_a_missing_binary_is_not_found() {
    missing_binary_is_not_found(runc_exec_node().await).await;
}

async fn missing_binary_is_not_found(mut node: Node) {
    let pod = node.pod("exec-missing");
    let pod_id = node.run_pod(&pod).await;
    let config = node.container("missing", &["top"]);
    let id = node.run(&pod_id, &pod, config).await;

    let status = exec_err(&mut node.cri, &id, &["/no/such/binary", "x"], 10).await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains("/no/such/binary"),
        "the message does not name the binary: {status:?}"
    );
    let status = exec_err(&mut node.cri, &id, &["no-such-command"], 10).await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("no-such-command"), "{status:?}");

    // The container is unharmed and the next exec works.
    let out = exec(&mut node.cri, &id, &["echo", "-n", "ok"], 10).await;
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"ok"[..]));
    remove_pod(&mut node.cri, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_in_a_removed_working_dir_is_failed_precondition() {
    removed_working_dir_is_failed_precondition(Node::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_exec_in_a_removed_working_dir_is_failed_precondition() {
    removed_working_dir_is_failed_precondition(runc_exec_node().await).await;
}

async fn removed_working_dir_is_failed_precondition(mut node: Node) {
    let pod = node.pod("exec-cwd");
    let pod_id = node.run_pod(&pod).await;
    let mut config = node.container("cwd", &["top"]);
    config.working_dir = "/wd".into();
    let id = node.run(&pod_id, &pod, config).await;

    sh_ok(&mut node.cri, &id, "cd / && rmdir /wd").await;
    let status = exec_err(&mut node.cri, &id, &["true"], 10).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("/wd"), "{status:?}");
    remove_pod(&mut node.cri, &pod_id).await;
}
