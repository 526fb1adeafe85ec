//! Inputs for the bad-input property tests (tests/tests/bad_input.rs):
//! random and boundary values, changes to valid pod and container configs,
//! calls naming what does not exist, and snapshots of what a refused call
//! must not change.

pub mod calls;
pub mod container;
pub mod pod;
pub mod values;
pub mod world;
