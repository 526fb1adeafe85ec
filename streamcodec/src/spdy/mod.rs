//! SPDY/3.1, as far as Kubernetes streaming uses it: the frame codec, the
//! zlib header blocks and the server side of a connection.

pub mod conn;
mod dictionary;
pub mod frame;
pub mod headers;

pub use conn::{Closed, ConnError, Connection, Stream, StreamWriter};
pub use headers::Headers;
