//! StopContainer, StartContainer and the restart reconciliation, over a
//! fake host in paused time: the timeouts pass at once, in order.

use std::time::Duration;

use tokio::time::Instant;

use super::{CREATED, CREATING, EXITED, RUNNING};
use crate::error::Error;
use crate::host::fake::Call;
use crate::testing::TestDaemon;

/// The signals sent to container `id`, in order.
fn signals(t: &TestDaemon, id: &str) -> Vec<String> {
    t.host
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::RuntimeKill(to, signal) if to == id => Some(signal),
            _ => None,
        })
        .collect()
}

fn deleted(t: &TestDaemon, id: &str) -> bool {
    t.host.calls().contains(&Call::RuntimeDelete(id.to_owned()))
}

#[tokio::test(start_paused = true)]
async fn stop_sends_the_stop_signal_then_sigkill_when_the_timeout_passes() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let id = t.container(&pod, "app", RUNNING, &["SIGKILL"]);

    let began = Instant::now();
    super::stop(&t.daemon, &id, 30).await.expect("stop");
    let waited = began.elapsed();

    assert_eq!(signals(&t, &id), ["SIGTERM", "SIGKILL"]);
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "SIGKILL after the 30 s timeout, not {waited:?}"
    );
    let row = t.container_row(&id).expect("row");
    assert_eq!((row.state.as_str(), row.exit_code), (EXITED, 137));
}

#[tokio::test(start_paused = true)]
async fn a_container_that_obeys_its_stop_signal_is_not_killed() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let id = t.container(&pod, "app", RUNNING, &["SIGTERM"]);

    let began = Instant::now();
    super::stop(&t.daemon, &id, 30).await.expect("stop");

    assert!(began.elapsed() < Duration::from_secs(1));
    assert_eq!(signals(&t, &id), ["SIGTERM"]);
    let row = t.container_row(&id).expect("row");
    assert_eq!((row.state.as_str(), row.exit_code), (EXITED, 143));
    super::stop(&t.daemon, &id, 30).await.expect("stop again");
    assert_eq!(
        signals(&t, &id),
        ["SIGTERM"],
        "an exited container gets no signal"
    );
}

#[tokio::test(start_paused = true)]
async fn stop_with_timeout_zero_kills_at_once() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let id = t.container(&pod, "app", RUNNING, &["SIGTERM", "SIGKILL"]);

    let began = Instant::now();
    super::stop(&t.daemon, &id, 0).await.expect("stop");

    assert_eq!(began.elapsed(), Duration::ZERO);
    assert_eq!(signals(&t, &id), ["SIGKILL"]);
    assert_eq!(t.container_row(&id).expect("row").state, EXITED);
}

#[tokio::test(start_paused = true)]
async fn a_container_that_survives_sigkill_fails_stop_as_still_running() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let id = t.container(&pod, "app", RUNNING, &[]);

    let began = Instant::now();
    let error = super::stop(&t.daemon, &id, 5)
        .await
        .expect_err("still running");
    let waited = began.elapsed();

    assert!(matches!(&error, Error::StillRunning { id: still, .. } if *still == id));
    assert_eq!(error.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(signals(&t, &id), ["SIGTERM", "SIGKILL"]);
    assert_eq!(
        waited,
        Duration::from_secs(5 + 10),
        "the timeout, then 10 s after SIGKILL"
    );
    assert_eq!(t.container_row(&id).expect("row").state, RUNNING);
}

#[tokio::test(start_paused = true)]
async fn an_exit_recorded_while_runc_start_runs_wins_and_keeps_the_start_time() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let id = t.container(&pod, "app", CREATED, &[]);

    let release = t.host.hold_start();
    let start = tokio::spawn({
        let (daemon, id) = (t.daemon.clone(), id.clone());
        async move { super::start(&daemon, &id).await }
    });
    t.host
        .called(|call| *call == Call::RuntimeStart(id.clone()))
        .await;
    // The container's process exits before `runc start` returns.
    t.host.exit(&id, 3);
    t.exit_recorded(&id).await;
    assert_eq!(t.container_row(&id).expect("row").state, EXITED);
    release.send(()).expect("start waits");
    start.await.expect("start task").expect("start");

    let row = t.container_row(&id).expect("row");
    assert_eq!(
        row.state, EXITED,
        "the exit is not overwritten with running"
    );
    assert_eq!((row.exit_code, row.reason.as_str()), (3, "Error"));
    assert!(row.started_at > 0, "the start time is kept");
    assert!(row.started_at <= row.finished_at, "{row:?}");
}

