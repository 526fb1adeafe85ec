//! `pierd check`: the database, the run root and the kernel agree on a
//! clean node, beside a live pierd; each disagreement a test makes is
//! reported on a line of its own that names it.

use std::time::Duration;

use nix::mount::{MsFlags, mount};
use pier_tests::workload::{self, Node};

fn check(node: &Node) -> (i32, String) {
    let out = node.pierd.subcommand(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

/// The monitor's pid of a container, from the file it keeps in its run dir.
fn monitor_pid(node: &Node, id: &str) -> i32 {
    let file = node
        .pierd
        .runroot()
        .join("containers")
        .join(id)
        .join(pier_proto::files::MONITOR_PID);
    let text = std::fs::read_to_string(&file).expect("monitor pid file");
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a pid")
}

#[tokio::test(flavor = "multi_thread")]
async fn check_agrees_on_a_clean_node_and_names_each_disagreement() {
    let mut node = Node::start().await;
    let (code, out) = check(&node);
    assert_eq!(code, 0, "an empty node agrees: {out}");

    let pod = node.pod("checked");
    let pod_id = node.run_pod(&pod).await;
    let sleeper = node.container("sleeper", &["/bin/sleep", "3600"]);
    let sleeper = node.run(&pod_id, &pod, sleeper).await;
    let other = node.container("other", &["/bin/sleep", "3600"]);
    let other = node.run(&pod_id, &pod, other).await;
    // Beside the live pierd, several times: read-only, and it agrees.
    for _ in 0..3 {
        let (code, out) = check(&node);
        assert_eq!(code, 0, "a running pod agrees: {out}");
        assert!(out.contains("1 sandboxes, 2 containers"), "{out}");
    }

    // Disagreements made behind a stopped pierd's back, which would
    // otherwise notice a dead monitor and record the exit.
    node.pierd.terminate();
    let monitor = monitor_pid(&node, &sleeper);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the monitor");
    let other_run_dir = node.pierd.runroot().join("containers").join(&other);
    let other_monitor = monitor_pid(&node, &other);
    // The run dir goes, with the monitor that lived in it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(other_monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the other monitor");
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_dir_all(&other_run_dir).expect("remove a run dir");
    let leaked = node.pierd.runroot().join("mounts").join("leaked");
    std::fs::create_dir_all(&leaked).expect("mkdir");
    mount(
        Some("tmpfs"),
        &leaked,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k"),
    )
    .expect("leak a mount");

    let (code, out) = check(&node);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let has = |words: &[&str]| lines.iter().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(
        has(&[&sleeper, &format!("monitor (pid {monitor}) is gone")]),
        "{out}"
    );
    assert!(
        has(&[
            &other,
            "run dir",
            &other_run_dir.display().to_string(),
            "missing"
        ]),
        "{out}"
    );
    assert!(
        has(&["mount", &leaked.display().to_string(), "belongs to no"]),
        "{out}"
    );
    assert!(out.contains("disagree"), "{out}");

    // Put back what the test broke, and let pierd remove the pod.
    let _ = nix::mount::umount2(&leaked, nix::mount::MntFlags::MNT_DETACH);
    node.pierd.restart().await;
    workload::remove_pod(&mut node.pierd.cri().await.runtime, &pod_id).await;
    // The runtime deletes of the containers whose monitors died run in the
    // background, at a lower priority: the node agrees once they are done.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out) = check(&node);
        if code == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node agrees again after the pod is removed: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
