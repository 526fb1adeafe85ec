//! The CRI ImageService end to end through pierd's socket: pull, list,
//! status, remove and filesystem info against the local registry.

use k8s_cri::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec as CriImageSpec, ImageStatusRequest,
    ListImagesRequest, PullImageRequest, RemoveImageRequest,
};
use pier_tests::{ImageSpec, Pierd, PierdOptions, Registry};

fn spec(image: &str) -> Option<CriImageSpec> {
    Some(CriImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

async fn pierd_for(registry: &Registry, extra: &str) -> Pierd {
    Pierd::start_with(PierdOptions {
        config: format!("[registry]\ninsecure = [\"{}\"]\n{extra}", registry.host()),
        ..Default::default()
    })
    .await
}

async fn pull(pierd: &Pierd, image: &str) -> Result<String, tonic::Status> {
    let mut cri = pierd.cri().await;
    let response = cri
        .images
        .pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().image_ref)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_list_status_and_remove_an_image() {
    let registry = Registry::start();
    let pushed = ImageSpec::default()
        .user("pier")
        .expose("8080/tcp")
        .file("/etc/pier-test/message", "second layer\n", 0o644)
        .push(&registry, "e2e/busybox:1")
        .await;
    let pierd = pierd_for(&registry, "").await;
    let mut cri = pierd.cri().await;

    assert_eq!(
        pull(&pierd, &pushed.reference).await.expect("pull"),
        pushed.id
    );

    let images = cri
        .images
        .list_images(ListImagesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .images;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, pushed.id);
    assert_eq!(images[0].repo_tags, vec![pushed.reference.clone()]);
    let repo = pushed.reference.rsplit_once(':').expect("tag").0;
    assert_eq!(
        images[0].repo_digests,
        vec![format!("{repo}@{}", pushed.manifest_digest)]
    );
    assert_eq!(images[0].username, "pier");
    assert!(images[0].size > 0);

    let filtered = cri
        .images
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec("busybox"),
            }),
        })
        .await
        .expect("list filtered")
        .into_inner()
        .images;
    assert!(filtered.is_empty());

    let status = cri
        .images
        .image_status(ImageStatusRequest {
            image: spec(&pushed.id),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.image.expect("image").id, pushed.id);
    assert!(
        status.info["info"].contains("8080/tcp"),
        "{:?}",
        status.info
    );

    let fs = cri
        .images
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .expect("imagefsinfo")
        .into_inner();
    let used = fs.image_filesystems[0]
        .used_bytes
        .as_ref()
        .expect("bytes")
        .value;
    assert!(used > 100_000, "busybox is in the layers: {used}");
    assert!(!fs.container_filesystems.is_empty());

    for _ in 0..2 {
        cri.images
            .remove_image(RemoveImageRequest {
                image: spec(&pushed.reference),
            })
            .await
            .expect("remove is idempotent");
    }
    let status = cri
        .images
        .image_status(ImageStatusRequest {
            image: spec(&pushed.reference),
            verbose: false,
        })
        .await
        .expect("status of an absent image")
        .into_inner();
    assert!(status.image.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serves_registry_k8s_io_and_images_survive_a_restart() {
    let registry = Registry::start();
    let pushed = ImageSpec::default().push(&registry, "pause:3.10").await;
    let mirrors = format!(
        "[registry.mirrors]\n\"registry.k8s.io\" = [\"http://{}\"]\n",
        registry.host()
    );
    let mut pierd = pierd_for(&registry, &mirrors).await;
    assert_eq!(
        pull(&pierd, "registry.k8s.io/pause:3.10")
            .await
            .expect("pull via mirror"),
        pushed.id
    );

    pierd.terminate();
    pierd.restart().await;
    let status = pierd
        .cri()
        .await
        .images
        .image_status(ImageStatusRequest {
            image: spec("registry.k8s.io/pause:3.10"),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.image.expect("kept across restart").id, pushed.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_errors_name_the_image_and_the_cause() {
    let registry = Registry::start();
    let pierd = pierd_for(&registry, "").await;

    let missing = format!("{}/e2e/none:404", registry.host());
    let err = pull(&pierd, &missing).await.expect_err("no such tag");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    assert!(err.message().contains("e2e/none:404"), "{}", err.message());

    let err = pull(&pierd, "").await.expect_err("empty");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let dead = format!("127.0.0.1:{}", pier_tests::free_port());
    let mut cri = pierd.cri().await;
    let err = cri
        .images
        .pull_image(PullImageRequest {
            image: spec(&format!("{dead}/e2e/busybox:1")),
            auth: Some(AuthConfig {
                username: "u".into(),
                password: "hunter2".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("unreachable");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert!(!err.message().contains("hunter2"));
    assert!(!pierd.log().contains("hunter2"));
}
