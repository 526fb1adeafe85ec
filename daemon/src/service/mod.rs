//! The CRI services. Each RPC returns `crate::error::Error` internally; the
//! conversion to a gRPC status happens once, in `error.rs`.

mod image;
mod runtime;

pub use image::{ImageService, image_store_config};
pub use runtime::RuntimeService;

#[cfg(test)]
mod tests;

use tonic::Status;

use crate::error::Error;

/// The answer of every RPC pier does not serve yet: `UNIMPLEMENTED`, naming it.
fn unimplemented<T>(rpc: &'static str) -> Result<T, Status> {
    Err(Error::Unimplemented(rpc).into())
}
