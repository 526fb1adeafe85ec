//! Content-addressed blobs: `blobs/sha256/<hex>`, written through
//! `blobs/tmp/` and renamed, so a present file is always complete.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::error::{ImageError, PullError};

#[derive(Debug)]
pub struct BlobDir {
    pub root: PathBuf,
    counter: AtomicU64,
}

impl BlobDir {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            counter: AtomicU64::new(0),
        }
    }

    fn sha256(&self) -> PathBuf {
        self.root.join("sha256")
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn create_dirs(&self) -> Result<(), ImageError> {
        for dir in [self.sha256(), self.tmp()] {
            fs::create_dir_all(&dir).map_err(|e| ImageError::io("create", dir, e))?;
        }
        Ok(())
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.sha256().join(digest.hex())
    }

    /// Stores `data` under its digest.
    pub fn write(&self, data: &[u8]) -> Result<Digest, PullError> {
        let digest = Digest::of(data);
        let path = self.path(&digest);
        if path.exists() {
            return Ok(digest);
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .tmp()
            .join(format!("{}-{}-{n}", digest.hex(), std::process::id()));
        let written = (|| -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(data)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(PullError::io("write blob", path, e));
        }
        Ok(digest)
    }

    /// A stored blob, re-verified (only small ones are read: configs).
    pub async fn read(&self, digest: &Digest) -> Option<bytes::Bytes> {
        let data = tokio::fs::read(self.path(digest)).await.ok()?;
        (Digest::of(&data) == *digest).then(|| data.into())
    }

    pub fn remove(&self, digest: &Digest) {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(blob = %digest, error = %e, "cannot remove blob"),
        }
    }

    /// Deletes temp files and every blob not in `keep` (hex digests).
    pub fn prune(&self, keep: &HashSet<String>) {
        for (dir, all) in [(self.tmp(), true), (self.sha256(), false)] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if all || !keep.contains(&name) {
                    tracing::info!(path = %entry.path().display(), "removing unreferenced blob");
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}
