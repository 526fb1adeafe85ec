//! Named crash points for the crash-consistency tests (docs/reliability.md),
//! the monitor's copy of pierd's (`pier_storage::failpoint`): only in a
//! build with the `failpoints` feature, armed through the environment
//! pierd passes on (`FAILPOINTS=<name>=return`). An armed point kills the
//! monitor with SIGKILL where it sits, as a crash would.

/// Crashes the monitor here when the point `name` is armed.
#[cfg(feature = "failpoints")]
pub fn crash_point(name: &str) {
    if fail::eval(name, |_| ()).is_some() {
        crate::diag!("failpoint {name} armed: crashing here");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Crashes the monitor here when the point `name` is armed (never: this
/// build has no failpoints).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Arms the points `FAILPOINTS` names for as long as the guard lives.
#[cfg(feature = "failpoints")]
pub fn arm_from_env() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}
