//! GetContainerEvents: kubelet's evented PLEG sees every lifecycle change of
//! pods and containers, each with the pod's status as it is right after.

use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::Registry;
use pier_tests::workload::*;

type Stream = tonic::Streaming<ContainerEventResponse>;

async fn next(events: &mut Stream) -> ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event within 10 s")
        .expect("stream error")
        .expect("stream ended")
}

fn kind(event: &ContainerEventResponse) -> ContainerEventType {
    ContainerEventType::try_from(event.container_event_type).expect("known event type")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lifecycle_change_is_an_event_with_the_pods_status() {
    let registry = Registry::start();
    let (pierd, image) = setup(&registry).await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let mut events = cri
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    // A second subscriber gets the same events.
    let mut other = cri
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();

    let (pod_id, config) = running_pod(&mut cri, pod("evented", logs.path())).await;
    for expected in [
        ContainerEventType::ContainerCreatedEvent,
        ContainerEventType::ContainerStartedEvent,
    ] {
        let event = next(&mut events).await;
        assert_eq!(
            (kind(&event), event.container_id.as_str()),
            (expected, pod_id.as_str())
        );
        let status = event.pod_sandbox_status.expect("pod status");
        assert_eq!(status.metadata.expect("metadata").uid, "uid-evented");
        assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    }

    let id = run(
        &mut cri,
        &pod_id,
        &config,
        container("brief", &image, "sleep 0.5; exit 3"),
    )
    .await;
    let created = next(&mut events).await;
    assert_eq!(kind(&created), ContainerEventType::ContainerCreatedEvent);
    assert_eq!(created.container_id, id);
    let started = next(&mut events).await;
    assert_eq!(kind(&started), ContainerEventType::ContainerStartedEvent);
    let stopped = next(&mut events).await;
    assert_eq!(
        (kind(&stopped), stopped.container_id.as_str()),
        (ContainerEventType::ContainerStoppedEvent, id.as_str())
    );
    let exited = stopped
        .containers_statuses
        .iter()
        .find(|c| c.id == id)
        .expect("the container's status in its stop event");
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);
    assert_eq!(exited.exit_code, 3);
    assert!(stopped.created_at >= started.created_at && started.created_at > 0);

    cri.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("remove");
    let deleted = next(&mut events).await;
    assert_eq!(kind(&deleted), ContainerEventType::ContainerDeletedEvent);
    assert_eq!(deleted.container_id, id);
    assert!(deleted.containers_statuses.iter().all(|c| c.id != id));

    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("stop pod");
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("remove pod");
    let stopped = next(&mut events).await;
    assert_eq!(
        (kind(&stopped), stopped.container_id.as_str()),
        (ContainerEventType::ContainerStoppedEvent, pod_id.as_str())
    );
    let status = stopped.pod_sandbox_status.expect("pod status");
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
    let deleted = next(&mut events).await;
    assert_eq!(
        (kind(&deleted), deleted.container_id.as_str()),
        (ContainerEventType::ContainerDeletedEvent, pod_id.as_str())
    );
    assert!(
        deleted.pod_sandbox_status.is_some(),
        "names the pod that was"
    );

    let mut seen = 0;
    while seen < 8 {
        next(&mut other).await;
        seen += 1;
    }
}
