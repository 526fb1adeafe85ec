//! Running CNI plugins (spec 1.0): ADD through the chain in order, DEL in
//! reverse, each plugin a short-lived process fed its config on stdin.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::conflist::NetworkConfig;

/// What identifies a pod to the plugins.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub sandbox_id: &'a str,
    pub netns: &'a Path,
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    pub pod_uid: &'a str,
    /// Capability arguments (`portMappings`, ...) for plugins that declare them.
    pub runtime_config: &'a Value,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    NotFound { plugin: String, dirs: String },
    #[error("run CNI plugin {plugin}: {source}")]
    Spawn {
        plugin: String,
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} failed: {message}")]
    Failed {
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("CNI plugin {plugin} {command} returned an unreadable result: {reason}")]
    BadResult {
        plugin: String,
        command: &'static str,
        reason: String,
    },
}

/// Interface name inside the pod, as kubelet-era runtimes name it.
pub const POD_INTERFACE: &str = "eth0";

/// Brings up `lo` in the pod's network namespace.
pub async fn add_loopback(dirs: &[PathBuf], pod: &Attachment<'_>) -> Result<(), CniError> {
    let conf = json!({"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"});
    invoke(dirs, "ADD", &conf, pod, "lo").await.map(drop)
}

/// Runs ADD through the chain; returns the last plugin's result.
pub async fn add(
    network: &NetworkConfig,
    dirs: &[PathBuf],
    pod: &Attachment<'_>,
) -> Result<Value, CniError> {
    let mut previous: Option<Value> = None;
    for plugin in plugins(network) {
        let conf = plugin_conf(network, plugin, previous.take(), pod.runtime_config);
        previous = Some(invoke(dirs, "ADD", &conf, pod, POD_INTERFACE).await?);
    }
    Ok(previous.unwrap_or(Value::Null))
}

/// Runs DEL through the chain in reverse, handing each plugin the ADD result.
/// Every plugin is tried even when one fails, so as much as possible is
/// released; the first failure is returned.
pub async fn del(
    network: &NetworkConfig,
    dirs: &[PathBuf],
    pod: &Attachment<'_>,
    add_result: Option<&Value>,
) -> Result<(), CniError> {
    let mut first_error = None;
    for plugin in plugins(network).rev() {
        let conf = plugin_conf(network, plugin, add_result.cloned(), pod.runtime_config);
        if let Err(e) = invoke(dirs, "DEL", &conf, pod, POD_INTERFACE).await {
            tracing::warn!(error = %e, "CNI DEL failed");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn plugins(network: &NetworkConfig) -> impl DoubleEndedIterator<Item = &Value> {
    network
        .conflist
        .get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// One plugin's stdin: its own config plus the list's name and version, the
/// previous result, and the runtime config keys its capabilities ask for.
fn plugin_conf(
    network: &NetworkConfig,
    plugin: &Value,
    previous: Option<Value>,
    runtime_config: &Value,
) -> Value {
    let mut conf = plugin.clone();
    if let Some(object) = conf.as_object_mut() {
        object.insert("name".into(), json!(network.name));
        let version = network
            .conflist
            .get("cniVersion")
            .cloned()
            .unwrap_or(json!("1.0.0"));
        object.insert("cniVersion".into(), version);
        if let Some(previous) = previous {
            object.insert("prevResult".into(), previous);
        }
        let wanted: Vec<String> = plugin
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|caps| caps.iter().filter(|(_, on)| on.as_bool() == Some(true)))
            .into_iter()
            .flatten()
            .map(|(name, _)| name.clone())
            .collect();
        let granted: serde_json::Map<String, Value> = wanted
            .into_iter()
            .filter_map(|cap| runtime_config.get(&cap).map(|v| (cap, v.clone())))
            .collect();
        if !granted.is_empty() {
            object.insert("runtimeConfig".into(), Value::Object(granted));
        }
    }
    conf
}

async fn invoke(
    dirs: &[PathBuf],
    command: &'static str,
    conf: &Value,
    pod: &Attachment<'_>,
    ifname: &str,
) -> Result<Value, CniError> {
    let plugin = conf
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let binary = dirs
        .iter()
        .map(|d| d.join(&plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
            CniError::NotFound {
                plugin: plugin.clone(),
                dirs: dirs.join(":"),
            }
        })?;
    let cni_path = std::env::join_paths(dirs).unwrap_or_default();
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.pod_namespace, pod.pod_name, pod.sandbox_id, pod.pod_uid
    );
    let spawn_err = |source| CniError::Spawn {
        plugin: plugin.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(&binary)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod.sandbox_id)
        .env("CNI_NETNS", pod.netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = conf.to_string().into_bytes();
        stdin.write_all(&bytes).await.map_err(spawn_err)?;
    }
    let output = child.wait_with_output().await.map_err(spawn_err)?;
    let stdout: Option<Value> = serde_json::from_slice(&output.stdout).ok();
    if !output.status.success() {
        return Err(CniError::Failed {
            plugin,
            command,
            message: failure(stdout, &output.stderr),
        });
    }
    match (command, stdout) {
        ("ADD", Some(result)) => Ok(result),
        ("ADD", None) => Err(CniError::BadResult {
            plugin,
            command,
            reason: String::from_utf8_lossy(&output.stdout).into_owned(),
        }),
        _ => Ok(Value::Null),
    }
}

/// A plugin's error: the spec's `{"code", "msg", "details"}` on stdout, or stderr.
fn failure(stdout: Option<Value>, stderr: &[u8]) -> String {
    if let Some(error) = stdout {
        let msg = error.get("msg").and_then(Value::as_str).unwrap_or_default();
        let details = error
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !msg.is_empty() {
            return if details.is_empty() {
                msg.to_owned()
            } else {
                format!("{msg}: {details}")
            };
        }
    }
    let stderr = String::from_utf8_lossy(stderr).trim().to_owned();
    if stderr.is_empty() {
        "no error message".into()
    } else {
        stderr
    }
}

/// The pod's addresses from an ADD result, without prefix lengths, IPv4 first.
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address").and_then(Value::as_str))
        .map(|cidr| cidr.split('/').next().unwrap_or(cidr).to_owned())
        .collect();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}
