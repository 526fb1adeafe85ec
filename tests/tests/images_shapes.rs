//! Image shapes end to end through pierd: layers with whiteouts, an opaque
//! directory and hard links, seen from inside a running container; an
//! index with two platforms; an image of 100 layers; a mirror that serves a
//! registry under a path prefix.

use std::time::Duration;

use k8s_cri::v1::{
    ImageSpec as CriImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest,
};
use pier_tests::image::{host_architecture, push_index};
use pier_tests::workload::{container, exec_out, pod, run, running_pod, wait_exited};
use pier_tests::{ImageSpec, Layer, Pierd, PierdOptions, Registry, TestNetwork};

fn spec(image: &str) -> Option<CriImageSpec> {
    Some(CriImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// A pierd with a pod network that speaks plain HTTP to 127.0.0.1 (any
/// port: the insecure entry names the host alone).
async fn pierd(extra_config: &str) -> Pierd {
    Pierd::start_with(PierdOptions {
        config: format!("[registry]\ninsecure = [\"127.0.0.1\"]\n{extra_config}"),
        network: Some(TestNetwork::new()),
        ..Default::default()
    })
    .await
}

async fn pull(pierd: &Pierd, image: &str) -> Result<String, tonic::Status> {
    let response = pierd
        .cri()
        .await
        .images
        .pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().image_ref)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_opaque_dirs_and_hard_links_show_in_the_container() {
    let registry = Registry::start();
    let lower = Layer::new()
        .file("/data/keep", "keep")
        .file("/data/gone", "gone")
        .file("/data/sub/old", "old")
        .file("/opq/a", "a")
        .file("/opq/b", "b")
        .file("/links/original", "shared")
        .hardlink("/links/twin", "/links/original");
    let upper = Layer::new()
        .whiteout("/data/gone")
        .whiteout("/data/sub")
        .opaque("/opq")
        .file("/opq/new", "new")
        .file("/fresh/one", "1")
        .hardlink("/fresh/two", "/fresh/one");
    let pushed = ImageSpec::default()
        .layer(lower)
        .layer(upper)
        .push(&registry, "shapes/layered:1")
        .await;
    let pierd = pierd("").await;
    assert_eq!(
        pull(&pierd, &pushed.reference).await.expect("pull"),
        pushed.id
    );

    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("layered", logs.path())).await;
    let id = run(
        &mut cri,
        &pod_id,
        &pod,
        container("layered", &pushed.reference, "sleep 600"),
    )
    .await;
    let script = "for f in /data/keep /data/gone /data/sub /data/sub/old /opq/a /opq/b /opq/new; do \
                    if [ -e $f ]; then echo \"$f present\"; else echo \"$f absent\"; fi; done; \
                  /bin/busybox stat -c '%n %i %h' /links/original /links/twin /fresh/one /fresh/two";
    let (code, out) = exec_out(&mut cri, &id, script).await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..7],
        [
            "/data/keep present",
            "/data/gone absent",
            "/data/sub absent",
            "/data/sub/old absent",
            "/opq/a absent",
            "/opq/b absent",
            "/opq/new present",
        ],
        "{out}"
    );
    let inode = |line: &str| -> (String, String) {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields[1].to_owned(), fields[2].to_owned())
    };
    let (original, twin) = (inode(lines[7]), inode(lines[8]));
    assert_eq!(original.0, twin.0, "hard links share an inode: {out}");
    assert_eq!(original.1, "2", "two names for one file: {out}");
    let (one, two) = (inode(lines[9]), inode(lines[10]));
    assert_eq!(one.0, two.0, "hard links in the top layer: {out}");
    assert_ne!(one.0, original.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_resolves_to_the_host_platform_or_names_what_it_has() {
    let registry = Registry::start();
    let foreign = if host_architecture() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let host_image = ImageSpec::default()
        .label("platform", "host")
        .push(&registry, "shapes/multi:host")
        .await;
    let foreign_image = ImageSpec::default()
        .architecture(foreign)
        .label("platform", "foreign")
        .push(&registry, "shapes/multi:foreign")
        .await;
    let host_platform = format!("linux/{}", host_architecture());
    let foreign_platform = format!("linux/{foreign}");
    let both = push_index(
        &registry,
        "shapes/multi:1",
        &[
            (&foreign_image, foreign_platform.as_str()),
            (&host_image, host_platform.as_str()),
        ],
    )
    .await;
    let foreign_only = push_index(
        &registry,
        "shapes/multi:foreign-only",
        &[(&foreign_image, foreign_platform.as_str())],
    )
    .await;
    let pierd = pierd("").await;

    let id = pull(&pierd, &both.reference).await.expect("pull the index");
    assert_eq!(id, host_image.id, "the host's platform is picked");
    let status = pierd
        .cri()
        .await
        .images
        .image_status(ImageStatusRequest {
            image: spec(&both.reference),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("pulled");
    assert_eq!(
        status.repo_digests,
        [format!("{}@{}", both.repository(), both.manifest_digest)],
        "the repo digest is the index's, as kubelet resolves it"
    );

    let err = pull(&pierd, &foreign_only.reference)
        .await
        .expect_err("no manifest for this platform");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    for part in [&foreign_only.reference, &host_platform, &foreign_platform] {
        assert!(
            err.message().contains(part.as_str()),
            "{part} in {}",
            err.message()
        );
    }
    let images = pierd
        .cri()
        .await
        .images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(images.len(), 1, "the failed pull stored nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_a_hundred_layers_runs() {
    let registry = Registry::start();
    // The base layer and 99 more, each adding a file and rewriting /stack.
    let image = (0..99).fold(ImageSpec::default(), |image, i| {
        image.layer(
            Layer::new()
                .file(&format!("/layers/{i}"), format!("layer {i}"))
                .file("/stack", format!("{i}")),
        )
    });
    let pushed = image
        .cmd(&[
            "/bin/sh",
            "-c",
            "echo \"$(ls /layers | wc -l) $(cat /stack) $(cat /layers/0)\"",
        ])
        .push(&registry, "shapes/tall:100")
        .await;
    let pierd = pierd("").await;
    assert_eq!(
        pull(&pierd, &pushed.reference).await.expect("pull"),
        pushed.id
    );

    let logs = tempfile::tempdir().expect("tempdir");
    let mut cri = pierd.cri().await.runtime;
    let (pod_id, pod) = running_pod(&mut cri, pod("tall", logs.path())).await;
    let mut config = container("tall", &pushed.reference, "");
    config.command.clear();
    config.args.clear();
    let id = run(&mut cri, &pod_id, &pod, config).await;
    let status = wait_exited(&mut cri, &id, Duration::from_secs(30)).await;
    assert_eq!(status.exit_code, 0, "{}", status.message);
    let log = std::fs::read_to_string(logs.path().join("tall/0.log")).expect("log");
    let out: Vec<&str> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    assert_eq!(
        out,
        ["99 98 layer 0"],
        "files of every layer, the top one's /stack: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_docker_hub_under_a_path_prefix() {
    let registry = Registry::start();
    let pushed = ImageSpec::default()
        .push(&registry, "hub-proxy/library/busybox:1.36")
        .await;
    let pierd = pierd(&format!(
        "[registry.mirrors]\n\"docker.io\" = [\"http://{}/hub-proxy\"]\n",
        registry.host()
    ))
    .await;
    assert_eq!(pull(&pierd, "busybox:1.36").await.expect("pull"), pushed.id);
    let status = pierd
        .cri()
        .await
        .images
        .image_status(ImageStatusRequest {
            image: spec("docker.io/library/busybox:1.36"),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("pulled");
    assert_eq!(status.repo_tags, ["docker.io/library/busybox:1.36"]);
    assert!(
        registry
            .gets(200)
            .iter()
            .any(|p| p == "/v2/hub-proxy/library/busybox/manifests/1.36"),
        "{:?}",
        registry.gets(200)
    );
}
