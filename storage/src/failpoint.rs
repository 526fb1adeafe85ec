//! Named crash points for the crash-consistency tests (docs/reliability.md).
//! They exist only in a build with the `failpoints` feature; elsewhere
//! [`crash_point`] is an empty inline function. A point armed through the
//! environment (`FAILPOINTS=<name>=return`, the `fail` crate's syntax) kills
//! the process with SIGKILL where it sits, as a crash would: no destructor
//! runs, no reply is sent, no buffer is flushed. pierd shares these with
//! the storage crate; the monitor has its own copy.

/// Crashes the process here when the point `name` is armed.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        tracing::error!(failpoint = name, "failpoint armed: crashing here");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Crashes the process here when the point `name` is armed (never: this
/// build has no failpoints).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Arms the points `FAILPOINTS` names, for as long as the returned guard
/// lives (the whole process), and logs that this build has failpoints,
/// which is how the crash tests know the binary they run can crash.
#[cfg(feature = "failpoints")]
pub fn arm_from_env() -> fail::FailScenario<'static> {
    let scenario = fail::FailScenario::setup();
    tracing::info!(armed = ?fail::list(), "failpoints compiled in");
    scenario
}
