//! Building the effective configuration: embedded defaults, then the main
//! file, then drop-ins in name order. Flags and `PIER_*` variables are applied
//! on top by the command line (`crate::cli`).

use std::io;
use std::path::{Path, PathBuf};

use toml::Table;

use super::{Config, DEFAULT_CONFIG_DIR, DEFAULT_CONFIG_FILE, check_fields};

/// Why the configuration could not be built. Each names where the bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("config directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("{origin}: {reason}")]
    Syntax { origin: String, reason: String },
    #[error("{origin}: key `{key}`: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

/// Which files to read. `None` means the default location, where a missing
/// file or directory is fine; a path given explicitly must exist.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub config_file: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
}

/// Reads the main file and the drop-ins and merges them over the defaults.
/// Each file is checked on its own first, so an error names the file it is in.
pub fn load(options: &LoadOptions) -> Result<Config, ConfigError> {
    let mut merged = Table::new();
    for path in files(options)? {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let origin = format!("config file {}", path.display());
        let (table, config) = parse(&text, &origin)?;
        check_fields(&config, &origin)?;
        merge(&mut merged, table);
    }
    // Every key was accepted file by file and merging only replaces values,
    // so this can fail only on a type mix no single file had; report it anyway.
    deserialize(merged, "merged configuration files")
}

/// The files to read, main file first, then drop-ins sorted by file name.
fn files(options: &LoadOptions) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    match &options.config_file {
        Some(path) => files.push(path.clone()),
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => files.push(DEFAULT_CONFIG_FILE.into()),
        None => {}
    }
    let (dir, explicit) = match &options.config_dir {
        Some(dir) => (dir.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_DIR), false),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => return Ok(files),
        Err(source) => return Err(ConfigError::ReadDir { path: dir, source }),
    };
    let mut dropins = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| ConfigError::ReadDir {
                path: dir.clone(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            dropins.push(path);
        }
    }
    dropins.sort();
    files.extend(dropins);
    Ok(files)
}

/// Parses one file's text into its table and into a full configuration
/// (defaults plus this file), which catches unknown keys and bad values.
fn parse(text: &str, origin: &str) -> Result<(Table, Config), ConfigError> {
    let table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            origin: origin.into(),
            reason: one_line(&e),
        })?;
    let config = deserialize(table.clone(), origin)?;
    Ok((table, config))
}

fn deserialize(table: Table, origin: &str) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let reason = one_line(e.inner());
        // toml repeats the key at the end of its message; it is named already.
        let reason = match reason.strip_suffix(&format!(" in `{key}`")) {
            Some(shorter) => shorter.to_owned(),
            None => reason,
        };
        ConfigError::Invalid {
            origin: origin.into(),
            key,
            reason,
        }
    })
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Merges `overlay` into `base`: tables merge key by key, anything else
/// (including arrays) is replaced by the later value.
fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) => merge(into, from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}
