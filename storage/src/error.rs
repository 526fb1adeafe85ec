//! Errors of the image store. Every message names the image (or container)
//! and the cause, because it ends up verbatim in a CRI error kubelet shows.

use std::io;
use std::path::PathBuf;

use crate::db::DbError;

/// How a caller should classify an error (the daemon maps it to a gRPC code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    FailedPrecondition,
    ResourceExhausted,
    DataLoss,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {image} not found")]
    NotFound { image: String },
    #[error("pull image {image}: {cause}")]
    Pull { image: String, cause: PullError },
    #[error("image {image} is in use by container(s) {}", containers.join(", "))]
    InUse {
        image: String,
        containers: Vec<String>,
    },
    #[error("rootfs of container {container}: {cause}")]
    Rootfs { container: String, cause: String },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("image store task failed: {0}")]
    Task(String),
}

/// Why a pull failed; wrapped in [`ImageError::Pull`] with the image name.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("registry {registry} is unreachable: {cause}")]
    Unreachable { registry: String, cause: String },
    #[error("registry {registry} {detail} (unauthorized)")]
    Unauthorized {
        registry: String,
        detail: &'static str,
    },
    #[error("{reference} not found in registry {registry}")]
    ManifestNotFound { reference: String, registry: String },
    #[error("no manifest for platform {platform}; the image has {available}")]
    PlatformNotFound { platform: String, available: String },
    #[error("unsupported or malformed manifest: {0}")]
    BadManifest(String),
    #[error("blob {digest} is corrupt: its content has digest {actual}")]
    DigestMismatch { digest: String, actual: String },
    #[error("blob {digest} is truncated or too long: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "layer {digest} is corrupt: its content has diff id {actual}, the config says {expected}"
    )]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
    #[error(
        "layer {digest} would take the pull past {limit} unpacked bytes (images.max_unpacked_bytes); unpacking stopped"
    )]
    TooLarge { digest: String, limit: u64 },
    #[error("layer {digest} has an unsafe entry {entry:?}: {reason}")]
    UnsafeEntry {
        digest: String,
        entry: String,
        reason: String,
    },
    #[error("layer {digest} is malformed: {cause}")]
    BadLayer { digest: String, cause: String },
    #[error("image store is full: no space left writing {}", path.display())]
    DiskFull { path: PathBuf },
    #[error("registry {registry}: {cause}")]
    Registry { registry: String, cause: String },
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl PullError {
    /// Classifies a local write error, recognising a full disk.
    pub fn io(context: &'static str, path: PathBuf, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            Self::DiskFull { path }
        } else {
            Self::Io {
                context,
                path,
                source,
            }
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unreachable { .. } => ErrorKind::Unavailable,
            Self::Unauthorized { .. } => ErrorKind::Unauthenticated,
            Self::ManifestNotFound { .. } | Self::PlatformNotFound { .. } => ErrorKind::NotFound,
            Self::BadManifest(_)
            | Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::DiffIdMismatch { .. }
            | Self::UnsafeEntry { .. }
            | Self::BadLayer { .. } => ErrorKind::DataLoss,
            Self::TooLarge { .. } | Self::DiskFull { .. } => ErrorKind::ResourceExhausted,
            Self::Registry { .. } => ErrorKind::Unavailable,
            Self::Io { source, .. } if out_of_descriptors(source) => ErrorKind::ResourceExhausted,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidReference { .. } => ErrorKind::InvalidArgument,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Pull { cause, .. } => cause.kind(),
            Self::InUse { .. } => ErrorKind::FailedPrecondition,
            Self::Io { source, .. } if out_of_descriptors(source) => ErrorKind::ResourceExhausted,
            Self::Db(DbError::Busy(_)) => ErrorKind::Unavailable,
            Self::Db(DbError::Full(_)) => ErrorKind::ResourceExhausted,
            Self::Rootfs { .. } | Self::Io { .. } | Self::Db(_) | Self::Task(_) => {
                ErrorKind::Internal
            }
        }
    }

    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

/// Whether the process or the node ran out of descriptors or memory: the
/// call can succeed once load drops.
fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
    )
}

/// An error and its sources, `outer: inner: innermost`: the HTTP client's
/// errors say what failed only in their sources.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_space_or_descriptors_is_resource_exhaustion() {
        let os = |errno| io::Error::from_raw_os_error(errno);
        let full = PullError::io(
            "unpack layer",
            "/var/lib/pier/layers/x".into(),
            os(libc::ENOSPC),
        );
        assert!(matches!(full, PullError::DiskFull { .. }));
        assert!(full.to_string().contains("image store is full"), "{full}");
        assert_eq!(full.kind(), ErrorKind::ResourceExhausted);
        let emfile = PullError::io("create layer dir", "/x".into(), os(libc::EMFILE));
        assert_eq!(emfile.kind(), ErrorKind::ResourceExhausted);
        let store = ImageError::io("create", "/var/lib/pier/blobs", os(libc::ENFILE));
        assert_eq!(store.kind(), ErrorKind::ResourceExhausted);
        let denied = PullError::io("create layer dir", "/x".into(), os(libc::EACCES));
        assert_eq!(denied.kind(), ErrorKind::Internal);
    }
}
