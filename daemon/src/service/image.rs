//! CRI ImageService: a thin translation onto `pier_storage::ImageStore`.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1::image_service_server;
use k8s_cri::v1::*;
use pier_storage::{Auth, StoreConfig};
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::daemon::Daemon;
use crate::error::Error;

pub struct ImageService {
    daemon: Arc<Daemon>,
}

impl ImageService {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

/// The image store's settings from pierd's config.
pub fn image_store_config(config: &Config) -> StoreConfig {
    let mut store = StoreConfig::new(&config.root);
    store.registry.mirrors = config.registry.mirrors.clone();
    store.registry.insecure = config.registry.insecure.clone();
    store.max_unpacked_bytes = config.images.max_unpacked_bytes;
    store
}

/// The image a request names; an empty name is the caller's mistake.
fn image_name(spec: Option<&ImageSpec>, field: &'static str) -> Result<String, Error> {
    let name = spec.map(|s| s.image.trim()).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::InvalidArgument {
            field,
            reason: "no image given".into(),
        });
    }
    Ok(name.to_owned())
}

fn to_cri(image: pier_storage::Image) -> Image {
    Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags,
        repo_digests: image.repo_digests,
        size: image.size,
        uid: image.uid.map(|value| Int64Value { value }),
        username: image.username,
        spec: Some(ImageSpec {
            image: image.id,
            ..Default::default()
        }),
        pinned: image.pinned,
    }
}

fn verbose_info(image: &pier_storage::Image) -> HashMap<String, String> {
    let config: serde_json::Value =
        serde_json::from_slice(&image.raw_config).unwrap_or(serde_json::Value::Null);
    let info = serde_json::json!({
        "id": image.id,
        "manifestDigest": image.manifest_digest,
        "chainIDs": image.layers,
        "imageSpec": config,
    });
    HashMap::from([("info".to_owned(), info.to_string())])
}

fn usage(
    fs: &pier_storage::Usage,
    mountpoint: &std::path::Path,
    timestamp: i64,
) -> FilesystemUsage {
    FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: mountpoint.display().to_string(),
        }),
        used_bytes: Some(UInt64Value { value: fs.bytes }),
        inodes_used: Some(UInt64Value { value: fs.inodes }),
    }
}

#[tonic::async_trait]
impl image_service_server::ImageService for ImageService {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image);
        let images = self
            .daemon
            .images
            .list(filter.as_deref())
            .await
            .map_err(Error::from)?;
        Ok(Response::new(ListImagesResponse {
            images: images.into_iter().map(to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref(), "image")?;
        tracing::Span::current().record("image", name.as_str());
        let found = self
            .daemon
            .images
            .status(&name)
            .await
            .map_err(Error::from)?;
        let info = match (&found, request.verbose) {
            (Some(image), true) => verbose_info(image),
            _ => HashMap::new(),
        };
        Ok(Response::new(ImageStatusResponse {
            image: found.map(to_cri),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let request = request.into_inner();
        let name = image_name(request.image.as_ref(), "image")?;
        tracing::Span::current().record("image", name.as_str());
        let auth = request
            .auth
            .map(|a| Auth {
                username: a.username,
                password: a.password,
                auth: a.auth,
                server_address: a.server_address,
                identity_token: a.identity_token,
                registry_token: a.registry_token,
            })
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let pulled = self.daemon.images.pull(&name, &auth).await;
        self.daemon
            .metrics
            .record_pull(pulled.is_ok(), started.elapsed());
        let image = pulled.map_err(Error::from)?;
        Ok(Response::new(PullImageResponse {
            image_ref: image.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let name = image_name(request.into_inner().image.as_ref(), "image")?;
        tracing::Span::current().record("image", name.as_str());
        self.daemon
            .images
            .remove(&name)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let info = self.daemon.images.fs_info().await.map_err(Error::from)?;
        // One filesystem holds both: the same mountpoint tells kubelet the
        // image and container filesystems are not split.
        let root = self.daemon.images.root().to_path_buf();
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![usage(&info.images, &root, info.timestamp)],
            container_filesystems: vec![usage(&info.containers, &root, info.timestamp)],
        }))
    }
}
