//! The load mix of `pier-load-bench`, small: clients in parallel making
//! mixed calls must finish (no deadlock), never get INTERNAL or UNKNOWN
//! (nor any other refusal), and leave nothing behind once they removed
//! their pods.

use std::time::Duration;

use pier_tests::load::{self, LoadOptions};
use pier_tests::workload::{pull, setup};
use pier_tests::{ImageSpec, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_calls_from_parallel_clients_end_cleanly() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    // A second image for PullImage to draw from, besides the busybox one.
    let other = ImageSpec::default()
        .file("/load", "other", 0o644)
        .push(&registry, "tests/load-other:1")
        .await
        .reference;
    pull(&pierd, &other).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let options = LoadOptions {
        clients: 4,
        ops: 100,
        seed: 13,
        image: image.clone(),
        pulls: vec![image, other],
        log_dir: logs.path().to_owned(),
        deadline: Duration::from_secs(300),
    };
    let dir = pierd.root().parent().expect("pierd dir").to_owned();
    let pid = pierd.pid().expect("pierd runs");
    let report = load::run(pierd.socket(), &dir, pid, &options).await;

    assert!(
        report.stuck.is_empty(),
        "calls still open after {:?}: {:?}",
        options.deadline,
        report.stuck
    );
    let internal = report.internal_errors();
    assert!(
        internal.is_empty(),
        "INTERNAL or UNKNOWN answers: {internal:?}\n{:#?}",
        report.calls
    );
    // Every call is drawn for the client's own objects in a state it
    // applies to, so any refusal at all is the runtime's fault.
    let refused: Vec<_> = report
        .calls
        .iter()
        .filter(|(_, figures)| !figures.errors.is_empty())
        .map(|(rpc, figures)| (rpc, &figures.errors, &figures.messages))
        .collect();
    assert!(refused.is_empty(), "calls refused: {refused:#?}");
    assert!(report.leaks.is_empty(), "left behind: {:#?}", report.leaks);
    // The clients' own clean-up adds calls to the mix; none may be missing.
    assert!(
        report.total_calls() >= options.ops,
        "{} calls made of {}",
        report.total_calls(),
        options.ops
    );
    for rpc in [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "ExecSync",
    ] {
        let made = report.calls.get(rpc).map_or(0, |c| c.times.len());
        assert!(made > 0, "the mix made no {rpc}: {:#?}", report.calls);
    }
}
