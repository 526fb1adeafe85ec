//! Pulling from registries that want credentials, through pierd's socket:
//! basic auth (htpasswd), the registry token flow with a password, an
//! identity token (OAuth2 refresh-token grant) or a registry token, and
//! mirrors, which never get the credentials meant for the registry. Every
//! failure names the image and the registry, stores nothing, and no secret
//! reaches pierd's log.

use base64::Engine as _;
use k8s_cri::v1::{
    AuthConfig, ImageSpec as CriImageSpec, ListImagesRequest, PullImageRequest, RemoveImageRequest,
};
use pier_tests::token_server::SERVICE;
use pier_tests::{ImageSpec, Pierd, PierdOptions, Registry};

const PASSWORD: &str = "basic-secret-7f3a";
const WRONG: &str = "wrong-secret-91c2";
const IDENTITY_TOKEN: &str = "identity-token-5d8e";

fn spec(image: &str) -> Option<CriImageSpec> {
    Some(CriImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

/// A pierd that talks plain HTTP to 127.0.0.1 and logs everything at debug
/// level, so that a leaked secret would show.
async fn pierd(extra_config: &str) -> Pierd {
    Pierd::start_with(PierdOptions {
        config: format!("[registry]\ninsecure = [\"127.0.0.1\"]\n{extra_config}"),
        args: vec!["--log-level".into(), "debug".into()],
        ..Default::default()
    })
    .await
}

async fn pull(
    pierd: &Pierd,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    let response = pierd
        .cri()
        .await
        .images
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().image_ref)
}

async fn remove(pierd: &Pierd, image: &str) {
    pierd
        .cri()
        .await
        .images
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .expect("RemoveImage");
}

fn password(user: &str, password: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        username: user.into(),
        password: password.into(),
        ..Default::default()
    })
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// No image, no layer, no blob: a failed pull left the store as it was.
async fn assert_nothing_stored(pierd: &Pierd) {
    let images = pierd
        .cri()
        .await
        .images
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(images.is_empty(), "{images:?}");
    assert!(entries(&pierd.root().join("layers")).is_empty());
    assert!(entries(&pierd.root().join("blobs/sha256")).is_empty());
}

fn assert_refused(err: &tonic::Status, image: &str, registry: &str, detail: &str) {
    assert_eq!(
        err.code(),
        tonic::Code::Unauthenticated,
        "{}",
        err.message()
    );
    for part in [image, registry, detail] {
        assert!(
            err.message().contains(part),
            "{part:?} in {}",
            err.message()
        );
    }
}

