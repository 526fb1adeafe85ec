//! The daemon's error types, and the one place they become gRPC statuses.

use std::io;
use std::path::PathBuf;

use pier_storage::{DbError, ErrorKind};
use tonic::Status;

use crate::network::cni::CniError;
use crate::network::conflist::ConflistError;

/// Why a CRI request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not implemented by pier yet")]
    Unimplemented(&'static str),
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{what}: {reason}")]
    Setup { what: String, reason: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{command} failed: {message}")]
    Runtime { command: String, message: String },
    #[error(transparent)]
    Image(#[from] pier_storage::ImageError),
    #[error("start container monitor: {0}")]
    Launch(#[from] crate::container::launch::LaunchError),
    #[error("pod network: {0}")]
    Cni(#[from] CniError),
    #[error("pod network not ready: {0}")]
    NetworkNotReady(#[from] ConflistError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        let status = match &error {
            Error::Unimplemented(_) => Status::unimplemented(message),
            Error::InvalidArgument { .. } => Status::invalid_argument(message),
            Error::NotFound { .. } | Error::Db(DbError::NotFound { .. }) => {
                Status::not_found(message)
            }
            Error::NetworkNotReady(_) | Error::FailedPrecondition(_) => {
                Status::failed_precondition(message)
            }
            Error::ResourceExhausted(_) => Status::resource_exhausted(message),
            Error::Image(e) => match e.kind() {
                ErrorKind::InvalidArgument => Status::invalid_argument(message),
                ErrorKind::NotFound => Status::not_found(message),
                ErrorKind::Unauthenticated => Status::unauthenticated(message),
                ErrorKind::Unavailable => Status::unavailable(message),
                ErrorKind::FailedPrecondition => Status::failed_precondition(message),
                ErrorKind::ResourceExhausted => Status::resource_exhausted(message),
                ErrorKind::DataLoss => Status::data_loss(message),
                ErrorKind::Internal => Status::internal(message),
            },
            Error::Db(DbError::NameTaken { .. } | DbError::IdTaken { .. }) => {
                Status::already_exists(message)
            }
            Error::Setup { .. }
            | Error::Runtime { .. }
            | Error::Launch(_)
            | Error::Cni(_)
            | Error::Db(_)
            | Error::Task(_) => Status::internal(message),
        };
        // Logged inside the request's span, so the method and ids come along.
        match status.code() {
            tonic::Code::Internal => tracing::error!(error = %status.message(), "request failed"),
            _ => {
                tracing::info!(code = ?status.code(), error = %status.message(), "request refused")
            }
        }
        status
    }
}

/// Why pierd could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("state root {root} is in use by another pierd (lock {lock} is held)")]
    RootInUse { root: PathBuf, lock: PathBuf },
    #[error("another pierd is already serving {path}")]
    AlreadyServing { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("listen on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error("streaming server: listen on {address}: {source}")]
    StreamingListen {
        address: std::net::SocketAddr,
        source: io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("open image store: {0}")]
    Images(#[from] pier_storage::ImageError),
    #[error("serve CRI: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("install signal handler: {0}")]
    Signal(io::Error),
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
