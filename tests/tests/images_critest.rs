//! critest's "Image Manager" specs (cri-tools pkg/validate/image.go) and
//! its image identifier checks, run the way critest is run on an air-gapped
//! node: `--registry-mirror` points docker.io, registry.k8s.io and gcr.io at
//! a local registry holding images the tests build, under the names the
//! specs use.

use std::time::{Duration, Instant};

use k8s_cri::v1::{
    Image, ImageSpec as CriImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest,
    RemoveImageRequest,
};
use pier_tests::{Cri, ImageSpec, Layer, Pierd, PierdOptions, Registry};

/// critest's image registry prefix.
const GCR: &str = "gcr.io/k8s-staging-cri-tools/";
/// Its repositories on the local mirror.
const GCR_REPO: &str = "k8s-staging-cri-tools/";

fn spec(image: &str) -> Option<CriImageSpec> {
    Some(CriImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// A pierd started as critest would be run against it: every public
/// registry the specs name is mirrored by `registry`, given on the command
/// line; the mirror is plain HTTP.
async fn pierd_mirroring(registry: &Registry) -> Pierd {
    let mirror = format!("http://{}", registry.host());
    let mut args = vec!["--insecure-registry".to_owned(), "127.0.0.1".to_owned()];
    for upstream in ["docker.io", "registry.k8s.io", "gcr.io"] {
        args.push("--registry-mirror".into());
        args.push(format!("{upstream}={mirror}"));
    }
    Pierd::start_with(PierdOptions {
        args,
        ..Default::default()
    })
    .await
}

async fn pull(cri: &mut Cri, image: &str) -> String {
    cri.images
        .pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("PullImage {image}: {}", e.message()))
        .into_inner()
        .image_ref
}

async fn status(cri: &mut Cri, image: &str) -> Option<Image> {
    cri.images
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {}", e.message()))
        .into_inner()
        .image
}

async fn list(cri: &mut Cri) -> Vec<Image> {
    cri.images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

/// critest's `removeImage`: look the image up, remove it by id.
async fn remove(cri: &mut Cri, image: &str) {
    if let Some(found) = status(cri, image).await {
        cri.images
            .remove_image(RemoveImageRequest {
                image: spec(&found.id),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveImage {}: {}", found.id, e.message()));
    }
}

/// critest's `testPullPublicImage`: pull, check status, remove, check gone.
async fn pull_check_remove(cri: &mut Cri, image: &str, check: impl FnOnce(&Image)) {
    remove(cri, image).await;
    let image_ref = pull(cri, image).await;
    let found = status(cri, image).await.expect("status after pull");
    assert_eq!(
        found.id, image_ref,
        "Image.id is PullImageResponse.image_ref"
    );
    assert!(found.size > 0);
    check(&found);
    remove(cri, image).await;
    assert!(status(cri, image).await.is_none(), "{image} removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_images_pull_by_tag_without_tag_and_by_digest() {
    let registry = Registry::start();
    let base = ImageSpec::default();
    base.push(&registry, &format!("{GCR_REPO}test-image-tag:test"))
        .await;
    base.clone()
        .label("image", "latest")
        .push(&registry, &format!("{GCR_REPO}test-image-latest:latest"))
        .await;
    let digested = base
        .clone()
        .label("image", "digest")
        .push(&registry, &format!("{GCR_REPO}test-image-digest:pushed"))
        .await;
    let pierd = pierd_mirroring(&registry).await;
    let mut cri = pierd.cri().await;

    let with_tag = format!("{GCR}test-image-tag:test");
    pull_check_remove(&mut cri, &with_tag, |s| {
        assert_eq!(s.repo_tags, [with_tag.as_str()]);
    })
    .await;

    let without_tag = format!("{GCR}test-image-latest");
    pull_check_remove(&mut cri, &without_tag, |s| {
        assert_eq!(s.repo_tags, [format!("{without_tag}:latest")]);
    })
    .await;

    let with_digest = format!("{GCR}test-image-digest@{}", digested.manifest_digest);
    pull_check_remove(&mut cri, &with_digest, |s| {
        assert!(s.repo_tags.is_empty(), "{:?}", s.repo_tags);
        assert_eq!(s.repo_digests, [with_digest.as_str()]);
    })
    .await;

    // A tag next to a digest is only a hint, as in docker and containerd.
    let tag_and_digest = format!("{GCR}test-image-digest:pushed@{}", digested.manifest_digest);
    pull_check_remove(&mut cri, &tag_and_digest, |s| {
        assert!(s.repo_tags.is_empty(), "{:?}", s.repo_tags);
        assert_eq!(s.repo_digests, [with_digest.as_str()]);
    })
    .await;

    // A short docker.io name, as a pod spec gives it, normalised.
    ImageSpec::default()
        .push(&registry, "library/busybox:1.36")
        .await;
    pull_check_remove(&mut cri, "busybox:1.36", |s| {
        assert_eq!(s.repo_tags, ["docker.io/library/busybox:1.36"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_whose_caller_gives_up_fails_the_call_and_still_finishes() {
    let registry = Registry::start();
    // critest's deadline is 1ms; one that lands in the middle of a pull of
    // 30 layers (about a second here) surely reaches pierd first, so what
    // pierd does with an abandoned pull shows.
    let image = (0..29).fold(ImageSpec::default(), |image, i| {
        image.layer(Layer::new().file(&format!("/layers/{i}"), format!("{i}")))
    });
    image
        .push(&registry, &format!("{GCR_REPO}test-image-tag:test"))
        .await;
    let pierd = pierd_mirroring(&registry).await;
    let mut cri = pierd.cri().await;
    let image = format!("{GCR}test-image-tag:test");

    let mut request = tonic::Request::new(PullImageRequest {
        image: spec(&image),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(100));
    let err = cri
        .images
        .pull_image(request)
        .await
        .expect_err("the deadline passes mid-pull");
    // Go clients report their own deadline as DEADLINE_EXCEEDED; tonic's
    // transport reports the expired grpc-timeout as CANCELLED.
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );

    // The pull itself ran on and the image is complete.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&mut cri, &image).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the abandoned pull never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list(&mut cri).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_status_supports_every_kind_of_reference_and_reports_the_user() {
    let registry = Registry::start();
    let all = ImageSpec::default()
        .push(&registry, &format!("{GCR_REPO}test-image-tag:all"))
        .await;
    for (repo, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:users"),
        ("test-image-user-username-group", "www-data:www-data"),
    ] {
        ImageSpec::default()
            .user(user)
            .push(&registry, &format!("{GCR_REPO}{repo}:latest"))
            .await;
    }
    let pierd = pierd_mirroring(&registry).await;
    let mut cri = pierd.cri().await;

    let name = format!("{GCR}test-image-tag:all");
    remove(&mut cri, &name).await;
    let image_ref = pull(&mut cri, &name).await;
    assert_eq!(image_ref, all.id);
    let found = status(&mut cri, &name).await.expect("status by name");
    assert_eq!(status(&mut cri, &found.id).await.as_ref(), Some(&found));
    assert!(!found.repo_tags.is_empty() && !found.repo_digests.is_empty());
    for name in found.repo_tags.iter().chain(&found.repo_digests) {
        assert_eq!(
            status(&mut cri, name).await.as_ref(),
            Some(&found),
            "{name}"
        );
    }
    // What crictl shows: the id without `sha256:`, or its first 12 digits.
    let hex = found.id.trim_start_matches("sha256:");
    for short in [hex, &hex[..12]] {
        assert_eq!(
            status(&mut cri, short).await.as_ref(),
            Some(&found),
            "{short}"
        );
    }
    remove(&mut cri, &name).await;
    assert!(status(&mut cri, &name).await.is_none());

    for (repo, uid, username) in [
        ("test-image-user-uid", 1002, ""),
        ("test-image-user-username", 0, "www-data"),
        ("test-image-user-uid-group", 1003, ""),
        ("test-image-user-username-group", 0, "www-data"),
    ] {
        let image = format!("{GCR}{repo}");
        pull(&mut cri, &image).await;
        let found = status(&mut cri, &image).await.expect("pulled");
        assert_eq!(found.uid.map(|u| u.value).unwrap_or(0), uid, "{repo}");
        assert_eq!(found.username, username, "{repo}");
        remove(&mut cri, &image).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_and_removal_follow_the_image_not_the_name() {
    let registry = Registry::start();
    let different: Vec<String> = (1..=3)
        .map(|n| format!("{GCR}test-image-{n}:latest"))
        .collect();
    for n in 1..=3 {
        ImageSpec::default()
            .label("n", &n.to_string())
            .push(&registry, &format!("{GCR_REPO}test-image-{n}:latest"))
            .await;
    }
    let same: Vec<String> = (1..=3)
        .map(|n| format!("{GCR}test-image-tags:{n}"))
        .collect();
    let shared = ImageSpec::default().label("shared", "yes");
    for n in 1..=3 {
        shared
            .push(&registry, &format!("{GCR_REPO}test-image-tags:{n}"))
            .await;
    }
    // The same image under the names several registries give it.
    let across = ImageSpec::default().label("across", "registries");
    across
        .push(&registry, &format!("{GCR_REPO}test-image-predefined:1"))
        .await;
    across.push(&registry, "pause:3.10").await;
    across.push(&registry, "library/pause:3.10").await;
    let pierd = pierd_mirroring(&registry).await;
    let mut cri = pierd.cri().await;

    // "listImage should get exactly 3 image in the result list"
    let mut ids = Vec::new();
    for name in &different {
        ids.push(pull(&mut cri, name).await);
    }
    let images = list(&mut cri).await;
    for (id, name) in ids.iter().zip(&different) {
        let image = images.iter().find(|i| &i.id == id).expect("listed");
        assert_eq!(image.repo_tags, [name.as_str()]);
    }
    for name in &different {
        remove(&mut cri, name).await;
    }

    // "listImage should get exactly 3 repoTags in the result image"
    let mut ids = Vec::new();
    for name in &same {
        ids.push(pull(&mut cri, name).await);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one image under three tags");
    let images = list(&mut cri).await;
    let image = images.iter().find(|i| i.id == ids[0]).expect("listed");
    let mut tags = image.repo_tags.clone();
    tags.sort();
    assert_eq!(tags, same);

    // "removing image by one tag should remove all tags"
    remove(&mut cri, &same[0]).await;
    for name in same.iter().chain(&ids) {
        assert!(status(&mut cri, name).await.is_none(), "{name} is gone");
    }

    // "removing image from one registry should remove all tags from other
    // registries", and the image id is the same whichever registry it came from.
    let names = [
        format!("{GCR}test-image-predefined:1"),
        "registry.k8s.io/pause:3.10".to_owned(),
        "docker.io/library/pause:3.10".to_owned(),
    ];
    let mut ids = Vec::new();
    for name in &names {
        ids.push(pull(&mut cri, name).await);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one id across registries: {ids:?}");
    let found = status(&mut cri, "pause:3.10").await.expect("short name");
    let mut tags = found.repo_tags.clone();
    tags.sort();
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(tags, expected);
    remove(&mut cri, &names[1]).await;
    for name in names.iter().chain(&ids) {
        assert!(status(&mut cri, name).await.is_none(), "{name} is gone");
    }
    assert!(list(&mut cri).await.is_empty());
}
