//! Calls that name a container, pod or image, mostly ones that do not
//! exist.

use k8s_cri::v1::*;
use proptest::prelude::*;

use super::values::{argv, int64, text};
use crate::workload::Runtime;

/// The image service client the calls use.
pub type Images = k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>;

/// A call that names a container or pod by id (or names an image).
#[derive(Debug, Clone)]
pub enum ByName {
    ContainerStatus(String),
    PodStatus(String),
    StartContainer(String),
    StopContainer(String, i64),
    RemoveContainer(String),
    StopPod(String),
    RemovePod(String),
    ReopenLog(String),
    Stats(String),
    Exec(String, Vec<String>, i64),
    ExecSyncOther(String),
    Update(String),
    ImageStatus(String),
    RemoveImage(String),
    PullImage(String),
}

pub fn by_name() -> impl Strategy<Value = ByName> {
    let id = || prop_oneof![text(), "[0-9a-f]{64}", Just("0".repeat(64)),];
    prop_oneof![
        id().prop_map(ByName::ContainerStatus),
        id().prop_map(ByName::PodStatus),
        id().prop_map(ByName::StartContainer),
        (id(), int64()).prop_map(|(i, t)| ByName::StopContainer(i, t)),
        id().prop_map(ByName::RemoveContainer),
        id().prop_map(ByName::StopPod),
        id().prop_map(ByName::RemovePod),
        id().prop_map(ByName::ReopenLog),
        id().prop_map(ByName::Stats),
        // Any command with a short timeout, or `true` with any timeout: a
        // timeout of 0 or less means none, which a random command could use
        // to hold the test up.
        (id(), argv(), 1i64..=2).prop_map(|(i, a, t)| ByName::Exec(i, a, t)),
        (id(), int64()).prop_map(|(i, t)| ByName::Exec(i, vec!["true".into()], t)),
        id().prop_map(ByName::ExecSyncOther),
        id().prop_map(ByName::Update),
        prop_oneof![
            text(),
            Just("a@sha256:zz".to_owned()),
            Just("::".to_owned())
        ]
        .prop_map(ByName::ImageStatus),
        prop_oneof![text(), Just("sha256:".to_owned()), "sha256:[0-9a-f]{64}"]
            .prop_map(ByName::RemoveImage),
        prop_oneof![
            Just("a@sha256:zz".to_owned()),
            Just("UPPER/case".to_owned()),
            Just("127.0.0.1:1/none:1".to_owned()),
            Just(String::new()),
            Just("x".repeat(4097)),
            Just("a\0b".to_owned()),
        ]
        .prop_map(ByName::PullImage),
    ]
}

/// Runs one call that names something; the result with its status only.
pub async fn call_by_name(
    mut cri: Runtime,
    mut images: Images,
    sleeper: &str,
    call: &ByName,
) -> Result<(), tonic::Status> {
    match call.clone() {
        ByName::ContainerStatus(container_id) => cri
            .container_status(ContainerStatusRequest {
                container_id,
                verbose: true,
            })
            .await
            .map(|_| ()),
        ByName::PodStatus(pod_sandbox_id) => cri
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id,
                verbose: true,
            })
            .await
            .map(|_| ()),
        ByName::StartContainer(container_id) => cri
            .start_container(StartContainerRequest { container_id })
            .await
            .map(|_| ()),
        ByName::StopContainer(container_id, timeout) => cri
            .stop_container(StopContainerRequest {
                container_id,
                timeout,
            })
            .await
            .map(|_| ()),
        ByName::RemoveContainer(container_id) => cri
            .remove_container(RemoveContainerRequest { container_id })
            .await
            .map(|_| ()),
        ByName::StopPod(pod_sandbox_id) => cri
            .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id })
            .await
            .map(|_| ()),
        ByName::RemovePod(pod_sandbox_id) => cri
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id })
            .await
            .map(|_| ()),
        ByName::ReopenLog(container_id) => cri
            .reopen_container_log(ReopenContainerLogRequest { container_id })
            .await
            .map(|_| ()),
        ByName::Stats(container_id) => cri
            .container_stats(ContainerStatsRequest { container_id })
            .await
            .map(|_| ()),
        ByName::Exec(container_id, cmd, timeout) => {
            // The fixed container, by its full id: what it runs must not
            // matter to pierd.
            let id = if container_id.len() % 2 == 0 {
                sleeper.to_owned()
            } else {
                container_id
            };
            cri.exec_sync(ExecSyncRequest {
                container_id: id,
                cmd,
                timeout,
            })
            .await
            .map(|_| ())
        }
        ByName::ExecSyncOther(container_id) => cri
            .exec(ExecRequest {
                container_id,
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ByName::Update(container_id) => cri
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id,
                linux: Some(LinuxContainerResources::default()),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ByName::ImageStatus(image) => images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                verbose: true,
            })
            .await
            .map(|_| ()),
        ByName::RemoveImage(image) => images
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ()),
        ByName::PullImage(image) => images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(|_| ()),
    }
}
