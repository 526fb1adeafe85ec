//! The CRI socket and the locks that keep two pierds apart.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::StartError;

/// The bound CRI socket. Dropping it (on a clean shutdown) removes the socket
/// file; the lock is released when the process exits, whichever way.
#[derive(Debug)]
pub struct CriSocket {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for CriSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes an exclusive lock on `lock`, writing our pid into it for operators.
/// `Ok(None)` when another process holds it.
fn try_lock(lock: &Path) -> Result<Option<Flock<File>>, StartError> {
    let err = |source| StartError::Lock {
        path: lock.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            locked.set_len(0).map_err(err)?;
            writeln!(locked, "{}", std::process::id()).map_err(err)?;
            Ok(Some(locked))
        }
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(err(errno.into())),
    }
}

/// Locks the state root for this process: two daemons on one database and
/// layer store would corrupt each other's bookkeeping.
pub fn lock_state_root(root: &Path) -> Result<Flock<File>, StartError> {
    let lock = root.join("pierd.lock");
    try_lock(&lock)?.ok_or_else(|| StartError::RootInUse {
        root: root.to_owned(),
        lock,
    })
}

/// Binds the CRI socket with mode 0660. A stale socket (nobody answering) is
/// replaced; a live one, or a lock held on it, means another pierd serves it.
pub fn bind(path: &Path) -> Result<(UnixListener, CriSocket), StartError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| StartError::CreateDir {
            path: parent.to_owned(),
            source,
        })?;
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let already = || StartError::AlreadyServing {
        path: path.to_owned(),
    };
    let lock = try_lock(Path::new(&lock_path))?.ok_or_else(already)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(already());
            }
            tracing::info!(path = %path.display(), "replacing stale socket");
            std::fs::remove_file(path).map_err(|source| StartError::Listen {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(StartError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(_) => {}
    }
    let listen_err = |source| StartError::Listen {
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    Ok((
        listener,
        CriSocket {
            path: path.to_owned(),
            _lock: lock,
        },
    ))
}

/// How long the accept loop rests after the process or the node ran out of
/// file descriptors: the listener stays readable while the connection waits
/// in the backlog, so accepting again at once would spin a core until a
/// descriptor frees.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// The connections accepted on the CRI socket. Running out of descriptors
/// is waited out, not reported: the connection stays in the backlog and is
/// accepted once calls in flight have closed theirs.
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    futures_util::stream::unfold((listener, false), |(listener, mut short)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if std::mem::take(&mut short) {
                        tracing::info!("accepting CRI connections again");
                    }
                    return Some((Ok(stream), (listener, short)));
                }
                Err(e) if out_of_descriptors(&e) => {
                    if !std::mem::replace(&mut short, true) {
                        tracing::warn!(error = %e, "cannot accept CRI connections: out of file descriptors; retrying");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(e) => return Some((Err(e), (listener, short))),
            }
        }
    })
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}
