//! pierd's command line: flags (each also settable as a `PIER_*` variable)
//! that override the configuration files, and the `config` subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, Config, ConfigError, LoadOptions, LogFormat, check_consistency, check_fields,
};

#[derive(Debug, Parser)]
#[command(
    name = "pierd",
    version,
    about = "pier: a Kubernetes container runtime (CRI v1)",
    // A flag given twice takes its last value, so wrappers can append overrides.
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub flags: Flags,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration, with every default, as TOML.
    Config,
    /// Report whether the database, the run root and the kernel's state
    /// agree: one line per disagreement, exit status 1 if there is any, 2 if
    /// the check could not be made. Read-only: safe beside a running pierd.
    Check,
    /// Internal: unshare and pin a pod's namespaces (run by pierd itself).
    #[command(hide = true)]
    PinNamespaces(Box<crate::pinns::PinRequest>),
}

/// Flags override the configuration files; a flag not given falls back to its
/// `PIER_*` environment variable, then to the files, then to the defaults.
#[derive(Debug, Args, Default)]
pub struct Flags {
    /// Main configuration file [default: /etc/pier/pier.toml, if present].
    #[arg(long, global = true, env = "PIER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Drop-in directory; its *.toml files apply in name order [default: /etc/pier/pier.d].
    #[arg(long, global = true, env = "PIER_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Path of the CRI socket.
    #[arg(long, global = true, env = "PIER_LISTEN", value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// State root (database, images, container layers).
    #[arg(long, global = true, env = "PIER_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Run root (sockets, monitor files, network namespaces).
    #[arg(long, global = true, env = "PIER_RUNROOT", value_name = "DIR")]
    pub runroot: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter directive.
    #[arg(long, global = true, env = "PIER_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, env = "PIER_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// CNI network configuration directory.
    #[arg(long, global = true, env = "PIER_CNI_CONFIG_DIR", value_name = "DIR")]
    pub cni_config_dir: Option<PathBuf>,
    /// CNI plugin directory (repeatable; replaces the configured list).
    #[arg(
        long,
        global = true,
        env = "PIER_CNI_PLUGIN_DIR",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub cni_plugin_dir: Vec<PathBuf>,
    /// Default runtime: a configured handler name, or the path of the default
    /// handler's OCI runtime binary.
    #[arg(long, global = true, env = "PIER_DEFAULT_RUNTIME", value_name = "PATH")]
    pub default_runtime: Option<String>,
    /// Send a registry's pulls to a mirror first, e.g.
    /// registry.k8s.io=http://127.0.0.1:5000 (repeatable; replaces that registry's list).
    #[arg(long, global = true, env = "PIER_REGISTRY_MIRROR", value_name = "REGISTRY=URL",
          value_delimiter = ',', value_parser = parse_mirror)]
    pub registry_mirror: Vec<(String, String)>,
    /// Speak plain HTTP to this registry (repeatable; adds to the configured list).
    #[arg(
        long,
        global = true,
        env = "PIER_INSECURE_REGISTRY",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    /// Most bytes one image pull may unpack, all layers together.
    #[arg(
        long,
        global = true,
        env = "PIER_MAX_UNPACKED_BYTES",
        value_name = "BYTES"
    )]
    pub max_unpacked_bytes: Option<u64>,
    /// Address of the streaming server (Exec, Attach, PortForward).
    #[arg(
        long,
        global = true,
        env = "PIER_STREAMING_ADDRESS",
        value_name = "ADDR:PORT"
    )]
    pub streaming_address: Option<SocketAddr>,
    /// Serve Prometheus metrics (GET /metrics) on this address.
    #[arg(
        long,
        global = true,
        env = "PIER_METRICS_ADDRESS",
        value_name = "ADDR:PORT"
    )]
    pub metrics_address: Option<SocketAddr>,
    /// Export traces of CRI calls to this OTLP collector (gRPC), e.g.
    /// http://127.0.0.1:4317.
    #[arg(long, global = true, env = "PIER_TRACING_ENDPOINT", value_name = "URL")]
    pub tracing_endpoint: Option<String>,
    /// Share of traces started by pierd that are exported, 0.0 to 1.0.
    #[arg(
        long,
        global = true,
        env = "PIER_TRACING_SAMPLING_RATE",
        value_name = "RATE"
    )]
    pub tracing_sampling_rate: Option<f64>,
}

fn parse_mirror(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((registry, url)) if !registry.is_empty() && !url.is_empty() => {
            Ok((registry.to_owned(), url.to_owned()))
        }
        _ => Err(format!("{value:?} is not REGISTRY=URL")),
    }
}

impl Flags {
    /// Builds the effective configuration: files, then these flags, then checks.
    pub fn effective_config(&self) -> Result<Config, ConfigError> {
        let mut config = config::load(&LoadOptions {
            config_file: self.config.clone(),
            config_dir: self.config_dir.clone(),
        })?;
        self.apply(&mut config);
        check_fields(&config, "command line or PIER_* environment")?;
        check_consistency(&config)?;
        Ok(config)
    }

    /// Overrides what the files said with what was given on the command line.
    pub fn apply(&self, config: &mut Config) {
        let set = |to: &mut PathBuf, from: &Option<PathBuf>| {
            if let Some(from) = from {
                to.clone_from(from);
            }
        };
        set(&mut config.listen, &self.listen);
        set(&mut config.root, &self.root);
        set(&mut config.runroot, &self.runroot);
        set(&mut config.cni.conf_dir, &self.cni_config_dir);
        if let Some(level) = &self.log_level {
            config.log.level.clone_from(level);
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if !self.cni_plugin_dir.is_empty() {
            config.cni.plugin_dirs.clone_from(&self.cni_plugin_dir);
        }
        if let Some(runtime) = &self.default_runtime {
            if config.runtime.handlers.contains_key(runtime) {
                config.runtime.default_runtime.clone_from(runtime);
            } else {
                let handler = config
                    .runtime
                    .handlers
                    .entry(config.runtime.default_runtime.clone())
                    .or_default();
                handler.path = runtime.into();
            }
        }
        let mut mirrored: Vec<&str> = Vec::new();
        for (registry, url) in &self.registry_mirror {
            let endpoints = config.registry.mirrors.entry(registry.clone()).or_default();
            // The first flag for a registry replaces the files' list; later ones append.
            if !mirrored.contains(&registry.as_str()) {
                endpoints.clear();
                mirrored.push(registry);
            }
            endpoints.push(url.clone());
        }
        for host in &self.insecure_registry {
            if !config.registry.insecure.contains(host) {
                config.registry.insecure.push(host.clone());
            }
        }
        if let Some(bytes) = self.max_unpacked_bytes {
            config.images.max_unpacked_bytes = bytes;
        }
        if let Some(address) = self.streaming_address {
            config.streaming.address = address;
        }
        if let Some(address) = self.metrics_address {
            config.metrics.address = Some(address);
        }
        if let Some(endpoint) = &self.tracing_endpoint {
            config.tracing.endpoint.clone_from(endpoint);
        }
        if let Some(rate) = self.tracing_sampling_rate {
            config.tracing.sampling_rate = rate;
        }
    }
}
