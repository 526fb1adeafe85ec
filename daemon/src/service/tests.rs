//! The order of a pod's teardown, over a fake host: containers first, then
//! the network, then the namespaces and shm, the rows last.

use std::sync::{Arc, Mutex};

use crate::container::{CREATED, EXITED, RUNNING};
use crate::host::fake::Call;
use crate::sandbox::{NOT_READY, READY};
use crate::testing::TestDaemon;

use super::runtime::{remove_pod, stop_pod};

/// A host call of the sandbox's own teardown, with the rows as they were
/// when it was made: the sandbox's state and each container's (`None`: gone).
#[derive(Debug, Clone)]
struct Seen {
    call: Call,
    sandbox: Option<String>,
    containers: Vec<Option<String>>,
}

/// Records, as each host call of the sandbox's teardown is made, what the
/// database holds for the pod then.
fn watch_teardown(t: &TestDaemon, pod: &str, containers: &[&str]) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (db, pod) = (Arc::clone(&t.db), pod.to_owned());
    let containers: Vec<String> = containers.iter().map(|c| (*c).to_owned()).collect();
    let log = Arc::clone(&seen);
    t.host.observe(move |call| {
        let sandbox_call = matches!(
            call,
            Call::NetworkDel(_) | Call::UnpinNamespace(_) | Call::UnmountShm(_) | Call::Kill(_)
        );
        if !sandbox_call {
            return;
        }
        let db = db.lock().unwrap_or_else(|p| p.into_inner());
        let entry = Seen {
            call: call.clone(),
            sandbox: db.sandbox(&pod).expect("read sandbox").map(|s| s.state),
            containers: containers
                .iter()
                .map(|c| db.container(c).expect("read container").map(|c| c.state))
                .collect(),
        };
        log.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    });
    seen
}

/// Where the calls of the sandbox's teardown stand among all host calls.
fn position(t: &TestDaemon, wanted: impl Fn(&Call) -> bool) -> Vec<usize> {
    let calls = t.host.calls();
    (0..calls.len()).filter(|&i| wanted(&calls[i])).collect()
}

/// Checks the release order the host saw: network, then the infra process
/// and the namespace pins, then shm; and that the containers' last signal
/// came before all of them.
fn assert_released_after_containers(t: &TestDaemon, pod: &str) {
    let kills = position(t, |c| matches!(c, Call::RuntimeKill(..)));
    let network = position(t, |c| *c == Call::NetworkDel(pod.to_owned()));
    let unpins = position(t, |c| matches!(c, Call::UnpinNamespace(_)));
    let shm = position(t, |c| matches!(c, Call::UnmountShm(_)));
    assert_eq!(kills.len(), 2, "{:?}", t.host.calls());
    assert_eq!(network.len(), 1, "{:?}", t.host.calls());
    assert_eq!(
        unpins.len(),
        4,
        "net, ipc, uts and pid: {:?}",
        t.host.calls()
    );
    assert_eq!(shm.len(), 1, "{:?}", t.host.calls());
    assert!(kills[1] < network[0], "containers stopped before CNI DEL");
    assert!(
        network[0] < unpins[0],
        "CNI DEL before the netns is unpinned"
    );
    assert!(unpins[3] < shm[0]);
}

#[tokio::test(start_paused = true)]
async fn stop_pod_stops_containers_before_the_network_and_namespaces_go() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let a = t.container(&pod, "a", RUNNING, &["SIGKILL"]);
    let b = t.container(&pod, "b", RUNNING, &["SIGKILL"]);
    let seen = watch_teardown(&t, &pod, &[&a, &b]);
    assert_eq!(t.sandbox_row(&pod).expect("row").state, READY);

    stop_pod(&t.daemon, &pod).await.expect("stop pod");

    assert_released_after_containers(&t, &pod);
    let seen = seen.lock().expect("seen").clone();
    assert!(seen.iter().any(|s| s.call == Call::NetworkDel(pod.clone())));
    for step in &seen {
        let exited = Some(EXITED.to_owned());
        assert_eq!(step.containers, [exited.clone(), exited], "{step:?}");
        // Not ready before anything is released: a crash half way must not
        // leave a pod listed ready whose network is gone.
        assert_eq!(
            step.sandbox.as_deref(),
            Some(NOT_READY),
            "state changes first: {step:?}"
        );
    }
    assert_eq!(t.sandbox_row(&pod).expect("row stays").state, NOT_READY);
    stop_pod(&t.daemon, &pod).await.expect("stop is idempotent");
}

#[tokio::test(start_paused = true)]
async fn remove_pod_removes_containers_first_and_deletes_the_sandbox_row_last() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let a = t.container(&pod, "a", RUNNING, &["SIGKILL"]);
    let b = t.container(&pod, "b", CREATED, &["SIGKILL"]);
    let seen = watch_teardown(&t, &pod, &[&a, &b]);

    remove_pod(&t.daemon, &pod).await.expect("remove pod");

    assert_released_after_containers(&t, &pod);
    let seen = seen.lock().expect("seen").clone();
    assert!(seen.iter().any(|s| s.call == Call::NetworkDel(pod.clone())));
    for step in &seen {
        assert_eq!(
            step.containers,
            [None, None],
            "containers removed first: {step:?}"
        );
        assert!(
            step.sandbox.is_some(),
            "the sandbox row goes last: {step:?}"
        );
    }
    assert!(t.sandbox_row(&pod).is_none());
    assert!(t.container_row(&a).is_none() && t.container_row(&b).is_none());
    remove_pod(&t.daemon, &pod)
        .await
        .expect("remove is idempotent");
}
