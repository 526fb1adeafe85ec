//! Talking to registries through oci-client: credentials, mirrors and
//! plain-HTTP hosts from the config, manifest resolution to one platform.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::digest::Digest;
use crate::error::PullError;
use crate::manifest::{self, Descriptor, Manifest, Platform};
use crate::reference::ImageRef;

/// Registry settings from the daemon's config.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registry host (`docker.io`, `registry.k8s.io`) to endpoints tried in
    /// order before the host itself: `http://host:port`, `https://host` or
    /// a bare `host:port` (https unless listed in `insecure`).
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Hosts (`host:port`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

/// Credentials of one pull, as the CRI `AuthConfig` carries them. Never
/// logged: `Debug` shows only which fields are set.
#[derive(Clone, Default)]
pub struct Auth {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field(
                "password",
                &(!self.password.is_empty()).then_some("<redacted>"),
            )
            .field("auth", &(!self.auth.is_empty()).then_some("<redacted>"))
            .field("server_address", &self.server_address)
            .field(
                "identity_token",
                &(!self.identity_token.is_empty()).then_some("<redacted>"),
            )
            .field(
                "registry_token",
                &(!self.registry_token.is_empty()).then_some("<redacted>"),
            )
            .finish()
    }
}

impl Auth {
    fn to_registry_auth(&self, registry: &str) -> Result<RegistryAuth, PullError> {
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.identity_token.is_empty() {
            // Docker's credential helpers pair an identity token with the
            // user name "<token>"; registries accept it at their token endpoint.
            let user = if self.username.is_empty() {
                "<token>"
            } else {
                &self.username
            };
            return Ok(RegistryAuth::Basic(
                user.to_owned(),
                self.identity_token.clone(),
            ));
        }
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        if !self.auth.is_empty() {
            let bad = || PullError::Unauthorized {
                registry: registry.to_owned(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(RegistryAuth::Basic(user.to_owned(), pass.to_owned()));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// One place an image can be fetched from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host[:port]` as oci-client addresses it.
    pub host: String,
}

/// A client set up for one pull: one per pull because oci-client keeps the
/// first credentials it sees per registry, and each CRI request carries its own.
pub struct Session {
    client: Client,
    auth: RegistryAuth,
}

impl RegistryConfig {
    /// Mirrors of the reference's registry, then the registry itself.
    pub fn endpoints(&self, image: &ImageRef) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(image.registry())
            .into_iter()
            .flatten()
            .map(|m| Endpoint {
                host: strip_scheme(m).0.to_owned(),
            })
            .collect();
        out.push(Endpoint {
            host: image.registry().to_owned(),
        });
        out
    }

    fn plain_http_hosts(&self) -> Vec<String> {
        let mut hosts = self.insecure.clone();
        for mirror in self.mirrors.values().flatten() {
            if let (host, true) = strip_scheme(mirror) {
                hosts.push(host.to_owned());
            }
        }
        hosts
    }

    pub fn session(&self, image: &ImageRef, auth: &Auth) -> Result<Session, PullError> {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.plain_http_hosts()),
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            user_agent: concat!("pier/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        Ok(Session {
            client: Client::new(config),
            auth: auth.to_registry_auth(image.registry())?,
        })
    }
}

/// `(host, plain_http)` of a mirror endpoint.
fn strip_scheme(endpoint: &str) -> (&str, bool) {
    let trimmed = endpoint.trim_end_matches('/');
    if let Some(host) = trimmed.strip_prefix("http://") {
        (host, true)
    } else {
        (trimmed.strip_prefix("https://").unwrap_or(trimmed), false)
    }
}

/// Maps an oci-client error to what the user should hear.
pub fn classify(err: OciDistributionError, registry: &str, reference: &str) -> PullError {
    let registry = registry.to_owned();
    match err {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => PullError::Unauthorized { registry },
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
            PullError::Unauthorized { registry }
        }
        OciDistributionError::ServerError { code: 404, .. } => PullError::ManifestNotFound {
            reference: reference.to_owned(),
            registry,
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => PullError::Unauthorized { registry },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            PullError::Unreachable {
                registry,
                cause: error_chain(&e),
            }
        }
        other => PullError::Registry {
            registry,
            cause: error_chain(&other),
        },
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// What a reference resolved to on one endpoint.
pub struct Resolved {
    /// The reference on the endpoint that answered.
    pub remote: Reference,
    pub endpoint: Endpoint,
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
        endpoints: &[Endpoint],
        platform: &Platform,
    ) -> Result<Resolved, PullError> {
        let mut errors = Vec::new();
        for endpoint in endpoints {
            match self.resolve_on(image, endpoint, platform).await {
                Ok(resolved) => return Ok(resolved),
                Err(e) => {
                    tracing::debug!(image = %image, endpoint = %endpoint.host, error = %e, "endpoint failed");
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

    async fn resolve_on(
        &self,
        image: &ImageRef,
        endpoint: &Endpoint,
        platform: &Platform,
    ) -> Result<Resolved, PullError> {
        let remote = image.on_registry(&endpoint.host);
        let err = |e| classify(e, &endpoint.host, &image.to_string());
        let (raw, _) = self
            .client
            .pull_manifest_raw(&remote, &self.auth, manifest::ACCEPTED)
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
                let at = image.at_digest(&endpoint.host, entry.digest.as_str());
                let (raw, _) = self
                    .client
                    .pull_manifest_raw(&at, &self.auth, manifest::ACCEPTED)
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
            remote,
            endpoint: endpoint.clone(),
            repo_digest,
            manifest_digest,
            manifest_raw,
            manifest,
        })
    }

    /// Fetches a small blob (the image config) whole, verified.
    pub async fn fetch_small_blob(
        &self,
        remote: &Reference,
        desc: &Descriptor,
    ) -> Result<Bytes, PullError> {
        let registry = remote.registry().to_owned();
        if desc.size > MAX_METADATA_BYTES {
            return Err(PullError::BadManifest(format!(
                "config {} claims {} bytes",
                desc.digest, desc.size
            )));
        }
        let mut stream = self.blob_stream(remote, &desc.digest).await?;
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
        remote: &Reference,
        digest: &Digest,
    ) -> Result<futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>, PullError> {
        // oci-client stores the credentials on first use; blob requests
        // made before any manifest request would otherwise go anonymous.
        self.client
            .store_auth_if_needed(remote.resolve_registry(), &self.auth)
            .await;
        let sized = self
            .client
            .pull_blob_stream(remote, digest.as_str())
            .await
            .map_err(|e| classify(e, remote.registry(), digest.as_str()))?;
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
