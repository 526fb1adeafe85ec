//! Traces of CRI calls over OTLP: the span of a call that carries kubelet's
//! W3C `traceparent` continues kubelet's trace, names its method and pod,
//! and reaches the collector; calls that start their own trace follow the
//! configured sampling rate.

use std::time::Duration;

use k8s_cri::v1::*;
use pier_tests::otlp::Receiver;
use pier_tests::workload::*;
use pier_tests::{Pierd, PierdOptions};

/// A parent as kubelet's otelgrpc interceptor sends it: version 00, trace
/// id, parent span id, flags 01 (sampled).
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_start_continues_the_callers_trace() {
    let receiver = Receiver::start().await;
    let mut pierd = Pierd::start_with(PierdOptions {
        args: vec![
            "--tracing-endpoint".into(),
            receiver.endpoint(),
            // Traces pierd would start itself are all dropped; the caller's
            // sampled one must still be kept.
            "--tracing-sampling-rate".into(),
            "0".into(),
        ],
        ..Default::default()
    })
    .await;
    let logs = tempfile::tempdir().expect("tempdir");
    let mut config = pod("traced", logs.path());
    pod_security(&mut config).namespace_options = Some(NamespaceOption {
        network: NamespaceMode::Node as i32,
        ..Default::default()
    });
    let mut cri = pierd.cri().await.runtime;
    let mut request = tonic::Request::new(RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    });
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("metadata value"));
    let pod_id = cri
        .run_pod_sandbox(request)
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    remove_pod(&mut cri, &pod_id).await;
    cri.version(VersionRequest::default())
        .await
        .expect("Version");
    // Stopping flushes what the exporter still holds.
    assert!(pierd.terminate().success(), "{}", pierd.log());

    let span = receiver
        .wait_for(|r| r.span.name == "RunPodSandbox", Duration::from_secs(20))
        .await;
    assert_eq!(hex(&span.span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.span.parent_span_id), PARENT_ID);
    assert_eq!(span.attribute("pod_id").as_deref(), Some(pod_id.as_str()));
    assert_eq!(span.service, "pierd");
    // SERVER, as OTLP numbers span kinds.
    assert_eq!(span.span.kind, 2);
    let roots: Vec<_> = receiver
        .spans()
        .into_iter()
        .filter(|r| hex(&r.span.trace_id) != TRACE_ID)
        .map(|r| r.span.name)
        .collect();
    assert!(roots.is_empty(), "sampled out, yet exported: {roots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_parent_start_their_own_trace() {
    let receiver = Receiver::start().await;
    let pierd = Pierd::start_with(PierdOptions {
        args: vec!["--tracing-endpoint".into(), receiver.endpoint()],
        ..Default::default()
    })
    .await;
    let mut cri = pierd.cri().await.runtime;
    let missing = cri
        .container_status(ContainerStatusRequest {
            container_id: "no-such-container".into(),
            verbose: false,
        })
        .await
        .expect_err("unknown container");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    // Exported while pierd runs, not only when it stops (the batch goes
    // out every 5 seconds).
    let span = receiver
        .wait_for(
            |r| r.span.name == "ContainerStatus",
            Duration::from_secs(20),
        )
        .await;
    assert!(span.span.parent_span_id.is_empty(), "{span:?}");
    assert_eq!(span.span.trace_id.len(), 16);
    assert_ne!(hex(&span.span.trace_id), TRACE_ID);
}
