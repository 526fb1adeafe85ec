//! Disk usage for ImageFsInfo, counted the way `du` does: allocated blocks,
//! each inode once however many hard links name it, one filesystem only
//! (so a mounted container rootfs is not counted into its writable layer).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::image::{FsInfo, Usage};

pub fn tree_usage(path: &Path) -> Usage {
    let mut usage = Usage {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    add_tree(path, &mut usage, &mut seen);
    usage
}

fn add_tree(path: &Path, usage: &mut Usage, seen: &mut HashSet<(u64, u64)>) {
    let Ok(top) = fs::symlink_metadata(path) else {
        return;
    };
    let dev = top.dev();
    let mut stack = vec![(path.to_path_buf(), top)];
    while let Some((path, meta)) = stack.pop() {
        if meta.dev() != dev || !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.bytes += meta.blocks() * 512;
        if meta.is_dir() {
            let Ok(entries) = fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(meta) = entry.metadata() {
                    stack.push((entry.path(), meta));
                }
            }
        }
    }
}

pub fn fs_info(root: &Path) -> FsInfo {
    let mut images = Usage {
        path: root.to_path_buf(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    add_tree(&root.join("blobs"), &mut images, &mut seen);
    add_tree(&root.join("layers"), &mut images, &mut seen);
    let containers = tree_usage(&crate::layout::containers_dir(root));
    FsInfo {
        timestamp: crate::time::now_ns(),
        images,
        containers,
    }
}
