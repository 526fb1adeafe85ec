//! What a refused call must leave as it found it, and the differences
//! between two snapshots of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// What the node holds, as far as a rejected call must not change it.
#[derive(Debug, PartialEq)]
pub struct World {
    pub pods: Vec<(String, i32)>,
    pub containers: Vec<(String, i32)>,
    pub images: Vec<String>,
    /// Files under pierd's roots: (is a directory, size of a file).
    pub roots: BTreeMap<PathBuf, (bool, u64)>,
    /// Files the requests may name: the log and host-path areas.
    pub areas: BTreeMap<PathBuf, (bool, u64)>,
    pub mounts: Vec<String>,
}

/// Every file under `dir`, symlinks not followed.
pub fn tree(dir: &Path, out: &mut BTreeMap<PathBuf, (bool, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        // SQLite's shared-memory index changes on reads; its content is
        // what the CRI lists show.
        let volatile = path.to_string_lossy().ends_with("-shm");
        out.insert(
            path.clone(),
            (
                meta.is_dir(),
                if meta.is_dir() || volatile {
                    0
                } else {
                    meta.len()
                },
            ),
        );
        if meta.is_dir() {
            tree(&path, out);
        }
    }
}

/// What differs between two snapshots of files: one line per path.
pub fn file_diff(
    before: &BTreeMap<PathBuf, (bool, u64)>,
    after: &BTreeMap<PathBuf, (bool, u64)>,
) -> String {
    let mut out = String::new();
    for (path, was) in before {
        match after.get(path) {
            None => out += &format!("\n  gone: {}", path.display()),
            Some(now) if now != was => {
                out += &format!("\n  changed: {} {was:?} -> {now:?}", path.display())
            }
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out += &format!("\n  new: {}", path.display());
    }
    out
}

/// The parts of the node a call changed, described; empty when none did.
/// `all` includes the areas the requests name and the image list.
pub fn changes(before: &World, after: &World, all: bool) -> String {
    let mut out = String::new();
    if before.pods != after.pods {
        out += &format!("\n pods {:?} -> {:?}", before.pods, after.pods);
    }
    if before.containers != after.containers {
        out += &format!(
            "\n containers {:?} -> {:?}",
            before.containers, after.containers
        );
    }
    if before.mounts != after.mounts {
        out += &format!("\n mounts {:?} -> {:?}", before.mounts, after.mounts);
    }
    // The database's files grow with rows written and deleted again (a
    // request refused once its image is mounted); the rows themselves are
    // what the CRI lists above show.
    let kept = |files: &BTreeMap<PathBuf, (bool, u64)>| {
        let mut files = files.clone();
        files.retain(|p, _| !p.to_string_lossy().contains("pier.db"));
        files
    };
    out += &file_diff(&kept(&before.roots), &kept(&after.roots));
    if all {
        if before.images != after.images {
            out += &format!("\n images {:?} -> {:?}", before.images, after.images);
        }
        out += &file_diff(&before.areas, &after.areas);
    }
    out
}

/// A refused call must leave the node as it found it.
pub fn unchanged(
    call: &str,
    input: &dyn std::fmt::Debug,
    before: &World,
    after: &World,
) -> Result<(), TestCaseError> {
    let diff = changes(before, after, true);
    prop_assert!(
        diff.is_empty(),
        "{} refused {:?} but changed the node:{}",
        call,
        input,
        diff
    );
    Ok(())
}

/// A call accepted and undone through the CRI must leave pierd's own state
/// as it was; kubelet-owned files it made (pod log directories, host-path
/// volumes created as DirectoryOrCreate) may stay.
pub fn roots_restored(
    call: &str,
    input: &dyn std::fmt::Debug,
    before: &World,
    after: &World,
) -> Result<(), TestCaseError> {
    let diff = changes(before, after, false);
    prop_assert!(
        diff.is_empty(),
        "{} accepted {:?}, and its undo left:{}",
        call,
        input,
        diff
    );
    Ok(())
}
