//! Mounts made on the node for one `runc create` and released as soon as it
//! returns. runc copies each into the container's mount namespace, and the
//! copies keep what they show alive; so the node's mount table does not
//! grow with every container, and nothing is left to clean up when the
//! container goes. What is staged:
//!
//! - image volumes: a read-only overlay of the image (`ImageStore::
//!   mount_image_volume`);
//! - for a pod with its own user namespace: an idmapped view of the layer
//!   store, through which its rootfs and image volumes take their layers,
//!   and an idmapped clone of every bind mount's source, which runc binds
//!   from instead. runc 1.1 cannot make idmapped mounts itself (its
//!   `features` lists no `idmap` extension); pier makes them before it.
//!
//! A stage lives under `<runroot>/mounts/<container id>/` and is only ever
//! taken apart by unmounting and removing empty entries one by one, never
//! by deleting a tree: a stage a crash left mounted must not have a volume
//! or the layer store deleted through it.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};
use oci_spec::runtime::Spec;
use pier_storage::idmap;

use crate::error::Error;

/// The staged mounts of one container create.
#[derive(Debug)]
pub struct Stage {
    dir: PathBuf,
    /// The pod's pinned user namespace, for idmapped clones.
    userns: Option<File>,
    /// Mount points made so far, released in reverse.
    entries: Vec<PathBuf>,
}

impl Stage {
    /// An empty stage for container `id`; `userns` is the pod's pinned user
    /// namespace when it has one.
    pub fn new(runroot: &Path, id: &str, userns: Option<&Path>) -> Result<Self, Error> {
        let dir = runroot.join("mounts").join(id);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let userns = userns
            .map(|path| {
                File::open(path).map_err(Error::io(format!(
                    "open the pod's user namespace {}",
                    path.display()
                )))
            })
            .transpose()?;
        Ok(Self {
            dir,
            userns,
            entries: Vec::new(),
        })
    }

    /// A new empty directory in the stage to mount something on.
    pub fn mount_point(&mut self, name: &str) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        std::fs::create_dir(&path).map_err(Error::io(format!("create {}", path.display())))?;
        self.entries.push(path.clone());
        Ok(path)
    }

    /// The idmapped view of the layer store `layers`, for the pod's user
    /// namespace; `None` for a pod in the node's.
    pub fn layer_view(&mut self, layers: &Path) -> Result<Option<PathBuf>, Error> {
        let Some(userns) = &self.userns else {
            return Ok(None);
        };
        let tree = idmap::clone_idmapped(layers, userns.as_fd(), false).map_err(|e| {
            Error::FailedPrecondition(format!(
                "the pod has its own user namespace, and the layer store {} cannot be \
                 idmapped: {e}",
                layers.display()
            ))
        })?;
        let view = self.mount_point("layers")?;
        idmap::attach(&tree, &view).map_err(Error::io(format!(
            "attach the idmapped layers at {}",
            view.display()
        )))?;
        Ok(Some(view))
    }

    /// For a pod with its own user namespace, points every bind mount of
    /// `spec` whose source is not staged already at an idmapped clone of
    /// it, with its submounts when the bind is recursive. A filesystem that
    /// refuses idmapped mounts fails the create, naming the volume.
    pub fn idmap_binds(&mut self, spec: &mut Spec) -> Result<(), Error> {
        if self.userns.is_none() {
            return Ok(());
        }
        let Some(mut mounts) = spec.mounts().clone() else {
            return Ok(());
        };
        for (index, mount) in mounts.iter_mut().enumerate() {
            let (Some("bind"), Some(source)) = (mount.typ().as_deref(), mount.source().clone())
            else {
                continue;
            };
            if source.starts_with(&self.dir) {
                continue;
            }
            let recursive = mount
                .options()
                .as_ref()
                .is_some_and(|o| o.iter().any(|o| o == "rbind"));
            let clone = self.idmapped(&source, index, recursive, mount.destination())?;
            mount.set_source(Some(clone));
        }
        spec.set_mounts(Some(mounts));
        Ok(())
    }

    fn idmapped(
        &mut self,
        source: &Path,
        index: usize,
        recursive: bool,
        destination: &Path,
    ) -> Result<PathBuf, Error> {
        let Some(userns) = &self.userns else {
            return Ok(source.to_owned());
        };
        let tree = idmap::clone_idmapped(source, userns.as_fd(), recursive).map_err(|e| {
            Error::FailedPrecondition(format!(
                "the pod has its own user namespace, and the mount of {} at {} cannot be \
                 idmapped (its filesystem, or one mounted below it, may not support \
                 idmapped mounts): {e}",
                source.display(),
                destination.display()
            ))
        })?;
        let is_dir = std::fs::metadata(source)
            .map_err(Error::io(format!("stat {}", source.display())))?
            .is_dir();
        let target = self.dir.join(format!("bind-{index}"));
        if is_dir {
            std::fs::create_dir(&target)
        } else {
            File::create_new(&target).map(drop)
        }
        .map_err(Error::io(format!("create {}", target.display())))?;
        self.entries.push(target.clone());
        idmap::attach(&tree, &target).map_err(Error::io(format!(
            "attach the idmapped clone of {} at {}",
            source.display(),
            target.display()
        )))?;
        Ok(target)
    }

    /// Unmounts and removes everything staged. Best effort: what cannot go
    /// now is logged, and the next startup's [`sweep`] retries.
    pub fn release(self) {
        release_dir(&self.dir);
    }
}

/// Unmounts and removes the entries of a stage directory, then the
/// directory. Only empty entries are removed.
fn release_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Unmount until nothing is mounted there (EINVAL), stacked or not.
        for _ in 0..16 {
            if umount2(&path, MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let removed = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir(&path),
            _ => std::fs::remove_file(&path),
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "remove a staged mount point");
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::warn!(path = %dir.display(), error = %e, "remove a container's stage");
    }
}

/// At startup, before any create: releases the stages of creates a crash
/// or a kill interrupted.
pub fn sweep(runroot: &Path) {
    let Ok(stages) = std::fs::read_dir(runroot.join("mounts")) else {
        return;
    };
    for stage in stages.flatten() {
        tracing::info!(path = %stage.path().display(), "releasing mounts an interrupted create staged");
        release_dir(&stage.path());
    }
}
