//! pierd: the pier daemon. Serves CRI v1 over a Unix socket.

#![deny(unsafe_code)]

pub mod authority;
pub mod binaries;
pub mod check;
pub mod cli;
pub mod config;
pub mod container;
pub mod daemon;
pub mod error;
pub mod events;
pub mod features;
/// Crash points for the crash tests, shared with the storage crate.
pub use pier_storage::failpoint;
pub mod host;
pub mod ids;
pub mod locks;
pub mod logging;
#[allow(unsafe_code)]
pub mod memory;
pub mod metrics;
pub mod network;
pub mod pinns;
pub mod pod_metrics;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod socket;
pub mod status;
pub mod streaming;
pub mod telemetry;
#[cfg(test)]
pub mod testing;
pub mod time;
pub mod userns;
pub mod validate;
