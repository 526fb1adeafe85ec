//! The daemon ↔ monitor wire contract. Messages are length-delimited prost
//! messages (`prost::Message::encode_length_delimited`).
//!
//! Besides the generated types this crate holds everything both sides must
//! agree on byte for byte: the exit file format ([`exit_file`]), the log
//! counters ([`log_stats`]), the attach framing ([`attach`]), the message
//! framing ([`framing`]), the monitor's command line ([`args`]) and file
//! names ([`files`]), the reading of a process's identity ([`proc_stat`])
//! and a blocking client for the control socket ([`client`]), so the daemon
//! never reimplements any of it.

#![deny(unsafe_code)]

pub mod args;
pub mod attach;
pub mod client;
pub mod exit_file;
pub mod files;
pub mod framing;
pub mod log_stats;
pub mod proc_stat;
pub mod socket_path;

/// Generated from `monitor.proto`.
pub mod monitor {
    include!(concat!(env!("OUT_DIR"), "/pier.monitor.v1.rs"));
}

/// File name of the control socket inside the monitor's runtime dir.
pub use files::CONTROL_SOCKET;

/// Cap on exec output (stdout and stderr together); CVE-2022-1708 is what
/// happens without one.
pub const EXEC_OUTPUT_MAX: usize = 16 << 20;

/// Largest control request the monitor accepts; bigger is garbage.
pub const REQUEST_MAX: usize = 64 << 10;
