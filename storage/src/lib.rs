//! pier's storage: the SQLite database that is the source of truth for what
//! exists (sandboxes, containers, images, layers), and the image store:
//! pulling from registries, the blob and layer store, safe layer unpacking,
//! and container root filesystems. Nothing here knows gRPC.

#![deny(unsafe_code)]

mod auth;
mod blobs;
mod config;
pub mod db;
pub mod digest;
mod endpoint;
mod error;
pub mod failpoint;
pub mod fsops;
mod gc;
pub mod idmap;
mod image;
mod layers;
mod layout;
mod manifest;
mod overlay;
mod reference;
mod registry;
mod rootfs;
mod store;
pub mod time;
pub mod unpack;
mod usage;

pub use auth::Auth;
pub use config::ImageConfig;
pub use db::shared::{SharedDatabase, with_db};
pub use db::{
    BUSY_TIMEOUT, ContainerProgress, ContainerRecord, Database, DbError, ImageRecord, LayerRecord,
    SandboxRecord, migrations::SCHEMA_VERSION,
};
pub use endpoint::RegistryConfig;
pub use error::{ErrorKind, ImageError, PullError};
pub use image::{FsInfo, Image, Usage};
pub use layout::ContainerDir;
pub use manifest::Platform;
pub use reference::{ImageRef, ImageSpec};
pub use rootfs::LayerView;
pub use store::{ImageStore, StoreConfig};
pub use usage::tree_usage;
