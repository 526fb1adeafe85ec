//! Where an image is fetched from: the mirrors the config lists for its
//! registry, in order, then the registry itself; which of them speak plain
//! HTTP; and how a repository is named on each (a mirror may serve a
//! registry's repositories under a path prefix).

use std::collections::BTreeMap;

use oci_client::Reference;

use crate::reference::ImageRef;

/// Registry settings from the daemon's config.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registry host (`docker.io`, `registry.k8s.io`) to endpoints tried in
    /// order before the host itself: `http://host:port[/prefix]`,
    /// `https://host[/prefix]`, or a bare `host:port[/prefix]` (HTTPS unless
    /// the host is listed in `insecure`).
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Hosts spoken to over plain HTTP: `host:port` matches only that port,
    /// a bare `host` matches the host on any port.
    pub insecure: Vec<String>,
}

/// One place an image can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as oci-client addresses it.
    pub host: String,
    /// Repository namespace the endpoint serves the registry's repositories
    /// under (`some/prefix` for `http://host/some/prefix`), or empty.
    pub prefix: String,
    pub plain_http: bool,
    /// The image's own registry, as opposed to a mirror of it.
    pub upstream: bool,
}

impl Endpoint {
    /// The image's repository as this endpoint names it.
    pub fn repository(&self, image: &ImageRef) -> String {
        if self.prefix.is_empty() {
            image.repository().to_owned()
        } else {
            format!("{}/{}", self.prefix, image.repository())
        }
    }

    /// The image's reference on this endpoint: same tag or digest (a
    /// reference without either means `latest`).
    pub fn reference(&self, image: &ImageRef) -> Reference {
        let (host, repository) = (self.host.clone(), self.repository(image));
        match (image.tag(), image.digest()) {
            (_, Some(d)) => Reference::with_digest(host, repository, d.to_owned()),
            (Some(t), None) => Reference::with_tag(host, repository, t.to_owned()),
            (None, None) => Reference::with_tag(host, repository, "latest".to_owned()),
        }
    }

    /// A manifest of the image's repository on this endpoint, by digest.
    pub fn at_digest(&self, image: &ImageRef, digest: &str) -> Reference {
        Reference::with_digest(self.host.clone(), self.repository(image), digest.into())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.plain_http { "http" } else { "https" };
        write!(f, "{scheme}://{}", self.host)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

impl RegistryConfig {
    /// Mirrors of the reference's registry, then the registry itself.
    pub fn endpoints(&self, image: &ImageRef) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(image.registry())
            .into_iter()
            .flatten()
            .map(|mirror| self.mirror(mirror))
            .collect();
        out.push(Endpoint {
            host: image.registry().to_owned(),
            prefix: String::new(),
            plain_http: self.is_insecure(image.registry()),
            upstream: true,
        });
        out
    }

    fn mirror(&self, spec: &str) -> Endpoint {
        let spec = spec.trim().trim_end_matches('/');
        let (rest, scheme) = match (spec.strip_prefix("http://"), spec.strip_prefix("https://")) {
            (Some(rest), _) => (rest, Some(true)),
            (None, Some(rest)) => (rest, Some(false)),
            (None, None) => (spec, None),
        };
        let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        Endpoint {
            host: host.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            plain_http: scheme.unwrap_or_else(|| self.is_insecure(host)),
            upstream: false,
        }
    }

    /// Whether `host` (`name` or `name:port`) is listed as insecure, either
    /// exactly or by its name alone.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = host_name(host);
        self.insecure
            .iter()
            .map(|entry| entry.trim())
            .any(|entry| entry == host || (entry == name && host_name(entry) == entry))
    }
}

/// `host` without its port; IPv6 literals keep their brackets.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.split_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(insecure: &[&str]) -> RegistryConfig {
        RegistryConfig {
            mirrors: BTreeMap::new(),
            insecure: insecure.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_bare_insecure_host_matches_every_port_and_a_port_only_itself() {
        let c = config(&["10.0.0.5", "mirror.local:5000", "[::1]"]);
        assert!(c.is_insecure("10.0.0.5"));
        assert!(c.is_insecure("10.0.0.5:5000"));
        assert!(c.is_insecure("mirror.local:5000"));
        assert!(!c.is_insecure("mirror.local"));
        assert!(!c.is_insecure("mirror.local:5001"));
        assert!(c.is_insecure("[::1]:5000"));
        assert!(!c.is_insecure("10.0.0.50:5000"));
    }

    #[test]
    fn mirror_endpoints_keep_their_path_prefix_and_scheme() {
        let mut c = config(&["plain.local"]);
        c.mirrors.insert(
            "docker.io".into(),
            vec![
                "http://127.0.0.1:5000/some/prefix/".into(),
                "https://secure.example".into(),
                "plain.local:8080/hub".into(),
            ],
        );
        let image = ImageRef::parse("busybox:1.36").unwrap();
        let endpoints = c.endpoints(&image);
        assert_eq!(endpoints.len(), 4);
        assert_eq!(
            endpoints[0].to_string(),
            "http://127.0.0.1:5000/some/prefix"
        );
        let remote = endpoints[0].reference(&image);
        assert_eq!(remote.registry(), "127.0.0.1:5000");
        assert_eq!(remote.repository(), "some/prefix/library/busybox");
        assert_eq!(remote.tag(), Some("1.36"));
        assert!(!endpoints[1].plain_http && endpoints[1].prefix.is_empty());
        assert!(
            endpoints[2].plain_http,
            "bare host:port listed insecure by name"
        );
        assert_eq!(endpoints[2].repository(&image), "hub/library/busybox");
        assert!(endpoints[3].upstream && endpoints[3].host == "docker.io");
        assert!(endpoints[..3].iter().all(|e| !e.upstream));
    }
}