#[tokio::test(start_paused = true)]
async fn restart_reconciles_missing_extra_and_half_made_containers() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    // Still running: its monitor is alive.
    let (alive, _) = t.stored_container(&pod, "alive", RUNNING, &[]);
    // Missing: its monitor died while pierd was away, leaving no exit file.
    let (missing, runtime) = t.stored_container(&pod, "missing", RUNNING, &[]);
    t.host.end(runtime.monitor());
    // Exited while pierd was away: the monitor wrote its exit file.
    let (finished, _) = t.stored_container(&pod, "finished", RUNNING, &[]);
    t.host.exit(&finished, 0);
    // Half made: creates a crash interrupted, one with its monitor running.
    let (half, half_runtime) = t.stored_container(&pod, "half", CREATING, &["SIGKILL"]);
    let (stillborn, stillborn_runtime) = t.stored_container(&pod, "stillborn", CREATING, &[]);
    t.host.end(stillborn_runtime.monitor());
    // Extra: runtime state of a container pier no longer knows, and of one
    // recorded as exited that no exit watcher deleted.
    let (old, _) = t.stored_container(&pod, "old", EXITED, &[]);
    let unknown = "f".repeat(64);
    let runtime_root = t.daemon.config.runroot.join("runtime").join("runc");
    for id in [&unknown, &old, &alive] {
        std::fs::create_dir_all(runtime_root.join(id)).expect("runtime state dir");
    }

    super::reconcile(&t.daemon).await.expect("reconcile");
    t.exit_recorded(&missing).await;
    t.exit_recorded(&finished).await;

    let alive_row = t.container_row(&alive).expect("alive row");
    assert_eq!(alive_row.state, RUNNING, "nothing running is touched");
    assert!(signals(&t, &alive).is_empty() && !deleted(&t, &alive));

    let missing_row = t.container_row(&missing).expect("missing row");
    assert_eq!(missing_row.state, EXITED);
    assert_eq!(missing_row.reason, "MonitorDied");
    assert_eq!(missing_row.exit_code, 255, "never a guessed code");
    assert!(
        missing_row.message.contains("monitor.log"),
        "{missing_row:?}"
    );

    let finished_row = t.container_row(&finished).expect("finished row");
    assert_eq!(
        (
            finished_row.state.as_str(),
            finished_row.exit_code,
            finished_row.reason.as_str()
        ),
        (EXITED, 0, "Completed")
    );

    assert_eq!(
        signals(&t, &half),
        ["SIGKILL"],
        "its live monitor's container is killed"
    );
    assert!(signals(&t, &stillborn).is_empty());
    let mut ended: Vec<String> = t
        .host
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            Call::EndInterruptedCreate(id) => Some(id),
            _ => None,
        })
        .collect();
    ended.sort();
    let mut creates = [half.clone(), stillborn.clone()];
    creates.sort();
    assert_eq!(ended, creates, "only creates are ended");
    for (id, runtime) in [(&half, &half_runtime), (&stillborn, &stillborn_runtime)] {
        assert!(t.container_row(id).is_none(), "creating row discarded");
        assert!(!runtime.runtime_dir.exists() && !runtime.bundle.exists());
    }

    assert!(
        deleted(&t, &unknown),
        "unknown container's runtime state swept"
    );
    assert!(deleted(&t, &old), "exited container's runtime state swept");
}

#[tokio::test(start_paused = true)]
async fn restart_records_a_container_started_before_a_crash_recorded_it() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let (started, runtime) = t.stored_container(&pod, "started", CREATED, &[]);
    let (waiting, _) = t.stored_container(&pod, "waiting", CREATED, &[]);
    // runc start ran; the crash came before the row said so.
    t.daemon
        .host
        .runtime_start(runtime.oci(), &started)
        .await
        .expect("runc start");

    super::reconcile(&t.daemon).await.expect("reconcile");

    let row = t.container_row(&started).expect("started row");
    assert_eq!(row.state, RUNNING, "the runtime says it runs");
    assert!(row.started_at > 0, "{row:?}");
    let row = t.container_row(&waiting).expect("waiting row");
    assert_eq!(
        row.state, CREATED,
        "a container never started stays created"
    );
}

#[tokio::test(start_paused = true)]
async fn removed_containers_leave_no_exit_channel_behind() {
    let t = TestDaemon::new().await;
    let pod = t.pod("web").await;
    let stopped = t.container(&pod, "stopped", RUNNING, &["SIGKILL"]);
    super::stop(&t.daemon, &stopped, 0).await.expect("stop");
    super::remove(&t.daemon, &stopped).await.expect("remove");
    assert_eq!(t.daemon.exits.channels(), 0, "removal forgets the channel");
    // An exit read after the removal (the monitor of a container removed
    // before it started ends last): nothing waits on it, nothing is kept.
    let (late, runtime) = t.stored_container(&pod, "late", CREATED, &[]);
    let row = late.clone();
    t.daemon
        .db(move |db| db.delete_container(&row))
        .await
        .expect("delete the row");
    t.host.exit(&late, 137);
    super::exits::record_exit(&t.daemon, &late, &runtime)
        .await
        .expect("record the exit of a removed container");
    assert_eq!(
        t.daemon.exits.channels(),
        0,
        "an exit channel outlived its container"
    );
}
