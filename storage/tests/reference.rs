//! Reference normalisation as kubelet, crictl and containerd expect it.

use pier_storage::{ErrorKind, ImageRef, ImageSpec};

fn normalised(reference: &str) -> String {
    ImageRef::parse(reference).unwrap().to_string()
}

#[test]
fn docker_hub_short_names_get_registry_library_and_latest() {
    assert_eq!(normalised("busybox"), "docker.io/library/busybox:latest");
    assert_eq!(
        normalised("library/busybox:1.36"),
        "docker.io/library/busybox:1.36"
    );
    assert_eq!(
        normalised("docker.io/busybox"),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(
        normalised("index.docker.io/library/busybox"),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(normalised("someuser/app:v2"), "docker.io/someuser/app:v2");
}

#[test]
fn hosts_with_ports_and_localhost_are_registries() {
    assert_eq!(
        normalised("127.0.0.1:5000/test/app:v1"),
        "127.0.0.1:5000/test/app:v1"
    );
    assert_eq!(normalised("localhost/app"), "localhost/app:latest");
    assert_eq!(
        normalised("registry.k8s.io/pause:3.10"),
        "registry.k8s.io/pause:3.10"
    );
    let r = ImageRef::parse("127.0.0.1:5000/test/app").unwrap();
    assert_eq!(
        (r.registry(), r.repository(), r.tag()),
        ("127.0.0.1:5000", "test/app", Some("latest"))
    );
}

#[test]
fn digests_alone_or_with_a_tag_are_looked_up_by_digest() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let by_digest = ImageRef::parse(&format!("busybox@{digest}")).unwrap();
    assert_eq!(by_digest.tag(), None);
    assert_eq!(
        by_digest.lookup_name(),
        format!("docker.io/library/busybox@{digest}")
    );
    let both = ImageRef::parse(&format!("busybox:1.36@{digest}")).unwrap();
    assert_eq!(both.tag(), Some("1.36"));
    assert_eq!(
        both.lookup_name(),
        format!("docker.io/library/busybox@{digest}")
    );
    assert_eq!(
        both.to_string(),
        format!("docker.io/library/busybox:1.36@{digest}")
    );
}

#[test]
fn malformed_references_are_invalid_arguments() {
    for bad in [
        "",
        "UPPER/case",
        "busybox@sha256:short",
        "a//b",
        "busybox@md5:abc",
    ] {
        let err = ImageRef::parse(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
}

#[test]
fn image_ids_are_recognised_with_or_without_prefix() {
    let hex = "0123456789abcdef".repeat(4);
    let id = format!("sha256:{hex}");
    assert_eq!(ImageSpec::parse(&hex).unwrap(), ImageSpec::Id(id.clone()));
    assert_eq!(ImageSpec::parse(&id).unwrap(), ImageSpec::Id(id.clone()));
    assert!(matches!(
        ImageSpec::parse("busybox").unwrap(),
        ImageSpec::Reference(_)
    ));
}
