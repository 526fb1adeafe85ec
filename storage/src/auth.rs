//! Credentials of a pull: which endpoint gets them, and what each kind of
//! CRI credential becomes on the wire. Identity tokens go through the
//! registry's OAuth2 token endpoint (a refresh-token grant) for an access
//! token, as Docker and containerd do; nothing here is ever logged.

use std::fmt;

use base64::Engine as _;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::endpoint::Endpoint;
use crate::error::PullError;

/// What pier calls itself at token endpoints (OAuth2 `client_id`).
const CLIENT_ID: &str = "pier";

/// Credentials of one pull, as the CRI `AuthConfig` carries them. Never
/// logged: `Debug` shows only which fields are set.
#[derive(Clone, Default)]
pub struct Auth {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    /// The registry these credentials were looked up for (kubelet fills it
    /// from the matching docker config key).
    pub server_address: String,
    /// A refresh token for the registry's token endpoint.
    pub identity_token: String,
    /// A bearer token for the registry itself.
    pub registry_token: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &String| (!s.is_empty()).then_some("<redacted>");
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("auth", &set(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

/// What an endpoint is sent, decided before any request is made.
#[derive(Clone)]
pub enum Credentials {
    Anonymous,
    /// Sent as they are (basic auth, or a bearer registry token);
    /// oci-client runs the registry's token flow with basic credentials.
    Direct(RegistryAuth),
    /// Exchanged at the registry's token endpoint for an access token.
    IdentityToken(String),
}

impl Credentials {
    pub fn given(&self) -> bool {
        !matches!(self, Self::Anonymous)
    }
}

impl Auth {
    fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.auth.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }

    /// The credentials `endpoint` gets. They were looked up for the image's
    /// registry, so a mirror gets them only when `server_address` names it;
    /// otherwise a mirror is asked anonymously, never handed another
    /// registry's secrets.
    pub fn for_endpoint(&self, endpoint: &Endpoint) -> Result<Credentials, PullError> {
        let meant_for = endpoint.upstream
            || (!self.server_address.is_empty()
                && server_host(&self.server_address) == endpoint.host);
        if !meant_for || self.is_empty() {
            return Ok(Credentials::Anonymous);
        }
        if !self.registry_token.is_empty() {
            return Ok(Credentials::Direct(RegistryAuth::Bearer(
                self.registry_token.clone(),
            )));
        }
        if !self.identity_token.is_empty() {
            return Ok(Credentials::IdentityToken(self.identity_token.clone()));
        }
        if !self.username.is_empty() {
            return Ok(Credentials::Direct(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            )));
        }
        let bad = || PullError::Unauthorized {
            registry: endpoint.host.clone(),
            detail: "cannot use the request's auth string (not base64 of user:password)",
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
        Ok(Credentials::Direct(RegistryAuth::Basic(
            user.to_owned(),
            pass.to_owned(),
        )))
    }
}

/// The host of a docker config key: `https://index.docker.io/v1/` →
/// `index.docker.io`, `host:5000` → `host:5000`.
fn server_host(address: &str) -> &str {
    let address = address.trim();
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    rest.split('/').next().unwrap_or(rest)
}

/// A `WWW-Authenticate: Bearer realm=...,service=...` challenge.
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

fn bearer_challenge(headers: &reqwest::header::HeaderMap) -> Option<BearerChallenge> {
    headers
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(http_auth::ChallengeParser::new)
        .filter_map(Result::ok)
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|c| {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            Some(BearerChallenge {
                realm: param("realm")?,
                service: param("service"),
            })
        })
}

/// The token endpoint's answer: OAuth2 servers send `access_token`, older
/// Docker token servers `token`.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    token: String,
}

