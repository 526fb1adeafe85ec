//! What this node and each runtime handler can do, as CRI `Status`
//! advertises it (`features`, `runtime_handlers[].features`) and as the
//! requests that need a feature check it. kubelet uses a feature only where
//! it is advertised (`HandlerSupportsUserNamespaces` in kubelet_getters.go;
//! the `RecursiveReadOnlyMounts` handling of a RuntimeClass), so each flag
//! is probed on this node, once, the first time it is asked for:
//!
//! - recursive read-only mounts: the kernel has `mount_setattr` and the
//!   handler's runtime lists `rro` in its `features` mount options (the
//!   detection the CRI's own comment on the field describes);
//! - user namespaces: the runtime lists the `user` namespace, and the probe
//!   in `userns::probe` passes (mappings, idmapped mounts, overlayfs on
//!   idmapped layers).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::Config;
use crate::host::Host;

/// How long a runtime's `features` subcommand may take.
const FEATURES_TIMEOUT: Duration = Duration::from_secs(10);

/// What one runtime handler supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandlerFeatures {
    pub recursive_read_only: bool,
    pub user_namespaces: bool,
}

/// What one runtime binary says of itself in `<runtime> features`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RuntimeSays {
    rro: bool,
    userns: bool,
}

/// The probed features, cached for the daemon's lifetime.
#[derive(Debug, Default)]
pub struct Features {
    handlers: OnceCell<BTreeMap<String, HandlerFeatures>>,
    userns: OnceCell<Result<(), String>>,
}

impl Features {
    /// The features of handler `name` (empty: the default handler); none
    /// for a handler that is not configured.
    pub async fn handler(&self, config: &Config, host: &dyn Host, name: &str) -> HandlerFeatures {
        let name = if name.is_empty() {
            &config.runtime.default_runtime
        } else {
            name
        };
        self.all(config, host)
            .await
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    /// Every configured handler's features, by name.
    pub async fn all(
        &self,
        config: &Config,
        host: &dyn Host,
    ) -> &BTreeMap<String, HandlerFeatures> {
        let userns = self.userns(config, host).await.is_ok();
        self.handlers
            .get_or_init(|| async {
                let kernel_rro = pier_storage::idmap::mount_setattr_supported();
                let mut out = BTreeMap::new();
                for (name, handler) in &config.runtime.handlers {
                    let says = match crate::binaries::resolve(&handler.path) {
                        Some(binary) => runtime_says(&binary).await,
                        None => RuntimeSays::default(),
                    };
                    let features = HandlerFeatures {
                        recursive_read_only: kernel_rro && says.rro,
                        user_namespaces: userns && says.userns,
                    };
                    tracing::info!(handler = %name, ?features, "runtime handler features");
                    out.insert(name.clone(), features);
                }
                out
            })
            .await
    }

    /// Whether pods with their own user namespace can run on this node at
    /// all, and if not, why.
    pub async fn userns(&self, config: &Config, host: &dyn Host) -> &Result<(), String> {
        self.userns
            .get_or_init(|| async {
                let result = crate::userns::probe(host, &config.root, &config.runroot).await;
                if let Err(reason) = &result {
                    tracing::warn!(reason, "user namespaces for pods are not supported here");
                }
                result
            })
            .await
    }
}

/// Runs `<binary> features` (runc 1.1 and later; the OCI runtime features
/// document) and reads the two things pier asks of it. A runtime without
/// the subcommand is taken to support neither.
async fn runtime_says(binary: &Path) -> RuntimeSays {
    let run = tokio::process::Command::new(binary)
        .arg("features")
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(FEATURES_TIMEOUT, run).await {
        Ok(Ok(output)) if output.status.success() => output.stdout,
        other => {
            tracing::info!(runtime = %binary.display(), result = ?other.map(|o| o.map(|o| o.status)),
                "the runtime does not describe its features");
            return RuntimeSays::default();
        }
    };
    parse_features(&output)
}

fn parse_features(json: &[u8]) -> RuntimeSays {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(json) else {
        return RuntimeSays::default();
    };
    let lists = |list: &serde_json::Value, word: &str| {
        list.as_array()
            .is_some_and(|items| items.iter().any(|i| i.as_str() == Some(word)))
    };
    RuntimeSays {
        rro: lists(&doc["mountOptions"], "rro"),
        userns: lists(&doc["linux"]["namespaces"], "user"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_features_document_is_read() {
        let doc = br#"{"ociVersionMin":"1.0.0","mountOptions":["bind","ro","rro"],
            "linux":{"namespaces":["cgroup","ipc","mount","network","pid","user","uts"]}}"#;
        assert_eq!(
            parse_features(doc),
            RuntimeSays {
                rro: true,
                userns: true
            }
        );
        let old = br#"{"mountOptions":["bind","ro"],"linux":{"namespaces":["pid"]}}"#;
        assert_eq!(parse_features(old), RuntimeSays::default());
        assert_eq!(parse_features(b"not json"), RuntimeSays::default());
    }
}
