//! Pulling from a local `docker-registry`: formats, verification, layer
//! sharing, status/list/remove, and the failures a user must understand.

mod common;

use common::{Blob, Registry, TarLayer, TestStore, config_json};
use pier_storage::{Auth, ErrorKind, ImageError, PullError};

fn base_layer() -> Vec<u8> {
    TarLayer::new()
        .dir("bin")
        .file("bin/busybox", b"#!busybox")
        .hardlink("bin/sh", "bin/busybox")
        .dir("etc")
        .file("etc/motd", b"hello")
        .file("etc/hostname", b"base")
        .finish()
}

fn app_layer(tag: &str) -> Vec<u8> {
    TarLayer::new()
        .dir("app")
        .file("app/version", tag.as_bytes())
        .file("etc/.wh.motd", b"")
        .finish()
}

async fn push_two_layer(reg: &Registry, repo_tag: &str) -> (String, String, Vec<Blob>) {
    let layers = vec![Blob::gzip(&base_layer()), Blob::gzip(&app_layer(repo_tag))];
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = config_json(&diff_ids, "amd64", "1000:1000");
    let (manifest, id) = reg.push_image(repo_tag, &layers, &config, false).await;
    (manifest, id, layers)
}

fn pull_cause(err: ImageError) -> PullError {
    match err {
        ImageError::Pull { cause, .. } => cause,
        other => panic!("expected a pull error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_records_image_and_status_finds_it_by_tag_digest_and_id() {
    let reg = Registry::start();
    let (manifest, id, _) = push_two_layer(&reg, "test/app:v1").await;
    let t = TestStore::new(&[reg.host()]).await;
    let reference = format!("{}/test/app:v1", reg.host());

    let image = t.store.pull(&reference, &Auth::default()).await.unwrap();
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, vec![reference.clone()]);
    assert_eq!(
        image.repo_digests,
        vec![format!("{}/test/app@{manifest}", reg.host())]
    );
    assert_eq!(image.uid, Some(1000));
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);
    assert_eq!(image.config.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(image.layers.len(), 2);
    assert!(image.size > 0);

    let layers = t.layer_dirs();
    assert_eq!(layers.len(), 2);
    let base = t
        .root()
        .join("layers")
        .join(image.layers[0].trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(base.join("etc/motd")).unwrap(), b"hello");

    for name in [
        reference.clone(),
        image.repo_digests[0].clone(),
        id.clone(),
        id[7..].to_owned(),
    ] {
        let found = t.store.status(&name).await.unwrap();
        assert_eq!(found.map(|i| i.id), Some(id.clone()), "status {name}");
    }
    assert!(
        t.store
            .status(&format!("{}/test/app:v2", reg.host()))
            .await
            .unwrap()
            .is_none()
    );
    let short = t.store.status(&id[7..19]).await.unwrap();
    assert_eq!(short.map(|i| i.id), Some(id.clone()), "a unique id prefix");
    assert_eq!(t.store.list(None).await.unwrap().len(), 1);
    assert_eq!(t.store.list(Some(&reference)).await.unwrap().len(), 1);
    assert!(t.store.list(Some("busybox")).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_by_tag_deletes_unshared_layers_and_is_idempotent() {
    let reg = Registry::start();
    push_two_layer(&reg, "test/a:v1").await;
    push_two_layer(&reg, "test/b:v1").await;
    let t = TestStore::new(&[reg.host()]).await;
    let a = t
        .store
        .pull(&format!("{}/test/a:v1", reg.host()), &Auth::default())
        .await
        .unwrap();
    let b = t
        .store
        .pull(&format!("{}/test/b:v1", reg.host()), &Auth::default())
        .await
        .unwrap();
    assert_eq!(a.layers[0], b.layers[0], "the base layer is shared");
    assert_eq!(t.layer_dirs().len(), 3, "the shared layer is stored once");

    t.store
        .remove(&format!("{}/test/a:v1", reg.host()))
        .await
        .unwrap();
    assert!(t.store.status(&a.id).await.unwrap().is_none());
    assert_eq!(t.layer_dirs().len(), 2, "b's layers stay");
    t.store
        .remove(&format!("{}/test/a:v1", reg.host()))
        .await
        .unwrap();
    t.store.remove(&b.id).await.unwrap();
    assert!(t.layer_dirs().is_empty());
    assert!(common::list_dir(&t.root().join("blobs/sha256")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_is_refused_while_a_container_uses_the_image() {
    let reg = Registry::start();
    push_two_layer(&reg, "test/app:v1").await;
    let t = TestStore::new(&[reg.host()]).await;
    let image = t
        .store
        .pull(&format!("{}/test/app:v1", reg.host()), &Auth::default())
        .await
        .unwrap();
    {
        let db = t.db.lock().unwrap();
        db.insert_sandbox(&pier_storage::SandboxRecord {
            id: "s1".into(),
            name: "pod".into(),
            namespace: "default".into(),
            uid: "u".into(),
            attempt: 0,
            state: "ready".into(),
            created_at: 1,
            runtime_handler: String::new(),
            config: vec![],
            runtime: vec![],
        })
        .unwrap();
        db.insert_container(&pier_storage::ContainerRecord {
            id: "c1".into(),
            sandbox_id: "s1".into(),
            name: "app".into(),
            image_id: image.id.clone(),
            state: "created".into(),
            ..Default::default()
        })
        .unwrap();
    }
    let err = t.store.remove(&image.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("c1"), "{err}");
    assert!(t.store.status(&image.id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_plain_and_docker_schema2_layers_unpack() {
    let reg = Registry::start();
    let zl = Blob::zstd(&TarLayer::new().file("z", b"zstd").finish());
    let pl = Blob::plain(&TarLayer::new().file("p", b"plain").finish());
    let config = config_json(&[zl.diff_id.clone(), pl.diff_id.clone()], "amd64", "");
    reg.push_image("test/formats:v1", &[zl, pl], &config, false)
        .await;
    let gl = Blob::gzip(&TarLayer::new().file("d", b"docker").finish());
    let config = config_json(std::slice::from_ref(&gl.diff_id), "amd64", "nobody");
    reg.push_image("test/docker:v1", &[gl], &config, true).await;

    let t = TestStore::new(&[reg.host()]).await;
    let img = t
        .store
        .pull(&format!("{}/test/formats:v1", reg.host()), &Auth::default())
        .await
        .unwrap();
    let top = t
        .root()
        .join("layers")
        .join(img.layers[1].trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(top.join("p")).unwrap(), b"plain");
    let img = t
        .store
        .pull(&format!("{}/test/docker:v1", reg.host()), &Auth::default())
        .await
        .unwrap();
    assert_eq!((img.uid, img.username.as_str()), (None, "nobody"));
}

#[tokio::test(flavor = "multi_thread")]
async fn index_resolves_to_the_host_platform_or_names_what_exists() {
    let reg = Registry::start();
    let mut entries = Vec::new();
    for arch in ["arm64", "amd64"] {
        let layer = Blob::gzip(&TarLayer::new().file("arch", arch.as_bytes()).finish());
        let config = config_json(std::slice::from_ref(&layer.diff_id), arch, "");
        for repo in ["multi", "armonly"] {
            let tag = format!("test/{repo}:{arch}");
            let (digest, _) = reg
                .push_image(&tag, std::slice::from_ref(&layer), &config, false)
                .await;
            if repo == "multi" {
                entries.push((digest.clone(), reg.manifest_size(&digest), arch));
            }
        }
    }
    let index = reg.push_index("test/multi:v1", &entries).await;
    reg.push_index("test/armonly:v1", &entries[..1]).await;

    let t = TestStore::new(&[reg.host()]).await;
    let img = t
        .store
        .pull(&format!("{}/test/multi:v1", reg.host()), &Auth::default())
        .await
        .unwrap();
    assert_eq!(img.manifest_digest, entries[1].0);
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/test/multi@{index}", reg.host())]
    );
    let by_digest = format!("{}/test/multi@{index}", reg.host());
    assert!(t.store.pull(&by_digest, &Auth::default()).await.is_ok());

    let err = t
        .store
        .pull(&format!("{}/test/armonly:v1", reg.host()), &Auth::default())
        .await;
    let err = err.unwrap_err();
    assert!(err.to_string().contains("linux/amd64") && err.to_string().contains("linux/arm64"));
    assert!(matches!(
        pull_cause(err),
        PullError::PlatformNotFound { .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_truncated_or_mislabelled_blobs_fail_and_store_nothing() {
    let reg = Registry::start();
    let (_, _, layers) = push_two_layer(&reg, "test/corrupt:v1").await;
    let t = TestStore::new(&[reg.host()]).await;
    let reference = format!("{}/test/corrupt:v1", reg.host());

    let file = reg.blob_file(&layers[1].digest());
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(&file, &bad).unwrap();
    let err = t
        .store
        .pull(&reference, &Auth::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("test/corrupt:v1"), "{err}");
    assert!(matches!(pull_cause(err), PullError::DigestMismatch { .. }));
    assert!(t.layer_dirs().is_empty(), "left {:?}", t.layer_dirs());
    assert!(t.store.list(None).await.unwrap().is_empty());

    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let err = t
        .store
        .pull(&reference, &Auth::default())
        .await
        .unwrap_err();
    let cause = pull_cause(err);
    assert!(matches!(cause, PullError::SizeMismatch { .. }), "{cause}");
    assert!(t.layer_dirs().is_empty());

    // A config whose diff id does not match the layer's content.
    let layer = Blob::gzip(&base_layer());
    let wrong = pier_storage::digest::Digest::of(b"something else").to_string();
    let config = config_json(&[wrong], "amd64", "");
    reg.push_image("test/diffid:v1", &[layer], &config, false)
        .await;
    let err = t
        .store
        .pull(&format!("{}/test/diffid:v1", reg.host()), &Auth::default())
        .await;
    let cause = pull_cause(err.unwrap_err());
    assert!(matches!(cause, PullError::DiffIdMismatch { .. }), "{cause}");
    assert!(t.layer_dirs().is_empty());
    assert!(common::list_dir(&t.root().join("layers")).is_empty());
}

/// umoci 0.4 ends a layer's tar right after the last entry's data; Go's
/// archive/tar reads it, so containerd and CRI-O pull such images.
#[tokio::test(flavor = "multi_thread")]
async fn layer_without_tar_padding_or_end_blocks_pulls_but_a_cut_one_does_not() {
    let reg = Registry::start();
    let full = TarLayer::new()
        .dir("etc")
        .file("etc/motd", &[b'm'; 700])
        .finish();
    // etc/ header 0..512, etc/motd header 512..1024, data 1024..1724.
    let unpadded = &full[..1724];
    let layer = Blob::gzip(unpadded);
    let config = config_json(std::slice::from_ref(&layer.diff_id), "amd64", "");
    reg.push_image("test/unpadded:v1", &[layer], &config, false)
        .await;
    let t = TestStore::new(&[reg.host()]).await;
    let image = t
        .store
        .pull(
            &format!("{}/test/unpadded:v1", reg.host()),
            &Auth::default(),
        )
        .await
        .unwrap();
    assert_eq!(image.layers.len(), 1);
    assert_eq!(t.layer_dirs().len(), 1);

    // The same shape cut inside the data: digest and diff id agree with the
    // blob, yet an entry is short, which is data loss.
    let cut = Blob::gzip(&full[..1500]);
    let config = config_json(std::slice::from_ref(&cut.diff_id), "amd64", "");
    reg.push_image("test/cut:v1", &[cut], &config, false).await;
    let err = t
        .store
        .pull(&format!("{}/test/cut:v1", reg.host()), &Auth::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    assert!(matches!(pull_cause(err), PullError::BadLayer { .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn decompression_bomb_stops_at_the_configured_bound() {
    let reg = Registry::start();
    let zeros = vec![0u8; 8 << 20];
    let layer = Blob::gzip(&TarLayer::new().file("bomb", &zeros).finish());
    assert!(layer.data.len() < 100 << 10);
    let config = config_json(std::slice::from_ref(&layer.diff_id), "amd64", "");
    reg.push_image("test/bomb:v1", &[layer], &config, false)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = pier_storage::StoreConfig::new(dir.path().join("root"));
    config.registry.insecure = vec![reg.host()];
    config.max_unpacked_bytes = 1 << 20;
    let t = TestStore::with_config(dir, config).await;
    let err = t
        .store
        .pull(&format!("{}/test/bomb:v1", reg.host()), &Auth::default())
        .await;
    let err = err.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
    assert!(matches!(
        pull_cause(err),
        PullError::TooLarge { limit: 1048576, .. }
    ));
    assert!(t.layer_dirs().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tag_and_unreachable_registry_are_named() {
    let reg = Registry::start();
    let t = TestStore::new(&[reg.host(), format!("127.0.0.1:{}", common::free_port())]).await;
    let err = t
        .store
        .pull(&format!("{}/test/none:v9", reg.host()), &Auth::default())
        .await;
    let err = err.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("test/none:v9"), "{err}");

    let dead = t.config.registry.insecure[1].clone();
    let err = t
        .store
        .pull(&format!("{dead}/test/app:v1"), &Auth::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains("unreachable") && err.to_string().contains(&dead),
        "{err}"
    );

    let err = t
        .store
        .pull("Not A Reference", &Auth::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_download_each_blob_once() {
    let reg = Registry::start();
    let (_, _, layers) = push_two_layer(&reg, "test/app:v1").await;
    let t = TestStore::new(&[reg.host()]).await;
    let reference = format!("{}/test/app:v1", reg.host());
    let pulls = (0..4).map(|_| {
        let (store, reference) = (t.store.clone(), reference.clone());
        tokio::spawn(async move { store.pull(&reference, &Auth::default()).await })
    });
    let ids: Vec<String> = futures_util::future::join_all(pulls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    // Pulling again finds everything present.
    t.store.pull(&reference, &Auth::default()).await.unwrap();
    for layer in &layers {
        assert_eq!(
            reg.blob_gets(&layer.digest()),
            1,
            "layer {} fetched once",
            layer.digest()
        );
    }
    assert_eq!(reg.blob_gets(&ids[0]), 1, "the config is fetched once");
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_serves_a_registry_that_is_not_reachable() {
    let reg = Registry::start();
    push_two_layer(&reg, "pause:3.10").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = pier_storage::StoreConfig::new(dir.path().join("root"));
    config.registry.mirrors.insert(
        "registry.k8s.io".into(),
        vec![format!("http://{}", reg.host())],
    );
    let t = TestStore::with_config(dir, config).await;
    let img = t
        .store
        .pull("registry.k8s.io/pause:3.10", &Auth::default())
        .await
        .unwrap();
    assert_eq!(img.repo_tags, vec!["registry.k8s.io/pause:3.10"]);
    assert!(
        t.store
            .status("registry.k8s.io/pause:3.10")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_registry_needs_the_right_credentials() {
    let reg = Registry::start_with_auth(Some(("pier", "s3cret")));
    push_two_layer(&reg, "private/app:v1").await;
    let t = TestStore::new(&[reg.host()]).await;
    let reference = format!("{}/private/app:v1", reg.host());

    let err = t
        .store
        .pull(&reference, &Auth::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let wrong = Auth {
        username: "pier".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let err = t.store.pull(&reference, &wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!err.to_string().contains("nope"));
    assert!(!format!("{wrong:?}").contains("nope"));

    let encoded = Auth {
        auth: "cGllcjpzM2NyZXQ=".into(),
        ..Default::default()
    };
    t.store.pull(&reference, &encoded).await.unwrap();
}
