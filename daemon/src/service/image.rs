//! CRI ImageService.

use std::sync::Arc;

use k8s_cri::v1::image_service_server;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::daemon::Daemon;

pub struct ImageService {
    #[allow(dead_code)] // used once the image RPCs land (issue 4)
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
        _request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        unimplemented("PullImage")
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
