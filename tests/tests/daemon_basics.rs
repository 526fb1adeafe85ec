//! pierd end to end over its socket: Version, Status, socket ownership,
//! UNIMPLEMENTED answers and clean shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use k8s_cri::v1::{
    CheckpointContainerRequest, ContainerStatusRequest, RuntimeCondition, StatusRequest,
    VersionRequest,
};
use pier_tests::{Pierd, PierdOptions};

/// The runtime conditions a pierd reports.
async fn conditions(pierd: &Pierd) -> Vec<RuntimeCondition> {
    let status = pierd
        .cri()
        .await
        .runtime
        .status(StatusRequest::default())
        .await;
    status
        .expect("Status")
        .into_inner()
        .status
        .expect("runtime status")
        .conditions
}

fn condition<'a>(conditions: &'a [RuntimeCondition], kind: &str) -> &'a RuntimeCondition {
    conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reports_pier_and_cri_v1() {
    let pierd = Pierd::start().await;
    let version = pierd
        .cri()
        .await
        .runtime
        .version(VersionRequest::default())
        .await;
    let version = version.expect("Version").into_inner();
    assert_eq!(version.runtime_name, "pier");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.version, "0.1.0");
    assert!(!version.runtime_version.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_ready_with_runc_and_the_default_network() {
    let pierd = Pierd::start().await;
    let status = pierd
        .cri()
        .await
        .runtime
        .status(StatusRequest { verbose: true })
        .await;
    let status = status.expect("Status").into_inner();
    let conditions = status.status.expect("runtime status").conditions;
    for kind in ["RuntimeReady", "NetworkReady"] {
        let c = conditions.iter().find(|c| c.r#type == kind).expect(kind);
        assert!(c.status, "{kind} not ready: {} {}", c.reason, c.message);
    }
    assert!(
        status.info.contains_key("config"),
        "verbose Status carries the config"
    );
    assert!(status.runtime_handlers.iter().any(|h| h.name == "runc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_missing_network_and_runtime() {
    let options = PierdOptions {
        cni_files: Vec::new(),
        args: vec!["--default-runtime".into(), "/nonexistent/runc".into()],
        ..Default::default()
    };
    let pierd = Pierd::start_with(options).await;
    let conditions = conditions(&pierd).await;
    let network = condition(&conditions, "NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network.message.contains("no CNI network configuration"),
        "{}",
        network.message
    );
    let runtime = condition(&conditions, "RuntimeReady");
    assert!(!runtime.status);
    assert!(
        runtime.message.contains("/nonexistent/runc"),
        "{}",
        runtime.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_not_ready_names_a_missing_plugin() {
    let conflist = r#"{"cniVersion":"1.0.0","name":"odd","plugins":[{"type":"no-such-plugin"}]}"#;
    let options = PierdOptions {
        cni_files: vec![("05-odd.conflist".into(), conflist.into())],
        ..Default::default()
    };
    let pierd = Pierd::start_with(options).await;
    let conditions = conditions(&pierd).await;
    let network = condition(&conditions, "NetworkReady");
    assert!(!network.status);
    assert!(
        network.message.contains("no-such-plugin"),
        "{}",
        network.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_mode_0660() {
    let pierd = Pierd::start().await;
    let meta = std::fs::metadata(pierd.socket()).expect("stat socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pierd_on_the_same_socket_is_refused() {
    let pierd = Pierd::start().await;
    let (status, log) = Pierd::run_refused(&PierdOptions::default(), pierd.socket());
    assert!(!status.success());
    assert!(log.contains("already serving"), "{log}");
    // The first one is untouched and still answers.
    let version = pierd
        .cri()
        .await
        .runtime
        .version(VersionRequest::default())
        .await;
    assert!(
        version.is_ok(),
        "first pierd stopped answering: {version:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pierd_on_the_same_state_root_is_refused() {
    let pierd = Pierd::start().await;
    let root = pierd.root();
    let options = PierdOptions {
        args: vec!["--root".into(), root.display().to_string()],
        ..Default::default()
    };
    let other_socket = tempfile::tempdir().expect("tempdir");
    let (status, log) = Pierd::run_refused(&options, &other_socket.path().join("pier.sock"));
    assert!(!status.success());
    assert!(log.contains("in use by another pierd"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("pier.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind stale socket"));
    assert!(
        socket.exists(),
        "stale socket file stays after its listener is gone"
    );
    let pierd = Pierd::start_with(PierdOptions {
        socket: Some(socket.clone()),
        ..Default::default()
    })
    .await;
    assert!(
        pierd
            .cri()
            .await
            .runtime
            .version(VersionRequest::default())
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regular_file_at_the_socket_path_is_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pier.sock");
    std::fs::write(&path, "precious").expect("write");
    let (status, log) = Pierd::run_refused(&PierdOptions::default(), &path);
    assert!(!status.success());
    assert!(log.contains("not a socket"), "{log}");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_not_built_yet_answer_unimplemented_with_their_name() {
    let pierd = Pierd::start().await;
    let mut cri = pierd.cri().await;
    let request = CheckpointContainerRequest::default();
    let err = cri
        .runtime
        .checkpoint_container(request)
        .await
        .expect_err("ok?");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
    // The daemon is still there after refusing.
    assert!(cri.runtime.version(VersionRequest::default()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_removes_the_socket() {
    let mut pierd = Pierd::start().await;
    let status = pierd.terminate();
    assert!(
        status.success(),
        "pierd exited with {status}:\n{}",
        pierd.log()
    );
    assert!(!pierd.socket().exists(), "socket left behind");
    assert!(pierd.log().contains("shutting down"), "{}", pierd.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_logged_in_a_span_naming_its_method() {
    let pierd = Pierd::start().await;
    let request = ContainerStatusRequest {
        container_id: "0".repeat(64),
        verbose: false,
    };
    let _ = pierd.cri().await.runtime.container_status(request).await;
    let log = pierd.log();
    assert!(log.contains("method=\"ContainerStatus\""), "{log}");
}
