//! Pods and containers for end-to-end tests: a pierd with a busybox image
//! pulled from the test registry, pod and container configs, and the calls
//! every container test makes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;

use crate::{ImageSpec as TestImage, Pierd, PierdOptions, Registry, TestNetwork};

pub type Runtime =
    k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// A pierd that trusts the test registry, with a busybox image pulled.
pub async fn setup(registry: &Registry) -> (Pierd, String) {
    let pushed = TestImage::default().push(registry, "tests/busybox:1").await;
    let pierd = Pierd::start_with(PierdOptions {
        network: Some(TestNetwork::new()),
        args: vec!["--insecure-registry".into(), registry.host()],
        ..Default::default()
    })
    .await;
    let mut images = pierd.cri().await.images;
    images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: pushed.reference.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("PullImage");
    (pierd, pushed.reference)
}

pub fn pod(name: &str, log_dir: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "pier-tests".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        ..Default::default()
    }
}

pub fn container(name: &str, image: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("app".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn run(
    cri: &mut Runtime,
    pod_id: &str,
    pod: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let created = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: created.clone(),
    })
    .await
    .expect("StartContainer");
    created
}

pub async fn status(cri: &mut Runtime, id: &str) -> ContainerStatus {
    let response = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .expect("ContainerStatus");
    response.into_inner().status.expect("status")
}

pub async fn wait_exited(cri: &mut Runtime, id: &str, within: Duration) -> ContainerStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = status(cri, id).await;
        if status.state == ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?} after {within:?}",
            status.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `pod` (with a cluster-like DNS config) and returns its id and config.
pub async fn running_pod(
    cri: &mut Runtime,
    mut pod: PodSandboxConfig,
) -> (String, PodSandboxConfig) {
    pod.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.pier.test".into()],
        options: vec!["ndots:2".into()],
    });
    let id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    (id, pod)
}

pub async fn exec_out(cri: &mut Runtime, id: &str, script: &str) -> (i32, String) {
    let out = cri
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