/// Trades an identity token for an access token to pull from `remote`:
/// asks `/v2/` for the registry's challenge, then POSTs a refresh-token
/// grant to its realm. A registry that needs no authentication gets none.
pub async fn exchange_identity_token(
    http: &reqwest::Client,
    remote: &Reference,
    plain_http: bool,
    identity_token: &str,
) -> Result<RegistryAuth, PullError> {
    let registry = remote.registry().to_owned();
    let unreachable = |e: reqwest::Error| PullError::Unreachable {
        registry: registry.clone(),
        cause: crate::error::error_chain(&e),
    };
    let scheme = if plain_http { "http" } else { "https" };
    let probe = http
        .get(format!("{scheme}://{}/v2/", remote.resolve_registry()))
        .send()
        .await
        .map_err(unreachable)?;
    if probe.status().is_success() {
        return Ok(RegistryAuth::Anonymous);
    }
    let Some(challenge) = bearer_challenge(probe.headers()) else {
        return Err(PullError::Unauthorized {
            registry,
            detail: "does not offer the token flow an identity token is for",
        });
    };
    let scope = format!("repository:{}:pull", remote.repository());
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", identity_token),
        ("client_id", CLIENT_ID),
        ("scope", scope.as_str()),
    ];
    if let Some(service) = &challenge.service {
        form.push(("service", service));
    }
    let response = http
        .post(&challenge.realm)
        .form(&form)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if matches!(status.as_u16(), 400 | 401 | 403) {
        // OAuth2 answers a bad refresh token with 400 invalid_grant.
        return Err(PullError::Unauthorized {
            registry,
            detail: "refused the identity token",
        });
    }
    if !status.is_success() {
        return Err(PullError::Registry {
            registry,
            cause: format!("token endpoint {} answered {status}", challenge.realm),
        });
    }
    let body: TokenResponse = response.json().await.map_err(|e| PullError::Registry {
        registry: registry.clone(),
        cause: format!("token endpoint {} sent no token: {e}", challenge.realm),
    })?;
    let token = if body.access_token.is_empty() {
        body.token
    } else {
        body.access_token
    };
    if token.is_empty() {
        return Err(PullError::Registry {
            registry,
            cause: format!("token endpoint {} sent an empty token", challenge.realm),
        });
    }
    Ok(RegistryAuth::Bearer(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, upstream: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            prefix: String::new(),
            plain_http: true,
            upstream,
        }
    }

    #[test]
    fn request_credentials_go_to_the_registry_and_only_a_named_mirror() {
        let auth = Auth {
            username: "u".into(),
            password: "p".into(),
            server_address: "https://mirror.local:5000/v1/".into(),
            ..Default::default()
        };
        assert!(
            auth.for_endpoint(&endpoint("docker.io", true))
                .unwrap()
                .given()
        );
        assert!(
            auth.for_endpoint(&endpoint("mirror.local:5000", false))
                .unwrap()
                .given()
        );
        assert!(
            !auth
                .for_endpoint(&endpoint("other:5000", false))
                .unwrap()
                .given()
        );
        let no_address = Auth {
            server_address: String::new(),
            ..auth
        };
        assert!(
            !no_address
                .for_endpoint(&endpoint("mirror.local:5000", false))
                .unwrap()
                .given()
        );
    }

    #[test]
    fn each_kind_of_credential_becomes_its_wire_form() {
        let up = endpoint("r.example", true);
        let token = Auth {
            registry_token: "rt".into(),
            identity_token: "it".into(),
            ..Default::default()
        };
        assert!(matches!(
            token.for_endpoint(&up).unwrap(),
            Credentials::Direct(RegistryAuth::Bearer(t)) if t == "rt"
        ));
        let identity = Auth {
            identity_token: "it".into(),
            username: "u".into(),
            ..Default::default()
        };
        assert!(matches!(
            identity.for_endpoint(&up).unwrap(),
            Credentials::IdentityToken(t) if t == "it"
        ));
        let encoded = Auth {
            auth: "cGllcjpzM2NyZXQ=".into(),
            ..Default::default()
        };
        assert!(matches!(
            encoded.for_endpoint(&up).unwrap(),
            Credentials::Direct(RegistryAuth::Basic(u, p)) if u == "pier" && p == "s3cret"
        ));
        let garbage = Auth {
            auth: "%%%".into(),
            ..Default::default()
        };
        let err = garbage.for_endpoint(&up).err().unwrap().to_string();
        assert!(err.contains("auth string") && !err.contains("%%%"), "{err}");
        assert!(!Auth::default().for_endpoint(&up).unwrap().given());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let auth = Auth {
            username: "u".into(),
            password: "hunter2".into(),
            identity_token: "idtok".into(),
            ..Default::default()
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("idtok"),
            "{shown}"
        );
    }

    #[test]
    fn bearer_challenge_is_parsed_among_others() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(
            reqwest::header::WWW_AUTHENTICATE,
            "Basic realm=\"x\"".parse().unwrap(),
        );
        headers.append(
            reqwest::header::WWW_AUTHENTICATE,
            "Bearer realm=\"http://127.0.0.1:1/token\",service=\"reg\""
                .parse()
                .unwrap(),
        );
        let c = bearer_challenge(&headers).unwrap();
        assert_eq!(c.realm, "http://127.0.0.1:1/token");
        assert_eq!(c.service.as_deref(), Some("reg"));
    }
}
