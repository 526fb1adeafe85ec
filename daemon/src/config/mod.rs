//! pierd's configuration: the types, their embedded defaults and the checks a
//! value must pass. `load` builds the effective configuration from files,
//! drop-ins, environment and flags.

mod check;
mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use check::{check_consistency, check_fields};
pub use load::{ConfigError, LoadOptions, load};

/// Default location of the main configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/pier/pier.toml";
/// Default directory of drop-in files, applied in name order after the main file.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/pier/pier.d";

/// The effective configuration. Every field has a default, so an empty file
/// (or none at all) is a valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Path of the CRI socket.
    pub listen: PathBuf,
    /// State root: database, blobs, layers, container writable layers.
    pub root: PathBuf,
    /// Run root (tmpfs): sockets, pid files, monitors' runtime files, netns pins.
    pub runroot: PathBuf,
    pub log: LogConfig,
    pub runtime: RuntimeConfig,
    pub cni: CniConfig,
    pub registry: RegistryConfig,
    pub images: ImagesConfig,
    pub streaming: StreamingConfig,
    pub container_logs: ContainerLogConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    pub exec: ExecConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "/run/pier/pier.sock".into(),
            root: "/var/lib/pier".into(),
            runroot: "/run/pier".into(),
            log: LogConfig::default(),
            runtime: RuntimeConfig::default(),
            cni: CniConfig::default(),
            registry: RegistryConfig::default(),
            images: ImagesConfig::default(),
            streaming: StreamingConfig::default(),
            container_logs: ContainerLogConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            exec: ExecConfig::default(),
        }
    }
}

impl Config {
    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.root.join("pier.db")
    }

    /// `<runroot>/containers/<id>`: the monitor's files (control socket, pid
    /// files, the tmpfs copy of the exit file). What lives under the state
    /// root is [`pier_storage::ContainerDir`]'s.
    pub fn container_run_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("containers").join(id)
    }

    /// The OCI runtime's `--root` for the handler named `name`: its own
    /// configured root, or one of pier's under the run root. Only pier's own
    /// roots are pier's to sweep.
    pub fn runtime_root(&self, name: &str, handler: &RuntimeHandler) -> (PathBuf, bool) {
        if handler.root.as_os_str().is_empty() {
            (self.runroot.join("runtime").join(name), true)
        } else {
            (handler.root.clone(), false)
        }
    }
}

/// pierd's own log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a tracing filter
    /// directive such as `info,pierd::service=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// OCI runtimes and how containers are run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The handler used when a pod names no RuntimeClass handler.
    pub default_runtime: String,
    /// RuntimeClass handler name → OCI runtime. Configured handlers are added
    /// to the built-in `runc` one (or replace it, by that name).
    #[serde(deserialize_with = "handlers_over_defaults")]
    pub handlers: BTreeMap<String, RuntimeHandler>,
    /// The monitor binary; a bare name is looked up beside pierd, then in PATH.
    pub monitor_path: PathBuf,
    /// The process holding a pod's shared PID namespace; looked up like the monitor.
    pub infra_path: PathBuf,
    pub cgroup_manager: CgroupManager,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            default_runtime: "runc".into(),
            handlers: BTreeMap::from([(
                "runc".into(),
                RuntimeHandler {
                    path: "runc".into(),
                    root: PathBuf::new(),
                },
            )]),
            monitor_path: "pier-monitor".into(),
            infra_path: "pier-infra".into(),
            cgroup_manager: CgroupManager::Cgroupfs,
        }
    }
}

/// Reads the handler table on top of the built-in handlers; a handler that
/// names no binary runs the binary named like the handler (`crun` → `crun`).
fn handlers_over_defaults<'de, D>(de: D) -> Result<BTreeMap<String, RuntimeHandler>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut handlers = RuntimeConfig::default().handlers;
    for (name, mut handler) in BTreeMap::<String, RuntimeHandler>::deserialize(de)? {
        if handler.path.as_os_str().is_empty() {
            handler.path = PathBuf::from(&name);
        }
        handlers.insert(name, handler);
    }
    Ok(handlers)
}

