//! Finding and reading the pod network's CNI configuration.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The pod network: the first valid configuration in the conf dir, by name.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub file: PathBuf,
    pub name: String,
    /// The plugin types of the chain, in order.
    pub plugins: Vec<String>,
    /// The whole configuration as a conflist (a single `.conf` is wrapped).
    pub conflist: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ConflistError {
    #[error("no CNI network configuration in {dir}")]
    NoNetwork { dir: PathBuf },
    #[error("read CNI configuration directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin:?} of network {network:?} ({file}) not found in {dirs}")]
    MissingPlugin {
        plugin: String,
        network: String,
        file: PathBuf,
        dirs: String,
    },
}

/// Loads the first configuration (`*.conflist`, `*.conf`, `*.json`, in name
/// order) that parses; files that do not parse are skipped with a warning,
/// as kubelet-era runtimes do, so one bad file does not take the node down.
pub fn find_network(conf_dir: &Path) -> Result<NetworkConfig, ConflistError> {
    let entries = match std::fs::read_dir(conf_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConflistError::NoNetwork {
                dir: conf_dir.to_owned(),
            });
        }
        Err(source) => {
            return Err(ConflistError::ReadDir {
                dir: conf_dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "conflist" || ext == "conf" || ext == "json")
        })
        .collect();
    files.sort();
    for file in files {
        match read(&file) {
            Ok(network) => return Ok(network),
            Err(reason) => {
                tracing::warn!(file = %file.display(), %reason, "skipping CNI configuration")
            }
        }
    }
    Err(ConflistError::NoNetwork {
        dir: conf_dir.to_owned(),
    })
}

fn read(file: &Path) -> Result<NetworkConfig, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if value.get("plugins").is_none() {
        // A single-plugin `.conf`: wrap it as a one-element list.
        let Some(object) = value.as_object() else {
            return Err("not a JSON object".into());
        };
        let mut list = serde_json::Map::new();
        for key in ["cniVersion", "name"] {
            if let Some(v) = object.get(key) {
                list.insert(key.into(), v.clone());
            }
        }
        list.insert("plugins".into(), Value::Array(vec![value.clone()]));
        value = Value::Object(list);
    }
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .ok_or("no network name")?
        .to_owned();
    let plugins = value
        .get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or("no plugins")?
        .iter()
        .map(|p| {
            p.get("type")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or("a plugin has no type")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NetworkConfig {
        file: file.to_owned(),
        name,
        plugins,
        conflist: value,
    })
}

impl NetworkConfig {
    /// The network as stored with a sandbox at ADD time, for its DEL.
    pub fn from_stored(conflist: Value) -> Self {
        let name = conflist
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Self {
            file: PathBuf::new(),
            name,
            plugins: Vec::new(),
            conflist,
        }
    }

    /// Checks that every plugin of the chain (and `loopback`, which every pod
    /// needs) has a binary in one of `dirs`.
    pub fn check_plugins(&self, dirs: &[PathBuf]) -> Result<(), ConflistError> {
        let needed = self.plugins.iter().map(String::as_str).chain(["loopback"]);
        for plugin in needed {
            if !dirs.iter().any(|dir| dir.join(plugin).is_file()) {
                let dirs: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
                return Err(ConflistError::MissingPlugin {
                    plugin: plugin.to_owned(),
                    network: self.name.clone(),
                    file: self.file.clone(),
                    dirs: dirs.join(":"),
                });
            }
        }
        Ok(())
    }
}
