//! CRI RuntimeService.

use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1::runtime_service_server;
use k8s_cri::v1::*;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::config::CgroupManager;
use crate::container;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::features;
use crate::pod_metrics;
use crate::sandbox;
use crate::status;
use crate::streaming::Streaming;

/// The CRI API version pier speaks, as `Version` reports it.
const CRI_API_VERSION: &str = "v1";

pub struct RuntimeService {
    daemon: Arc<Daemon>,
    streaming: Streaming,
}

impl RuntimeService {
    pub fn new(daemon: Arc<Daemon>, streaming: Streaming) -> Self {
        Self { daemon, streaming }
    }

    /// Each handler with what it supports; the empty name is the CRI's way
    /// of naming the default handler.
    async fn runtime_handlers(&self) -> Vec<RuntimeHandler> {
        let daemon = &self.daemon;
        let all = daemon.features.all(&daemon.config, &*daemon.host).await;
        let default = &daemon.config.runtime.default_runtime;
        let features = |f: Option<&features::HandlerFeatures>| {
            let f = f.copied().unwrap_or_default();
            Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: f.recursive_read_only,
                user_namespaces: f.user_namespaces,
            })
        };
        std::iter::once(RuntimeHandler {
            name: String::new(),
            features: features(all.get(default)),
        })
        .chain(all.keys().map(|name| RuntimeHandler {
            name: name.clone(),
            features: features(all.get(name)),
        }))
        .collect()
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl runtime_service_server::RuntimeService for RuntimeService {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            // The kubelet-facing API version field, fixed by the CRI at "0.1.0".
            version: "0.1.0".into(),
            runtime_name: "pier".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let config = &self.daemon.config;
        let conditions = vec![
            status::runtime_condition(config),
            status::network_condition(config),
        ];
        let mut info = std::collections::HashMap::new();
        if request.get_ref().verbose {
            let json = serde_json::to_string(config).unwrap_or_default();
            info.insert("config".to_owned(), json);
        }
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: self.runtime_handlers().await,
            // Strict and Merge both work, and ContainerStatus.user is read
            // back from the process (KEP-3619).
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _request: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let events = BroadcastStream::new(self.daemon.events.subscribe()).map(|event| {
            event.map_err(|BroadcastStreamRecvError::Lagged(missed)| {
                Status::resource_exhausted(format!(
                    "container event stream fell {missed} events behind; subscribe again and relist"
                ))
            })
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let pod_sandbox_id = sandbox::run(&self.daemon, request.into_inner()).await?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        stop_pod(&self.daemon, &request.get_ref().pod_sandbox_id).await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        remove_pod(&self.daemon, &request.get_ref().pod_sandbox_id).await?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let (status, info) =
            sandbox::status(&self.daemon, &request.pod_sandbox_id, request.verbose).await?;
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: Vec::new(),
            timestamp: crate::time::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let items = sandbox::list(&self.daemon, request.into_inner().filter).await?;
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let container_id = container::create(&self.daemon, request.into_inner()).await?;
        Ok(Response::new(CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        container::start(&self.daemon, &request.get_ref().container_id).await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let request = request.into_inner();
        container::stop(&self.daemon, &request.container_id, request.timeout).await?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        container::remove(&self.daemon, &request.get_ref().container_id).await?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let containers = container::list(&self.daemon, request.into_inner().filter).await?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let (status, info) =
            container::status(&self.daemon, &request.container_id, request.verbose).await?;
        Ok(Response::new(ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let request = request.into_inner();
        container::update_resources(&self.daemon, &request.container_id, request.linux).await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        container::reopen_log(&self.daemon, &request.get_ref().container_id).await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let request = request.into_inner();
        let started = std::time::Instant::now();
        let result = container::exec_sync(
            &self.daemon,
            &request.container_id,
            request.cmd,
            request.timeout,
        )
        .await;
        self.daemon.metrics.record_exec_sync(started.elapsed());
        let result = result?;
        Ok(Response::new(ExecSyncResponse {
            stdout: result.stdout,
            stderr: result.stderr,
            exit_code: result.exit_code,
        }))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let url = self.streaming.exec(request.into_inner()).await?;
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let url = self.streaming.attach(request.into_inner()).await?;
        Ok(Response::new(AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let url = self.streaming.port_forward(request.into_inner()).await?;
        Ok(Response::new(PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let stats = container::stats::one(&self.daemon, &request.get_ref().container_id).await?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let stats = container::stats::many(&self.daemon, request.into_inner().filter).await?;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let stats = container::stats::pod(&self.daemon, &request.get_ref().pod_sandbox_id).await?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let stats = container::stats::pods(&self.daemon, request.into_inner().filter).await?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR kubelet sends is the CNI configuration's business.
        let _ = request;
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        unimplemented("CheckpointContainer")
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: pod_metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = pod_metrics::list(&self.daemon).await?;
        Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics }))
    }

    async fn runtime_config(
        &self,
        request: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        let driver = match self.daemon.config.runtime.cgroup_manager {
            CgroupManager::Cgroupfs => CgroupDriver::Cgroupfs,
            CgroupManager::Systemd => CgroupDriver::Systemd,
        };
        let _ = request;
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }
}

/// StopPodSandbox: the pod's containers first, since they live in the
/// namespaces and network the sandbox then releases.
pub(super) async fn stop_pod(daemon: &Daemon, id: &str) -> Result<(), Error> {
    let Some(record) = daemon.find_sandbox(id).await? else {
        return Ok(());
    };
    container::stop_all_in_sandbox(daemon, &record.id, false).await?;
    sandbox::stop(daemon, &record.id).await
}

/// RemovePodSandbox: the pod's containers first, then the sandbox.
pub(super) async fn remove_pod(daemon: &Daemon, id: &str) -> Result<(), Error> {
    let Some(record) = daemon.find_sandbox(id).await? else {
        return Ok(());
    };
    container::stop_all_in_sandbox(daemon, &record.id, true).await?;
    sandbox::remove(daemon, &record.id).await
}
