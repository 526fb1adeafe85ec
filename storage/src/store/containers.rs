//! Container root filesystems: the image's layers with a writable layer of
//! the container's own, mounted and taken apart again.

use std::path::{Path, PathBuf};

use super::{ImageStore, blocking};
use crate::digest::Digest;
use crate::error::ImageError;
use crate::image::{Image, Usage};
use crate::rootfs::{self, LayerView};
use crate::usage;

impl ImageStore {
    /// Mounts the root filesystem of a container: the image's layers with a
    /// writable layer of its own under `containers/<id>/`. Returns the mount
    /// point. Idempotent. Record the container in the database first: the
    /// startup cleanup unmounts and deletes rootfs dirs of unknown containers.
    pub async fn create_rootfs(
        &self,
        container_id: &str,
        image_id: &str,
        view: Option<LayerView<'_>>,
    ) -> Result<PathBuf, ImageError> {
        let _gc = self.inner.gc.read().await;
        let Some(image) = self.status(image_id).await? else {
            return Err(ImageError::NotFound {
                image: image_id.to_owned(),
            });
        };
        let root = self.inner.config.root.clone();
        let id = container_id.to_owned();
        let lower = self.layer_paths(&image, view.map(|v| v.layers), &id)?;
        let view = view.map(|v| (v.layers.to_owned(), v.root_owner));
        blocking(move || {
            let view = view.as_ref().map(|(layers, root_owner)| LayerView {
                layers,
                root_owner: *root_owner,
            });
            rootfs::mount(&root, &id, &lower, view)
        })
        .await
    }

    /// The directories of an image's layers, bottom first: the store's own,
    /// or their names under `view` (an idmapped view of the layer store).
    pub(super) fn layer_paths(
        &self,
        image: &Image,
        view: Option<&Path>,
        container: &str,
    ) -> Result<Vec<PathBuf>, ImageError> {
        image
            .layers
            .iter()
            .map(|c| {
                Digest::parse(c).map(|c| match view {
                    Some(view) => view.join(c.hex()),
                    None => self.inner.layers.path(&c),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|cause| ImageError::Rootfs {
                container: container.to_owned(),
                cause,
            })
    }

    /// Unmounts a container's root filesystem and deletes its whole folder
    /// ([`ContainerDir`](crate::ContainerDir)): writable layer, bundle and
    /// exit file. Idempotent. The mount is gone when this returns; the files
    /// are deleted in the background, off the caller's path.
    pub async fn remove_container_files(&self, container_id: &str) -> Result<(), ImageError> {
        let root = self.inner.config.root.clone();
        let id = container_id.to_owned();
        if let Some(trash) = blocking(move || rootfs::detach(&root, &id)).await? {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = rootfs::delete_trash(&trash) {
                    tracing::warn!(error = %e, "cannot delete a removed container's files");
                }
            });
        }
        Ok(())
    }

    /// A container's writable layer and what it uses (ContainerStats). Walks
    /// the layer: call it off the async workers for many containers.
    pub fn writable_layer(&self, container_id: &str) -> Result<(PathBuf, Usage), ImageError> {
        let upper = crate::ContainerDir::new(&self.inner.config.root, container_id)?.upper();
        let usage = usage::tree_usage(&upper);
        Ok((upper, usage))
    }

    /// Unmounts a container's root filesystem, keeping its writable layer.
    pub async fn unmount_rootfs(&self, container_id: &str) -> Result<(), ImageError> {
        let root = self.inner.config.root.clone();
        let id = container_id.to_owned();
        blocking(move || rootfs::unmount(&root, &id)).await
    }
}
