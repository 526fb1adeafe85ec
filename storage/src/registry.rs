//! Talking to registries through oci-client: one session per pull, the
//! credentials each endpoint gets, manifest resolution to one platform, and
//! verified blob downloads.

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::auth::{self, Auth, Credentials};
use crate::digest::Digest;
use crate::endpoint::{Endpoint, RegistryConfig};
use crate::error::PullError;
use crate::manifest::{self, Descriptor, Manifest, Platform};
use crate::reference::ImageRef;

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
const USER_AGENT: &str = concat!("pier/", env!("CARGO_PKG_VERSION"));

/// A client set up for one pull: one per pull because oci-client keeps the
/// first credentials it sees per registry, and each CRI request carries its own.
pub struct Session {
    client: Client,
    endpoints: Vec<Endpoint>,
    credentials: Auth,
}

/// Where a resolved image's blobs come from, and with which credentials.
#[derive(Clone)]
pub struct Source {
    /// The reference on the endpoint that answered.
    pub remote: Reference,
    auth: RegistryAuth,
    /// Whether `auth` carries credentials (for telling "refused" from "none").
    credentials_given: bool,
}

impl RegistryConfig {
    /// A session for pulling `image` with the request's credentials.
    pub fn session(&self, image: &ImageRef, credentials: &Auth) -> Session {
        let endpoints = self.endpoints(image);
        let plain_http: Vec<String> = endpoints
            .iter()
            .filter(|e| e.plain_http)
            .map(|e| e.host.clone())
            .collect();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..Default::default()
        };
        Session {
            client: Client::new(config),
            endpoints,
            credentials: credentials.clone(),
        }
    }
}

/// Why a registry said 401 or 403, as far as pier can tell.
fn unauthorized(registry: String, credentials_given: bool) -> PullError {
    PullError::Unauthorized {
        registry,
        detail: if credentials_given {
            "refused the credentials"
        } else {
            "requires credentials and none were sent to it"
        },
    }
}

/// Maps an oci-client error to what the user should hear.
pub fn classify(
    err: OciDistributionError,
    registry: &str,
    reference: &str,
    credentials_given: bool,
) -> PullError {
    let registry = registry.to_owned();
    match err {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => {
            unauthorized(registry, credentials_given)
        }
        OciDistributionError::ImageManifestNotFoundError(_) => PullError::ManifestNotFound {
            reference: reference.to_owned(),
            registry,
        },
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            PullError::ManifestNotFound {
                reference: reference.to_owned(),
                registry,
            }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            unauthorized(registry, credentials_given)
        }
        OciDistributionError::ServerError { code: 404, .. } => PullError::ManifestNotFound {
            reference: reference.to_owned(),
            registry,
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(registry, credentials_given),
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            PullError::Unreachable {
                registry,
                cause: crate::error::error_chain(&e),
            }
        }
        other => PullError::Registry {
            registry,
            cause: crate::error::error_chain(&other),
        },
    }
}

/// What a reference resolved to on one endpoint.
pub struct Resolved {
    pub source: Source,
    /// Digest of what the reference names (an index or a manifest): the
    /// image's repo digest.
    pub repo_digest: Digest,
    pub manifest_digest: Digest,
    pub manifest_raw: Bytes,
    pub manifest: Manifest,
}

/// Largest manifest or config accepted; real ones are a few KiB.
const MAX_METADATA_BYTES: u64 = 8 << 20;

