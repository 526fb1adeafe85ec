//! pier's storage: the SQLite database that is the source of truth for what
//! exists (sandboxes, containers, images, layers). Nothing here knows gRPC.

#![deny(unsafe_code)]

pub mod db;

pub use db::{
    ContainerProgress, ContainerRecord, Database, DbError, ImageRecord, LayerRecord, SandboxRecord,
    migrations::SCHEMA_VERSION,
};
