//! Fixtures shared by pier's end-to-end tests: a local registry, OCI images
//! built from `/bin/busybox`, a private `pierd`, and a connected CRI client.
//! Every fixture cleans up on drop, also when the test panics.

pub mod bad_input;
pub mod bins;
pub mod cgroups;
pub mod client;
pub mod consistency;
pub mod cri_tools;
pub mod critest_mirror;
pub mod image;
pub mod load;
pub mod native;
pub mod node_state;
pub mod otlp;
pub mod pierd;
pub mod prometheus;
pub mod registry;
pub mod streams;
pub mod tmpfs;
pub mod token_server;
pub mod workload;

pub use client::Cri;
pub use image::{ImageSpec, Layer, PushedImage};
pub use pierd::{Pierd, PierdOptions, TestNetwork};
pub use registry::{Access, Registry};
pub use tmpfs::Tmpfs;

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}
