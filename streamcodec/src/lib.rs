//! The wire side of pier's streaming server, on its own: SPDY/3.1 as
//! Kubernetes streaming uses it ([`spdy`]) and the Kubernetes channel
//! protocols on WebSocket ([`ws`]). Nothing here knows about containers,
//! tokens or the daemon: a connection is handed an upgraded socket and an
//! [`Activity`] to report traffic to, and yields streams or channels.

#![deny(unsafe_code)]

mod activity;
pub mod spdy;
pub mod ws;

pub use activity::Activity;
