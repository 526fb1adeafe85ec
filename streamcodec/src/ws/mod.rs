//! The Kubernetes channel protocols on WebSocket: how a message names its
//! channel ([`codec`]) and the server side of a connection that carries
//! them ([`conn`]).

pub mod codec;
pub mod conn;

pub use codec::{CLOSE_CHANNEL, Codec};
pub use conn::Connection;
