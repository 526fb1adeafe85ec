//! The image config: what the runtime needs to start a container, and the
//! diff ids that every unpacked layer is checked against.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::PullError;

/// The runtime part of an image config (`config` in the OCI image spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Docker writes `null` for empty lists and sets as `{"80/tcp": {}}`.
fn keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let map: Option<BTreeMap<String, serde::de::IgnoredAny>> = Option::deserialize(d)?;
    Ok(map.map(|m| m.into_keys().collect()).unwrap_or_default())
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRootfs {
    #[serde(deserialize_with = "null_as_default")]
    diff_ids: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfigFile {
    #[serde(deserialize_with = "null_as_default")]
    config: RawRuntimeConfig,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RawRuntimeConfig {
    #[serde(deserialize_with = "null_as_default")]
    user: String,
    #[serde(deserialize_with = "null_as_default")]
    env: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    entrypoint: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    cmd: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    working_dir: String,
    #[serde(deserialize_with = "null_as_default")]
    stop_signal: String,
    #[serde(deserialize_with = "keys")]
    exposed_ports: Vec<String>,
    #[serde(deserialize_with = "keys")]
    volumes: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
}

/// A parsed config file: the runtime config and the layer diff ids.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub config: ImageConfig,
    pub diff_ids: Vec<Digest>,
}

impl ConfigFile {
    pub fn parse(raw: &[u8]) -> Result<Self, PullError> {
        let file: RawConfigFile = serde_json::from_slice(raw)
            .map_err(|e| PullError::BadManifest(format!("image config is not valid: {e}")))?;
        let diff_ids = file
            .rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d).map_err(PullError::BadManifest))
            .collect::<Result<_, _>>()?;
        let c = file.config;
        Ok(Self {
            config: ImageConfig {
                user: c.user,
                env: c.env,
                entrypoint: c.entrypoint,
                cmd: c.cmd,
                working_dir: c.working_dir,
                stop_signal: c.stop_signal,
                exposed_ports: c.exposed_ports,
                volumes: c.volumes,
                labels: c.labels,
            },
            diff_ids,
        })
    }
}

impl ImageConfig {
    /// The uid (when `User` is numeric) or the user name, as CRI reports
    /// them; the group part after `:` does not matter here.
    pub fn uid_and_username(&self) -> (Option<i64>, String) {
        let user = self.user.split(':').next().unwrap_or_default();
        if user.is_empty() {
            return (None, String::new());
        }
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_with_nulls_and_port_sets_parses() {
        let raw = br#"{"architecture":"amd64","os":"linux",
          "config":{"User":"1000:100","Env":null,"Cmd":["sh"],"Entrypoint":null,
            "ExposedPorts":{"80/tcp":{}},"Volumes":null,"StopSignal":"SIGQUIT"},
          "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let file = ConfigFile::parse(raw).unwrap();
        assert_eq!(file.config.cmd, vec!["sh"]);
        assert_eq!(file.config.exposed_ports, vec!["80/tcp"]);
        assert_eq!(file.config.uid_and_username(), (Some(1000), String::new()));
        assert_eq!(file.config.stop_signal, "SIGQUIT");
    }

    #[test]
    fn named_user_is_a_username() {
        let c = ImageConfig {
            user: "www-data:www-data".into(),
            ..Default::default()
        };
        assert_eq!(c.uid_and_username(), (None, "www-data".to_owned()));
    }
}
