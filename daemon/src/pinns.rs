//! The namespace-pinning helper (`pierd pin-namespaces`), run as its own
//! short-lived, single-threaded process: it unshares the pod's namespaces,
//! configures them (hostname, namespaced sysctls) and bind-mounts each onto a
//! file, which keeps it alive with no process inside. A PID namespace dies
//! with its first process, so for one the helper also starts `pier-infra` as
//! that first process and reports its pid. The daemon never unshares or
//! forks itself.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// What the helper is asked to create.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PinRequest {
    /// Pin a new network namespace at this path.
    #[arg(long)]
    pub net: Option<PathBuf>,
    /// Pin a new IPC namespace at this path.
    #[arg(long)]
    pub ipc: Option<PathBuf>,
    /// Pin a new UTS namespace at this path.
    #[arg(long)]
    pub uts: Option<PathBuf>,
    /// Pin a new PID namespace at this path, held by a `pier-infra` process.
    #[arg(long, requires_all = ["infra", "infra_root"])]
    pub pid: Option<PathBuf>,
    /// The `pier-infra` binary.
    #[arg(long)]
    pub infra: Option<PathBuf>,
    /// The empty directory `pier-infra` chroots into.
    #[arg(long)]
    pub infra_root: Option<PathBuf>,
    /// Hostname to set in the new UTS namespace.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Namespaced sysctl to set, KEY=VALUE (repeatable).
    #[arg(long = "sysctl", value_parser = parse_sysctl)]
    pub sysctls: Vec<(String, String)>,
}

fn parse_sysctl(value: &str) -> Result<(String, String), String> {
    let (key, val) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not KEY=VALUE"))?;
    let valid = !key.is_empty()
        && !key.contains("..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if valid {
        Ok((key.to_owned(), val.to_owned()))
    } else {
        Err(format!("bad sysctl name {key:?}"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("unshare namespaces: {0}")]
    Unshare(nix::Error),
    #[error("set hostname {hostname:?}: {source}")]
    Hostname {
        hostname: String,
        source: nix::Error,
    },
    #[error("set sysctl {key}={value}: {source}")]
    Sysctl {
        key: String,
        value: String,
        source: std::io::Error,
    },
    #[error("create pin file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("start {binary}: {source}")]
    InfraSpawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{binary} failed: {message}")]
    InfraFailed { binary: PathBuf, message: String },
    #[error("bind {ns} namespace onto {path}: {source}")]
    Bind {
        ns: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
}

/// What the helper made that the daemon must know about.
#[derive(Debug, Default)]
pub struct Pinned {
    /// The host pid of the PID namespace's `pier-infra`.
    pub infra_pid: Option<u32>,
}

/// Unshares, configures and pins. On failure nothing stays pinned or running.
pub fn pin(request: &PinRequest) -> Result<Pinned, PinError> {
    let wanted = [
        ("net", CloneFlags::CLONE_NEWNET, &request.net),
        ("ipc", CloneFlags::CLONE_NEWIPC, &request.ipc),
        ("uts", CloneFlags::CLONE_NEWUTS, &request.uts),
    ];
    let flags = wanted
        .iter()
        .filter(|(_, _, path)| path.is_some())
        .fold(CloneFlags::empty(), |all, (_, flag, _)| all | *flag);
    let flags = if request.pid.is_some() {
        flags | CloneFlags::CLONE_NEWPID
    } else {
        flags
    };
    unshare(flags).map_err(PinError::Unshare)?;
    if let (Some(_), Some(hostname)) = (&request.uts, &request.hostname) {
        nix::unistd::sethostname(hostname).map_err(|source| PinError::Hostname {
            hostname: hostname.clone(),
            source,
        })?;
    }
    for (key, value) in &request.sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| PinError::Sysctl {
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }
    let mut pinned: Vec<&Path> = Vec::new();
    for (ns, _, path) in wanted {
        let Some(path) = path else { continue };
        if let Err(e) = bind(ns, path) {
            for done in pinned {
                unpin(done);
            }
            return Err(e);
        }
        pinned.push(path);
    }
    let (Some(pid_pin), Some(binary), Some(root)) =
        (&request.pid, &request.infra, &request.infra_root)
    else {
        return Ok(Pinned::default());
    };
    let held = start_infra(binary, root).and_then(|child| {
        let ns = PathBuf::from(format!("/proc/{}/ns/pid", child.id()));
        match bind_from("pid", &ns, pid_pin) {
            Ok(()) => Ok(child),
            Err(e) => {
                kill(child);
                Err(e)
            }
        }
    });
    match held {
        Ok(child) => Ok(Pinned {
            infra_pid: Some(child.id()),
        }),
        Err(e) => {
            for done in pinned {
                unpin(done);
            }
            Err(e)
        }
    }
}

/// Starts `pier-infra` as the first process of the new PID namespace (the
/// helper's next child) and waits until it has dropped its privileges. It
/// outlives the helper; its parent becomes the host's init.
fn start_infra(binary: &Path, root: &Path) -> Result<Child, PinError> {
    let mut child = Command::new(binary)
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| PinError::InfraSpawn {
            binary: binary.to_owned(),
            source,
        })?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    if line == "ready\n" {
        return Ok(child);
    }
    let mut message = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut message);
    }
    kill(child);
    let message = message.trim();
    Err(PinError::InfraFailed {
        binary: binary.to_owned(),
        message: if message.is_empty() {
            "it exited without reporting ready".into()
        } else {
            message.into()
        },
    })
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn bind(ns: &'static str, path: &Path) -> Result<(), PinError> {
    bind_from(ns, &Path::new("/proc/self/ns").join(ns), path)
}

/// Bind-mounts the namespace file `source` onto a new file at `path`.
fn bind_from(ns: &'static str, source: &Path, path: &Path) -> Result<(), PinError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| PinError::Create {
            path: path.to_owned(),
            source,
        })?;
    mount(
        Some(source),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| {
        let _ = std::fs::remove_file(path);
        PinError::Bind {
            ns,
            path: path.to_owned(),
            source,
        }
    })
}

/// Releases a pinned namespace: detaches the bind mount and removes the file.
/// Already-released pins are fine, so this can run any number of times.
pub fn unpin(path: &Path) {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "unmount pinned namespace"),
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "remove namespace pin"),
    }
}
