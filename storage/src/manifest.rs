//! Manifests and indexes, Docker schema 2 and OCI alike: the two share their
//! JSON shape, so one lenient type reads all four.

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::PullError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Media types sent in `Accept` when fetching a manifest.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// A platform as the image spec names it (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in the image spec's words.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

/// A validated content descriptor.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
}

impl TryFrom<RawDescriptor> for Descriptor {
    type Error = PullError;
    fn try_from(raw: RawDescriptor) -> Result<Self, PullError> {
        let digest = Digest::parse(&raw.digest).map_err(PullError::BadManifest)?;
        let size = u64::try_from(raw.size)
            .map_err(|_| PullError::BadManifest(format!("negative size for {digest}")))?;
        if raw.urls.is_some_and(|u| !u.is_empty()) && raw.media_type.contains("nondistributable") {
            return Err(PullError::BadManifest(format!(
                "layer {digest} is a foreign (non-distributable) layer, which pier does not fetch"
            )));
        }
        Ok(Self {
            media_type: raw.media_type,
            digest,
            size,
            platform: raw.platform,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// An image manifest or an index.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

impl Manifest {
    pub fn parse(raw: &[u8]) -> Result<Self, PullError> {
        let m: RawManifest = serde_json::from_slice(raw)
            .map_err(|e| PullError::BadManifest(format!("not a manifest: {e}")))?;
        if m.schema_version != 2 {
            return Err(PullError::BadManifest(format!(
                "schema version {} (only Docker schema 2 and OCI are supported)",
                m.schema_version
            )));
        }
        let is_index = matches!(m.media_type.as_deref(), Some(OCI_INDEX | DOCKER_LIST))
            || (m.manifests.is_some() && m.config.is_none());
        if is_index {
            let manifests = m.manifests.unwrap_or_default();
            let manifests = manifests
                .into_iter()
                .map(Descriptor::try_from)
                .collect::<Result<_, _>>()?;
            return Ok(Self::Index { manifests });
        }
        let config = m
            .config
            .ok_or_else(|| PullError::BadManifest("manifest without config".into()))?
            .try_into()?;
        let layers = m
            .layers
            .unwrap_or_default()
            .into_iter()
            .map(Descriptor::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Self::Image { config, layers })
    }

    pub fn is_index(&self) -> bool {
        matches!(self, Self::Index { .. })
    }

    /// For an index, the entry for `platform`; `None` for an image manifest.
    pub fn pick(&self, platform: &Platform) -> Result<Option<&Descriptor>, PullError> {
        let Self::Index { manifests } = self else {
            return Ok(None);
        };
        let found = manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)));
        match found {
            Some(entry) => Ok(Some(entry)),
            None => {
                let available: Vec<String> = manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                    .collect();
                Err(PullError::PlatformNotFound {
                    platform: platform.to_string(),
                    available: if available.is_empty() {
                        "no platforms".into()
                    } else {
                        available.join(", ")
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_picks_host_platform_and_names_others_when_absent() {
        let d = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d(1),
            d(2)
        );
        let m = Manifest::parse(raw.as_bytes()).unwrap();
        let amd = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(m.pick(&amd).unwrap().unwrap().digest.as_str(), d(2));
        let s390 = Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        };
        let err = m.pick(&s390).unwrap_err().to_string();
        assert!(
            err.contains("linux/s390x") && err.contains("linux/arm64"),
            "{err}"
        );
    }
}