fn assert_not_logged(pierd: &Pierd, secrets: &[&str]) {
    let log = pierd.log();
    assert!(log.contains("pull"), "the log has pull records to search");
    for secret in secrets {
        assert!(!log.contains(secret), "{secret:?} is in pierd's log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_takes_a_password_or_an_auth_string_and_refuses_anything_else() {
    let registry = Registry::with_htpasswd("pier", PASSWORD);
    let pushed = ImageSpec::default()
        .push(&registry, "private/busybox:1")
        .await;
    let pierd = pierd("").await;
    let host = registry.host();

    let err = pull(&pierd, &pushed.reference, None).await.unwrap_err();
    assert_refused(&err, &pushed.reference, &host, "none were sent");
    assert_nothing_stored(&pierd).await;

    let err = pull(&pierd, &pushed.reference, password("pier", WRONG))
        .await
        .unwrap_err();
    assert_refused(&err, &pushed.reference, &host, "refused the credentials");
    assert!(!err.message().contains(WRONG));
    assert_nothing_stored(&pierd).await;

    let id = pull(&pierd, &pushed.reference, password("pier", PASSWORD))
        .await
        .expect("pull with username and password");
    assert_eq!(id, pushed.id);
    remove(&pierd, &pushed.reference).await;

    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("pier:{PASSWORD}"));
    let auth = AuthConfig {
        auth: encoded.clone(),
        server_address: host.clone(),
        ..Default::default()
    };
    let id = pull(&pierd, &pushed.reference, Some(auth))
        .await
        .expect("pull with an auth string");
    assert_eq!(id, pushed.id);

    assert_not_logged(&pierd, &[PASSWORD, WRONG, &encoded]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_registry_takes_a_password_an_identity_token_or_a_registry_token() {
    let registry = Registry::with_token_auth("pier", PASSWORD, IDENTITY_TOKEN);
    let pushed = ImageSpec::default()
        .push(&registry, "tokened/busybox:1")
        .await;
    let tokens = registry.token_server().expect("token server");
    let pierd = pierd("").await;
    let host = registry.host();

    let err = pull(&pierd, &pushed.reference, None).await.unwrap_err();
    assert_refused(&err, &pushed.reference, &host, "none were sent");
    assert_nothing_stored(&pierd).await;

    // A password goes through Docker's token flow (a GET with basic auth).
    let id = pull(&pierd, &pushed.reference, password("pier", PASSWORD))
        .await
        .expect("pull with a password");
    assert_eq!(id, pushed.id);
    remove(&pierd, &pushed.reference).await;

    // An identity token is a refresh token: pierd trades it at the realm.
    let identity = |token: &str| {
        Some(AuthConfig {
            identity_token: token.into(),
            server_address: host.clone(),
            ..Default::default()
        })
    };
    let before = tokens.requests().len();
    let id = pull(&pierd, &pushed.reference, identity(IDENTITY_TOKEN))
        .await
        .expect("pull with an identity token");
    assert_eq!(id, pushed.id);
    let exchange = &tokens.requests()[before..];
    assert!(
        exchange.iter().any(|r| r.method == "POST"
            && r.grant == "refresh_token"
            && r.client_id == "pier"
            && r.service == SERVICE
            && r.scope == "repository:tokened/busybox:pull"
            && r.granted),
        "{exchange:?}"
    );
    assert!(
        exchange.iter().all(|r| r.method == "POST"),
        "no token was asked for by a GET: {exchange:?}"
    );
    remove(&pierd, &pushed.reference).await;

    let err = pull(&pierd, &pushed.reference, identity(WRONG))
        .await
        .unwrap_err();
    assert_refused(&err, &pushed.reference, &host, "refused the identity token");
    assert_nothing_stored(&pierd).await;

    // A registry token is sent as it is.
    let reference = pushed.reference.parse().expect("reference");
    let token = pier_tests::image::plain_http_client()
        .auth(
            &reference,
            &registry.push_auth(),
            oci_client::RegistryOperation::Pull,
        )
        .await
        .expect("token from the token server")
        .expect("a bearer token");
    let before = tokens.requests().len();
    let id = pull(
        &pierd,
        &pushed.reference,
        Some(AuthConfig {
            registry_token: token.clone(),
            ..Default::default()
        }),
    )
    .await
    .expect("pull with a registry token");
    assert_eq!(id, pushed.id);
    assert_eq!(
        tokens.requests().len(),
        before,
        "the token server was not asked"
    );
    remove(&pierd, &pushed.reference).await;

    let err = pull(
        &pierd,
        &pushed.reference,
        Some(AuthConfig {
            registry_token: "not-a-token".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert_refused(&err, &pushed.reference, &host, "refused the credentials");

    assert_not_logged(&pierd, &[PASSWORD, WRONG, IDENTITY_TOKEN, &token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_the_request_credentials_only_when_they_name_it() {
    // The image's own registry is down; its mirror wants a password.
    let mirror = Registry::with_htpasswd("pier", PASSWORD);
    ImageSpec::default().push(&mirror, "team/app:1").await;
    let upstream = format!("127.0.0.1:{}", pier_tests::free_port());
    let pierd = pierd(&format!(
        "[registry.mirrors]\n\"{upstream}\" = [\"http://{}\"]\n",
        mirror.host()
    ))
    .await;
    let image = format!("{upstream}/team/app:1");

    let for_upstream = Some(AuthConfig {
        username: "pier".into(),
        password: PASSWORD.into(),
        server_address: upstream.clone(),
        ..Default::default()
    });
    let err = pull(&pierd, &image, for_upstream).await.unwrap_err();
    assert_refused(&err, &image, &mirror.host(), "none were sent");
    assert_nothing_stored(&pierd).await;

    let for_mirror = Some(AuthConfig {
        username: "pier".into(),
        password: PASSWORD.into(),
        server_address: format!("http://{}", mirror.host()),
        ..Default::default()
    });
    pull(&pierd, &image, for_mirror)
        .await
        .expect("credentials that name the mirror are sent to it");
    assert_not_logged(&pierd, &[PASSWORD]);
}
