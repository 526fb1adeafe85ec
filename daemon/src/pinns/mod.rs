//! The namespace-pinning helper (`pierd pin-namespaces`), run as its own
//! short-lived, single-threaded process: it unshares the pod's namespaces,
//! configures them (hostname, namespaced sysctls) and bind-mounts each onto a
//! file, which keeps it alive with no process inside. A PID namespace dies
//! with its first process, so for one the helper also starts `pier-infra` as
//! that first process and reports its pid. A pod with a user namespace of
//! its own has it made first, so that it owns the others (`userns`). The
//! daemon never unshares or forks itself.

mod userns;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use crate::userns::IdMap;

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
    /// Pin a new user namespace at this path; the other new namespaces
    /// belong to it.
    #[arg(long, requires_all = ["uid_map", "gid_map"])]
    pub user: Option<PathBuf>,
    /// The user namespace's uid mappings, `container:host:length,...`.
    #[arg(long, value_parser = IdMap::parse_arg)]
    pub uid_map: Option<IdMap>,
    /// The user namespace's gid mappings, like `--uid-map`.
    #[arg(long, value_parser = IdMap::parse_arg)]
    pub gid_map: Option<IdMap>,
    /// Internal: this process is the one the helper runs inside the new
    /// user namespace.
    #[arg(long, hide = true)]
    pub inside_userns: bool,
}

impl PinRequest {
    /// The command line that asks `pierd pin-namespaces` for this request.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["pin-namespaces".into()];
        let mut flag = |name: &str, value: std::ffi::OsString| {
            args.push(name.into());
            args.push(value);
        };
        for (name, path) in [
            ("--net", &self.net),
            ("--ipc", &self.ipc),
            ("--uts", &self.uts),
            ("--pid", &self.pid),
            ("--infra", &self.infra),
            ("--infra-root", &self.infra_root),
            ("--user", &self.user),
        ] {
            if let Some(path) = path {
                flag(name, path.into());
            }
        }
        if let Some(hostname) = &self.hostname {
            flag("--hostname", hostname.into());
        }
        for (key, value) in &self.sysctls {
            flag("--sysctl", format!("{key}={value}").into());
        }
        for (name, map) in [("--uid-map", &self.uid_map), ("--gid-map", &self.gid_map)] {
            if let Some(map) = map {
                flag(name, map.to_arg().into());
            }
        }
        if self.inside_userns {
            args.push("--inside-userns".into());
        }
        args
    }
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
    #[error("user namespace: {0}")]
    Userns(String),
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
    if request.user.is_some() {
        return if request.inside_userns {
            userns::inside(request).map(|()| Pinned::default())
        } else {
            userns::pin(request)
        };
    }
    let infra = create(request)?;
    let infra_pid = infra.as_ref().map(Child::id);
    match bind_all(request, Path::new("/proc/self/ns"), infra_pid) {
        Ok(()) => Ok(Pinned { infra_pid }),
        Err(e) => {
            if let Some(child) = infra {
                kill(child);
            }
            Err(e)
        }
    }
}

/// The namespace flags `request` asks this process to unshare (all but the
/// user namespace, which the caller has already made when there is one).
fn flags(request: &PinRequest) -> CloneFlags {
    [
        (CloneFlags::CLONE_NEWNET, request.net.is_some()),
        (CloneFlags::CLONE_NEWIPC, request.ipc.is_some()),
        (CloneFlags::CLONE_NEWUTS, request.uts.is_some()),
        (CloneFlags::CLONE_NEWPID, request.pid.is_some()),
    ]
    .into_iter()
    .filter(|(_, wanted)| *wanted)
    .fold(CloneFlags::empty(), |all, (flag, _)| all | flag)
}

/// Unshares the namespaces, sets the hostname and sysctls in them, and for
/// a PID namespace starts `pier-infra` as its first process.
fn create(request: &PinRequest) -> Result<Option<Child>, PinError> {
    unshare(flags(request)).map_err(PinError::Unshare)?;
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
    match (&request.pid, &request.infra, &request.infra_root) {
        (Some(_), Some(binary), Some(root)) => start_infra(binary, root).map(Some),
        _ => Ok(None),
    }
}

/// Bind-mounts each namespace `request` names from `ns_dir` (a process's
/// `/proc/<pid>/ns`), the PID namespace from `infra_pid`'s. On failure the
/// pins already made are released.
fn bind_all(request: &PinRequest, ns_dir: &Path, infra_pid: Option<u32>) -> Result<(), PinError> {
    let infra_ns = infra_pid.map(|pid| PathBuf::from(format!("/proc/{pid}/ns")));
    let wanted = [
        ("user", &request.user, Some(ns_dir)),
        ("net", &request.net, Some(ns_dir)),
        ("ipc", &request.ipc, Some(ns_dir)),
        ("uts", &request.uts, Some(ns_dir)),
        ("pid", &request.pid, infra_ns.as_deref()),
    ];
    let mut pinned: Vec<&Path> = Vec::new();
    for (ns, path, dir) in wanted {
        let (Some(path), Some(dir)) = (path, dir) else {
            continue;
        };
        if let Err(e) = bind_from(ns, &dir.join(ns), path) {
            for done in pinned {
                unpin(done);
            }
            return Err(e);
        }
        pinned.push(path);
    }
    Ok(())
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
