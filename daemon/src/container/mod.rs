//! Containers: OCI spec generation now; lifecycle lands with the monitor and
//! image store (issues 3, 4 and 5).

pub mod launch;
pub mod spec;
