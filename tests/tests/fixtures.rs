//! The shared fixtures themselves: a local registry and busybox images.

use oci_client::secrets::RegistryAuth;
use pier_tests::Registry;
use pier_tests::image::{ImageSpec, plain_http_client, sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_image_is_pushed_and_served_by_the_local_registry() {
    let registry = Registry::start();
    let spec = ImageSpec::default()
        .entrypoint(&["/bin/sh", "-c"])
        .cmd(&["echo hello"])
        .env("GREETING=hi")
        .user("pier")
        .working_dir("/home/pier")
        .expose("8080/tcp")
        .file("/etc/pier-test/message", "from a second layer\n", 0o600);
    let pushed = spec.push(&registry, "fixture/busybox:1").await;
    assert!(pushed.reference.starts_with("127.0.0.1:"));

    let client = plain_http_client();
    let reference = pushed.reference.parse().expect("reference");
    let (manifest, digest, config) = client
        .pull_manifest_and_config(&reference, &RegistryAuth::Anonymous)
        .await
        .expect("pull manifest");
    assert_eq!(digest, pushed.manifest_digest);
    assert_eq!(
        manifest.layers.len(),
        2,
        "busybox base plus the extra-files layer"
    );
    assert_eq!(sha256(config.as_bytes()), pushed.id);
    let config: serde_json::Value = serde_json::from_str(&config).expect("config json");
    assert_eq!(config["config"]["User"], "pier");
    assert_eq!(config["config"]["Entrypoint"][0], "/bin/sh");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn same_spec_builds_the_same_digests() {
    let spec = ImageSpec::default().file("/a", "x", 0o644);
    let (a, b) = (spec.build(), spec.build());
    assert_eq!(a.diff_ids, b.diff_ids);
    assert_eq!(a.config, b.config);
}

#[test]
fn base_layer_links_busybox_applets() {
    let built = ImageSpec::default().build();
    let tar = {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(built.layers[0].as_slice())
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    };
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut names = Vec::new();
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        names.push(entry.path().expect("path").display().to_string());
    }
    for expected in [
        "bin/busybox",
        "bin/sh",
        "bin/ls",
        "bin/sleep",
        "etc/passwd",
        "tmp",
    ] {
        assert!(
            names.iter().any(|n| n.trim_end_matches('/') == expected),
            "no {expected}"
        );
    }
}