/// One OCI runtime binary, invoked as CRI-O invokes runc.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The binary; a bare name is looked up in PATH. Empty means the
    /// handler's own name.
    pub path: PathBuf,
    /// The runtime's own state directory (`--root`); empty means
    /// `<runroot>/runtime/<handler>`.
    pub root: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupManager {
    Cgroupfs,
    Systemd,
}

/// CNI network configuration and plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Where network configurations (`*.conflist`, `*.conf`, `*.json`) live;
    /// the first in name order is the pod network.
    pub conf_dir: PathBuf,
    /// Where plugin binaries are searched, in order.
    pub plugin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            plugin_dirs: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
        }
    }
}

/// Where images come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry host → endpoints tried in order before the registry itself,
    /// e.g. `"registry.k8s.io" = ["http://127.0.0.1:5000"]`.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Registries (`host` or `host:port`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
}

/// Bounds on what pulling an image may take from the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Most bytes one pull may unpack (the uncompressed layer streams, all
    /// layers together), against decompression bombs. A pull that crosses
    /// it stops at once and leaves nothing behind.
    pub max_unpacked_bytes: u64,
}

/// 15% of a 20 GB image filesystem. Kubelet evicts pods once less than 15%
/// of the image filesystem is free (`imagefs.available<15%`) and collects
/// images from 85% use on, so a node it keeps running has at least this
/// much free: one pull, however it is compressed, cannot fill its disk.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 3_000_000_000;

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES,
        }
    }
}

/// The streaming server behind Exec, Attach and PortForward URLs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Address to listen on; port 0 picks a free port at startup.
    pub address: SocketAddr,
    /// A session that moves no byte either way for this long is closed
    /// (kubelet's default: 4 hours).
    pub idle_timeout_seconds: u64,
    /// How long a SPDY client may take to open the streams of a session
    /// (kubelet's default: 30 seconds).
    pub stream_creation_timeout_seconds: u64,
    /// Sessions (exec, attach, port forward connections) open at once;
    /// beyond, new connections get 503.
    pub max_sessions: usize,
    /// How long a URL from Exec, Attach or PortForward stays valid
    /// (kubelet's default: 1 minute). Each URL works once.
    pub token_ttl_seconds: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            idle_timeout_seconds: 4 * 60 * 60,
            stream_creation_timeout_seconds: 30,
            max_sessions: 256,
            token_ttl_seconds: 60,
        }
    }
}

/// Limits applied by the monitors to container log files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerLogConfig {
    /// Longest log record in bytes; longer lines are split into partial records.
    pub max_line_size: u64,
    /// Largest log file in bytes, 0 for no limit (kubelet rotates logs itself).
    pub max_file_size: u64,
}

impl Default for ContainerLogConfig {
    fn default() -> Self {
        Self {
            max_line_size: 16 * 1024,
            max_file_size: 0,
        }
    }
}

/// How ExecSync and Exec start processes in a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// Let the monitor start exec'd processes itself, applying what `runc
    /// exec` would (docs/security.md, "Native exec"), for containers whose
    /// spec uses only what that path covers; the others, and every
    /// container with this off, go through `runc exec`. Containers created
    /// while it was off keep `runc exec`.
    pub native: bool,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self { native: true }
    }
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ADDR:PORT` to serve `GET /metrics` on; empty (the default) for no
    /// endpoint.
    #[serde(with = "optional_address")]
    pub address: Option<SocketAddr>,
}

/// Traces of CRI calls, exported over OTLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP collector, e.g. `http://127.0.0.1:4317`; empty (the default)
    /// for no tracing at all.
    pub endpoint: String,
    pub protocol: TracingProtocol,
    /// Share of traces started here that are kept, 0.0 to 1.0. A trace
    /// kubelet started keeps kubelet's decision (its `traceparent` flags).
    pub sampling_rate: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            protocol: TracingProtocol::Grpc,
            sampling_rate: 1.0,
        }
    }
}

/// How spans reach the collector. OTLP over gRPC is what kubelet, CRI-O and
/// containerd speak to a collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TracingProtocol {
    Grpc,
}

/// An optional socket address as TOML spells it: a string, empty for none.
mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<SocketAddr>, ser: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(address) => ser.collect_str(address),
            None => ser.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(de)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|e| D::Error::custom(format!("{text:?} is not ADDR:PORT: {e}")))
    }
}

#[cfg(test)]
mod tests;
