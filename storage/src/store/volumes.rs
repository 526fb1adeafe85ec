//! Image volumes (KEP-4639): an image kubelet pulled, mounted read-only at
//! a path in a container. The view is an overlay of the image's layers with
//! no upper layer, mounted `ro,nosuid,nodev,noexec` (as CRI-O's
//! `mountImage` in server/container_create_linux.go mounts one, and as the
//! Kubernetes 1.31 announcement of the feature describes it), so it costs
//! no space: ImageFsInfo and ImageStatus stay as they were. The image is
//! recorded as used by the container before it is mounted, and RemoveImage
//! refuses it until the container is gone.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::{ImageStore, blocking};
use crate::error::ImageError;
use crate::image::Image;
use crate::layout::ContainerDir;
use crate::overlay;

impl ImageStore {
    /// Mounts image `image` (an id, or a reference kubelet pulled) read-only
    /// on `target`, an empty directory, for container `container_id`,
    /// recording the use first. With `view` (an idmapped view of the layer
    /// store) the layers are taken through it. Returns the image.
    pub async fn mount_image_volume(
        &self,
        container_id: &str,
        image: &str,
        target: &Path,
        view: Option<&Path>,
    ) -> Result<Image, ImageError> {
        // Shared with pulls: a removal waits until the use is recorded.
        let _gc = self.inner.gc.read().await;
        let found = self
            .status(image)
            .await?
            .ok_or_else(|| ImageError::NotFound {
                image: image.to_owned(),
            })?;
        let (container, image_id) = (container_id.to_owned(), found.id.clone());
        self.db(move |db| db.insert_image_volume(&container, &image_id))
            .await?;
        let mut lower = self.layer_paths(&found, view, container_id)?;
        lower.reverse();
        let dir = ContainerDir::new(&self.inner.config.root, container_id)?;
        let links = view
            .is_none()
            .then(|| overlay::links_dir(&self.inner.config.root));
        let (target, id) = (target.to_owned(), container_id.to_owned());
        blocking(move || mount_view(&dir, links.as_deref(), lower, &target, &id)).await?;
        tracing::debug!(container = container_id, image = %found.id, "image volume mounted");
        Ok(found)
    }
}

/// The read-only overlay of `lower` (top first) on `target`. overlayfs
/// needs two lower layers when it has no upper one, so the container's
/// empty directory is the bottom one (CRI-O stacks an empty directory the
/// same way); an image without layers is that empty directory alone,
/// bind-mounted read-only.
fn mount_view(
    dir: &ContainerDir,
    links: Option<&Path>,
    mut lower: Vec<PathBuf>,
    target: &Path,
    id: &str,
) -> Result<(), ImageError> {
    let fail = |cause: String| ImageError::Rootfs {
        container: id.to_owned(),
        cause: format!("image volume at {}: {cause}", target.display()),
    };
    let empty = dir.empty_lower();
    std::fs::create_dir_all(&empty).map_err(|e| ImageError::io("create", &empty, e))?;
    if !lower.is_empty() {
        lower.push(empty);
        return overlay::mount(links, &lower, None, target)
            .map(|_| ())
            .map_err(fail);
    }
    let none: Option<&str> = None;
    nix::mount::mount(Some(&empty), target, none, MsFlags::MS_BIND, none)
        .map_err(|e| fail(format!("bind {}: {e}", empty.display())))?;
    let read_only = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    nix::mount::mount(none, target, none, read_only, none).map_err(|e| {
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        fail(format!("make it read-only: {e}"))
    })
}
