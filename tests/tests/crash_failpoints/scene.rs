//! What a crash case makes before its call, as kubelet would have by then,
//! and the call itself (the retry sends the same request).

use k8s_cri::v1::*;
use pier_tests::Pierd;
use pier_tests::cgroups::CgroupParent;
use pier_tests::workload::{self, Runtime};

use super::{Call, Case, Images};

/// What a case made before the crashing call, and that call's request.
pub(super) struct Scene {
    /// Kept for the pod's logs, which stay after removal (kubelet's).
    _logs: tempfile::TempDir,
    pub(super) cgroup: CgroupParent,
    pub(super) pod: PodSandboxConfig,
    pub(super) pod_id: Option<String>,
    pub(super) container: ContainerConfig,
    pub(super) container_id: Option<String>,
}

impl Scene {
    pub(super) fn new(case: &Case, images: &Images) -> Self {
        let tag = case.label().replace(['.', '_', '+'], "-");
        let cgroup = CgroupParent::new(&format!("crash-{tag}"));
        let logs = tempfile::tempdir().expect("tempdir");
        let mut pod = workload::pod(&tag, logs.path());
        pod.linux = Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup.0.clone(),
            ..Default::default()
        });
        // A pod's PID namespace is shared unless it asks otherwise (mode 0
        // is POD); only the shared one has an infra process.
        let pid = match case.call {
            Call::RunPodSharedPid => NamespaceMode::Pod,
            _ => NamespaceMode::Container,
        };
        workload::pod_security(&mut pod).namespace_options = Some(NamespaceOption {
            pid: pid as i32,
            ..Default::default()
        });
        let script = match case.call {
            Call::StartShortLived => "echo bye; exit 3",
            _ => "echo started; exec sleep 100000",
        };
        let container = workload::container("app", &images.busybox, script);
        Self {
            _logs: logs,
            cgroup,
            pod,
            pod_id: None,
            container,
            container_id: None,
        }
    }

    /// Makes what the call needs, as kubelet would have by then.
    pub(super) async fn prepare(&mut self, call: Call, cri: &mut Runtime) {
        let needs_pod = !matches!(call, Call::RunPod | Call::RunPodSharedPid | Call::PullImage);
        if !needs_pod {
            return;
        }
        let pod_id = workload::run_pod(cri, &self.pod).await;
        self.pod_id = Some(pod_id.clone());
        match call {
            Call::StartContainer | Call::StartShortLived => {
                let id = workload::create(cri, &pod_id, &self.pod, self.container.clone()).await;
                self.container_id = Some(id);
            }
            Call::StopContainer => {
                let id = workload::run(cri, &pod_id, &self.pod, self.container.clone()).await;
                self.container_id = Some(id);
            }
            Call::RemoveContainer => {
                let id = workload::run(cri, &pod_id, &self.pod, self.container.clone()).await;
                stop_container(cri, &id).await.expect("StopContainer");
                self.container_id = Some(id);
            }
            Call::RemovePod => {
                cri.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod_id,
                })
                .await
                .expect("StopPodSandbox");
            }
            _ => {}
        }
    }

    /// The call itself; a retry sends exactly the same request.
    pub(super) async fn call(
        &mut self,
        call: Call,
        pierd: &Pierd,
        images: &Images,
    ) -> Result<(), tonic::Status> {
        let mut cri = pierd.cri().await.runtime;
        let pod_id = self.pod_id.clone().unwrap_or_default();
        let container_id = self.container_id.clone().unwrap_or_default();
        match call {
            Call::RunPod | Call::RunPodSharedPid => {
                let id = cri
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(self.pod.clone()),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                self.pod_id = Some(id);
            }
            Call::CreateContainer => {
                let id = workload::try_create(&mut cri, &pod_id, &self.pod, self.container.clone())
                    .await?;
                self.container_id = Some(id);
            }
            Call::StartContainer | Call::StartShortLived => {
                cri.start_container(StartContainerRequest { container_id })
                    .await?;
            }
            Call::StopContainer => stop_container(&mut cri, &container_id).await?,
            Call::RemoveContainer => {
                cri.remove_container(RemoveContainerRequest { container_id })
                    .await?;
            }
            Call::StopPod => {
                cri.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod_id,
                })
                .await?;
            }
            Call::RemovePod => {
                cri.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod_id,
                })
                .await?;
            }
            Call::PullImage => {
                workload::try_pull(pierd, &images.extra).await?;
            }
        }
        Ok(())
    }
}

pub(super) async fn stop_container(cri: &mut Runtime, id: &str) -> Result<(), tonic::Status> {
    cri.stop_container(StopContainerRequest {
        container_id: id.into(),
        timeout: 0,
    })
    .await
    .map(|_| ())
}