impl Session {
    /// Fetches and verifies the manifest for `platform`, trying each
    /// endpoint in turn. The most telling error wins when all fail.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        platform: &Platform,
    ) -> Result<Resolved, PullError> {
        let mut errors = Vec::new();
        for endpoint in &self.endpoints {
            match self.resolve_on(image, endpoint, platform).await {
                Ok(resolved) => return Ok(resolved),
                Err(e) => {
                    tracing::debug!(image = %image, %endpoint, error = %e, "endpoint failed");
                    errors.push(e);
                }
            }
        }
        // Prefer an answer from a registry over "could not reach one".
        let rank = |e: &PullError| match e {
            PullError::Unreachable { .. } => 2,
            PullError::Registry { .. } => 1,
            _ => 0,
        };
        errors.sort_by_key(rank);
        Err(errors.into_iter().next().unwrap_or(PullError::Registry {
            registry: image.registry().to_owned(),
            cause: "no endpoint to pull from".into(),
        }))
    }

    /// What `endpoint` is sent for `remote`; identity tokens are exchanged
    /// for an access token here, once per endpoint and pull.
    async fn source(&self, endpoint: &Endpoint, remote: Reference) -> Result<Source, PullError> {
        let credentials = self.credentials.for_endpoint(endpoint)?;
        let credentials_given = credentials.given();
        let auth = match credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Direct(auth) => auth,
            Credentials::IdentityToken(token) => {
                // oci-client's HTTP client is private; token endpoints get
                // one of their own, set up only when needed.
                let http = reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .user_agent(USER_AGENT)
                    .build()
                    .map_err(|e| PullError::Registry {
                        registry: endpoint.host.clone(),
                        cause: format!("cannot set up an HTTP client: {e}"),
                    })?;
                auth::exchange_identity_token(&http, &remote, endpoint.plain_http, &token).await?
            }
        };
        Ok(Source {
            remote,
            auth,
            credentials_given,
        })
    }

    async fn resolve_on(
        &self,
        image: &ImageRef,
        endpoint: &Endpoint,
        platform: &Platform,
    ) -> Result<Resolved, PullError> {
        let source = self.source(endpoint, endpoint.reference(image)).await?;
        let err = |e| {
            classify(
                e,
                &endpoint.host,
                &image.to_string(),
                source.credentials_given,
            )
        };
        let (raw, _) = self
            .client
            .pull_manifest_raw(&source.remote, &source.auth, manifest::ACCEPTED)
            .await
            .map_err(err)?;
        let repo_digest = Digest::of(&raw);
        if let Some(wanted) = image.digest()
            && wanted != repo_digest.as_str()
        {
            return Err(PullError::DigestMismatch {
                digest: wanted.to_owned(),
                actual: repo_digest.to_string(),
            });
        }
        let top = Manifest::parse(&raw)?;
        let (manifest_digest, manifest_raw, manifest) = match top.pick(platform)? {
            None => (repo_digest.clone(), raw, top),
            Some(entry) => {
                let at = endpoint.at_digest(image, entry.digest.as_str());
                let (raw, _) = self
                    .client
                    .pull_manifest_raw(&at, &source.auth, manifest::ACCEPTED)
                    .await
                    .map_err(err)?;
                let actual = Digest::of(&raw);
                if actual != entry.digest {
                    return Err(PullError::DigestMismatch {
                        digest: entry.digest.to_string(),
                        actual: actual.to_string(),
                    });
                }
                let manifest = Manifest::parse(&raw)?;
                if manifest.is_index() {
                    return Err(PullError::BadManifest("an index inside an index".into()));
                }
                (actual, raw, manifest)
            }
        };
        Ok(Resolved {
            source,
            repo_digest,
            manifest_digest,
            manifest_raw,
            manifest,
        })
    }

    /// Fetches a small blob (the image config) whole, verified.
    pub async fn fetch_small_blob(
        &self,
        source: &Source,
        desc: &Descriptor,
    ) -> Result<Bytes, PullError> {
        let registry = source.remote.registry().to_owned();
        if desc.size > MAX_METADATA_BYTES {
            return Err(PullError::BadManifest(format!(
                "config {} claims {} bytes",
                desc.digest, desc.size
            )));
        }
        let mut stream = self.blob_stream(source, &desc.digest).await?;
        let mut data = Vec::with_capacity(desc.size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Err(e) if is_digest_error(&e) => break,
                other => other,
            };
            let chunk = chunk.map_err(|e| PullError::Unreachable {
                registry: registry.clone(),
                cause: format!("download of {} interrupted: {e}", desc.digest),
            })?;
            data.extend_from_slice(&chunk);
            if data.len() as u64 > desc.size {
                break;
            }
        }
        verify(
            &desc.digest,
            desc.size,
            data.len() as u64,
            &Digest::of(&data),
        )?;
        Ok(data.into())
    }

    /// A blob's bytes as they arrive; the caller verifies them.
    pub async fn blob_stream(
        &self,
        source: &Source,
        digest: &Digest,
    ) -> Result<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>, PullError> {
        // oci-client stores the credentials on first use; blob requests
        // made before any manifest request would otherwise go anonymous.
        self.client
            .store_auth_if_needed(source.remote.resolve_registry(), &source.auth)
            .await;
        let sized = self
            .client
            .pull_blob_stream(&source.remote, digest.as_str())
            .await
            .map_err(|e| {
                classify(
                    e,
                    source.remote.registry(),
                    digest.as_str(),
                    source.credentials_given,
                )
            })?;
        Ok(sized.stream.boxed())
    }
}

/// Whether a blob stream failed only oci-client's digest check at its end
/// (as opposed to the transfer breaking).
pub fn is_digest_error(err: &std::io::Error) -> bool {
    err.get_ref()
        .is_some_and(|e| e.is::<oci_client::errors::DigestError>())
}

/// Checks a downloaded blob against its descriptor.
pub fn verify(expected: &Digest, size: u64, got: u64, actual: &Digest) -> Result<(), PullError> {
    if got != size {
        return Err(PullError::SizeMismatch {
            digest: expected.to_string(),
            expected: size,
            actual: got,
        });
    }
    if actual != expected {
        return Err(PullError::DigestMismatch {
            digest: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}
