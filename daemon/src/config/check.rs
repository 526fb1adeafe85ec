//! Checks on configuration values that types alone cannot express.

use std::path::Path;

use super::{Config, ConfigError};

/// Checks each value on its own. Run once per file (on defaults plus that
/// file) and once for the command line, so an error names where it came from.
pub fn check_fields(config: &Config, origin: &str) -> Result<(), ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        origin: origin.into(),
        key: key.into(),
        reason,
    };
    for (key, path) in [
        ("listen", &config.listen),
        ("root", &config.root),
        ("runroot", &config.runroot),
        ("cni.conf_dir", &config.cni.conf_dir),
    ] {
        absolute(path).map_err(|reason| invalid(key, reason))?;
    }
    for dir in &config.cni.plugin_dirs {
        absolute(dir).map_err(|reason| invalid("cni.plugin_dirs", reason))?;
    }
    tracing_subscriber::EnvFilter::try_new(&config.log.level).map_err(|e| {
        invalid(
            "log.level",
            format!("{:?} is not a log level or filter: {e}", config.log.level),
        )
    })?;
    for (name, handler) in &config.runtime.handlers {
        let key = format!("runtime.handlers.{name}");
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(invalid(
                &key,
                format!("{name:?} is not a valid handler name"),
            ));
        }
        if !handler.root.as_os_str().is_empty() {
            absolute(&handler.root).map_err(|reason| invalid(&format!("{key}.root"), reason))?;
        }
    }
    for (key, path, what) in [
        (
            "runtime.monitor_path",
            &config.runtime.monitor_path,
            "the monitor",
        ),
        (
            "runtime.infra_path",
            &config.runtime.infra_path,
            "the pod infra",
        ),
    ] {
        if path.as_os_str().is_empty() {
            return Err(invalid(key, format!("must name {what} binary")));
        }
    }
    for (registry, endpoints) in &config.registry.mirrors {
        let key = format!("registry.mirrors.{registry}");
        registry_host(registry).map_err(|reason| invalid(&key, reason))?;
        for endpoint in endpoints {
            endpoint_url(endpoint).map_err(|reason| invalid(&key, reason))?;
        }
    }
    for host in &config.registry.insecure {
        registry_host(host).map_err(|reason| invalid("registry.insecure", reason))?;
    }
    for (key, value) in [
        (
            "streaming.idle_timeout_seconds",
            config.streaming.idle_timeout_seconds,
        ),
        (
            "streaming.stream_creation_timeout_seconds",
            config.streaming.stream_creation_timeout_seconds,
        ),
        (
            "streaming.max_sessions",
            config.streaming.max_sessions as u64,
        ),
        (
            "streaming.token_ttl_seconds",
            config.streaming.token_ttl_seconds,
        ),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be at least 1".into()));
        }
    }
    let rate = config.tracing.sampling_rate;
    if !(0.0..=1.0).contains(&rate) {
        return Err(invalid(
            "tracing.sampling_rate",
            format!("{rate} is not between 0.0 and 1.0"),
        ));
    }
    if !config.tracing.endpoint.is_empty() {
        collector_url(&config.tracing.endpoint)
            .map_err(|reason| invalid("tracing.endpoint", reason))?;
    }
    if config.images.max_unpacked_bytes == 0 {
        return Err(invalid(
            "images.max_unpacked_bytes",
            "must be at least 1; no image unpacks to nothing".into(),
        ));
    }
    if config.container_logs.max_line_size < 128 {
        return Err(invalid(
            "container_logs.max_line_size",
            format!(
                "{} is too small; use at least 128 bytes",
                config.container_logs.max_line_size
            ),
        ));
    }
    Ok(())
}

/// Checks that hold only for the configuration as a whole.
pub fn check_consistency(config: &Config) -> Result<(), ConfigError> {
    if !config
        .runtime
        .handlers
        .contains_key(&config.runtime.default_runtime)
    {
        let known: Vec<_> = config.runtime.handlers.keys().map(String::as_str).collect();
        return Err(ConfigError::Invalid {
            origin: "effective configuration".into(),
            key: "runtime.default_runtime".into(),
            reason: format!(
                "{:?} is not a configured handler (configured: {})",
                config.runtime.default_runtime,
                known.join(", ")
            ),
        });
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<(), String> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(format!("{} is not an absolute path", path.display()))
    }
}

/// A registry as images name it: `host` or `host:port`, no scheme or path.
fn registry_host(host: &str) -> Result<(), String> {
    let valid = !host.is_empty()
        && !host.contains("://")
        && !host.contains('/')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a registry host (expected host or host:port)"
        ))
    }
}

/// An OTLP collector: `http://` or `https://`, a host and a port.
fn collector_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let authority = rest.map(|r| r.split('/').next().unwrap_or_default());
    match authority.map(|a| a.parse::<http::uri::Authority>()) {
        Some(Ok(a)) if !a.host().is_empty() => Ok(()),
        _ => Err(format!(
            "{url:?} is not an http:// or https:// collector address"
        )),
    }
}

/// A mirror endpoint: `http://` or `https://` followed by a host.
fn endpoint_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if registry_host(rest.split('/').next().unwrap_or_default()).is_ok() => Ok(()),
        _ => Err(format!(
            "{url:?} is not an http:// or https:// registry endpoint"
        )),
    }
}
