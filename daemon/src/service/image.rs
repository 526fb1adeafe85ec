//! CRI ImageService.

use std::sync::Arc;

use k8s_cri::v1::image_service_server;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::daemon::Daemon;

/// The image store's settings from pierd's configuration.
pub fn image_store_config(config: &crate::config::Config) -> pier_storage::StoreConfig {
    let mut store = pier_storage::StoreConfig::new(&config.root);
    store.registry.mirrors = config.registry.mirrors.clone();
    store.registry.insecure = config.registry.insecure.clone();
    store
}

pub struct ImageService {
    daemon: Arc<Daemon>,
}

impl ImageService {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Self { daemon }
    }
}

#[tonic::async_trait]
impl image_service_server::ImageService for ImageService {
    async fn list_images(
        &self,
        _request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        unimplemented("ListImages")
    }

    async fn image_status(
        &self,
        _request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        unimplemented("ImageStatus")
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let image = request
            .into_inner()
            .image
            .map(|i| i.image)
            .unwrap_or_default();
        let pulled = self
            .daemon
            .images
            .pull(&image, &pier_storage::Auth::default())
            .await
            .map_err(crate::error::Error::from)?;
        Ok(Response::new(PullImageResponse {
            image_ref: pulled.id,
        }))
    }

    async fn remove_image(
        &self,
        _request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        unimplemented("RemoveImage")
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        unimplemented("ImageFsInfo")
    }
}
