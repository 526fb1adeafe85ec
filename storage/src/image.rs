//! What ListImages, ImageStatus and ImageFsInfo report.

use std::path::PathBuf;

use crate::config::{ConfigFile, ImageConfig};
use crate::db::ImageRecord;

/// A stored image as ListImages and ImageStatus report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The config digest, `sha256:<hex>`.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Compressed size of the layers plus the config, as registries count it.
    pub size: u64,
    pub pinned: bool,
    /// From the config's `User`: a uid when numeric, else a user name.
    pub uid: Option<i64>,
    pub username: String,
    pub config: ImageConfig,
    /// The config file exactly as pulled (for verbose ImageStatus).
    pub raw_config: Vec<u8>,
    pub manifest_digest: String,
    /// Chain ids, bottom layer first.
    pub layers: Vec<String>,
}

impl Image {
    pub(crate) fn from_record(record: ImageRecord) -> Self {
        let config = ConfigFile::parse(&record.config)
            .map(|f| f.config)
            .unwrap_or_default();
        let (uid, username) = config.uid_and_username();
        let (repo_digests, repo_tags) = record.names.into_iter().partition(|n| n.contains('@'));
        Self {
            id: record.id,
            repo_tags,
            repo_digests,
            size: record.size,
            pinned: record.pinned,
            uid,
            username,
            config,
            raw_config: record.config,
            manifest_digest: record.manifest_digest,
            layers: record.layers,
        }
    }
}

/// Bytes and inodes used under one directory tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub path: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

/// What ImageFsInfo reports.
#[derive(Debug, Clone, Default)]
pub struct FsInfo {
    /// Nanoseconds since the Unix epoch when measured.
    pub timestamp: i64,
    /// Blobs and unpacked layers.
    pub images: Usage,
    /// Containers' writable layers.
    pub containers: Usage,
}
