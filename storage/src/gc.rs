//! Startup cleanup: whatever a crash left half done goes, so that only what
//! the database records exists on disk.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use crate::blobs::BlobDir;
use crate::db::Database;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::layers::LayerDirs;
use crate::{overlay, rootfs};

pub fn startup_cleanup(
    root: &Path,
    db: &Database,
    layers: &LayerDirs,
    blobs: &BlobDir,
) -> Result<(), ImageError> {
    layers.purge_trash(true);

    // Layers recorded but used by no image: a pull died between unpacking
    // and recording its image.
    let mut recorded = HashSet::new();
    for layer in db.layers()? {
        if db.delete_unused_layer(&layer.chain_id)? {
            tracing::info!(layer = %layer.chain_id, "forgetting layer no image uses");
            continue;
        }
        if let Ok(chain_id) = Digest::parse(&layer.chain_id) {
            recorded.insert(chain_id.hex().to_owned());
        }
    }
    if let Ok(entries) = fs::read_dir(&layers.root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !recorded.contains(&name) {
                tracing::info!(path = %entry.path().display(), "removing unrecorded layer");
                if let Err(e) = fs::remove_dir_all(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove");
                }
            }
        }
    }
    overlay::remove_dangling_links(&layers.links);
    for hex in &recorded {
        if !layers.root.join(hex).is_dir() {
            tracing::warn!(layer = %hex, "recorded layer is missing on disk; pull its image again");
        }
    }

    let mut keep = HashSet::new();
    for image in db.images()? {
        for digest in [&image.id, &image.manifest_digest] {
            if let Ok(d) = Digest::parse(digest) {
                keep.insert(d.hex().to_owned());
            }
        }
    }
    blobs.prune(&keep);

    rootfs::cleanup(root, |id| db.container_exists(id).unwrap_or(true))
}
