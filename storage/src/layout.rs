//! Where a container's files live under the state root. This type is the one
//! owner of `<root>/containers/<id>/`: storage's writable layer (`upper`,
//! `work`) and mount point (`merged`), and the daemon's OCI bundle (`bundle`)
//! and durable exit file (`exit`). The folder is the container's as a whole:
//! [`ImageStore::remove_container_files`](crate::ImageStore::remove_container_files)
//! unmounts it and deletes everything in it, which is why the daemon keeps
//! nothing there that must outlive the container.

use std::path::{Path, PathBuf};

use crate::error::ImageError;

/// `<root>/containers`: one folder per container, and `.trash-*` folders of
/// containers being deleted.
pub fn containers_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

/// The paths of one container's folder under the state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDir {
    dir: PathBuf,
}

impl ContainerDir {
    /// The folder of container `id` under state root `root`. An id becomes a
    /// directory name, so one that could climb out or hide is refused.
    pub fn new(root: &Path, id: &str) -> Result<Self, ImageError> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(ImageError::Rootfs {
                container: id.to_owned(),
                cause: "invalid container id for a directory name".into(),
            });
        }
        Ok(Self {
            dir: containers_dir(root).join(id),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The writable layer: what the container changed in its rootfs.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// overlayfs' work dir, on the same filesystem as `upper`.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Where the rootfs is mounted.
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// An empty lower layer, for an image without layers: overlayfs needs one.
    pub fn empty_lower(&self) -> PathBuf {
        self.dir.join("empty")
    }

    /// The OCI bundle (`config.json`) the daemon writes for runc.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// The monitor's durable copy of the exit file.
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_is_inside_the_containers_folder() {
        let dir = ContainerDir::new(Path::new("/var/lib/pier"), "abc").unwrap();
        assert_eq!(dir.path(), Path::new("/var/lib/pier/containers/abc"));
        for p in [
            dir.upper(),
            dir.work(),
            dir.merged(),
            dir.bundle(),
            dir.exit(),
        ] {
            assert_eq!(p.parent(), Some(dir.path()));
        }
    }

    #[test]
    fn ids_that_could_escape_or_hide_are_refused() {
        for id in ["", "..", ".trash-x", "a/b", "a b", &"x".repeat(129)] {
            assert!(ContainerDir::new(Path::new("/r"), id).is_err(), "{id:?}");
        }
    }
}
