//! Image references as kubelet and crictl send them, normalised the way
//! docker and containerd do (`busybox` is `docker.io/library/busybox:latest`).

use oci_client::Reference;

use crate::digest::Digest;
use crate::error::ImageError;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<Self, ImageError> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: reference.to_owned(),
            reason,
        };
        let trimmed = reference.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty reference".into()));
        }
        let inner = Reference::try_from(trimmed).map_err(|e| invalid(e.to_string()))?;
        // The grammar lets an uppercase first component through when it is
        // not taken for a host; docker refuses those, so does pier.
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase".into()));
        }
        if let Some(digest) = inner.digest() {
            Digest::parse(digest).map_err(invalid)?;
        }
        Ok(Self { inner })
    }

    /// Registry host as written in the reference (`docker.io`, `host:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `registry/repository`, the part shared by repo tags and repo digests.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// `registry/repository:tag`, when the reference has a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag().map(|tag| format!("{}:{tag}", self.name()))
    }

    /// `registry/repository@digest`.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The name an image pulled by this reference is stored under: its
    /// digest when it has one (a tag next to a digest is only a hint), else
    /// its tag.
    pub fn lookup_name(&self) -> String {
        match self.digest() {
            Some(digest) => self.repo_digest(digest),
            None => self.repo_tag().unwrap_or_else(|| self.name()),
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.lookup_name_or_whole())
    }
}

impl ImageRef {
    fn lookup_name_or_whole(&self) -> String {
        match (self.repo_tag(), self.digest()) {
            (Some(tag), Some(digest)) => format!("{tag}@{digest}"),
            _ => self.lookup_name(),
        }
    }
}

/// What a caller may name a local image by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSpec {
    /// The image id (config digest), with or without `sha256:`.
    Id(String),
    Reference(ImageRef),
}

impl ImageSpec {
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let s = s.trim();
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self::Id(format!("sha256:{}", hex.to_ascii_lowercase())));
        }
        Ok(Self::Reference(ImageRef::parse(s)?))
    }
}
