//! Unix sockets at paths of any length.
//!
//! A Unix socket address holds at most 107 path bytes (`sun_path` is 108
//! with its NUL), and a monitor's sockets live at
//! `<runroot>/containers/<64-hex id>/monitor.sock`, which leaves a run root
//! of 18 bytes. Like conmon, we reach a long path through a short one: the
//! socket's directory is opened with `O_PATH` and the socket is named
//! relative to that descriptor's `/proc` entry, so only the file name must
//! fit. The descriptor stays open for as long as the short path is in use.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path a Unix socket address holds.
pub const SUN_PATH_MAX: usize = 107;

/// `O_PATH` on Linux (the same value on every architecture pier builds for):
/// a descriptor that names a directory without opening it for reading.
const O_PATH: i32 = 0o10000000;
const O_DIRECTORY: i32 = 0o200000;

/// A path to a socket that fits in a socket address, and whatever keeps it
/// valid.
#[derive(Debug)]
pub struct ShortPath {
    path: PathBuf,
    /// The socket's directory, when `path` goes through `/proc`.
    _dir: Option<File>,
}

impl ShortPath {
    /// A path to `socket` for this process to use.
    pub fn new(socket: &Path) -> io::Result<Self> {
        Self::through(socket, "self")
    }

    /// A path to `socket` for a child or another process to use, such as
    /// runc's `--console-socket`: it names this process by pid, so it stays
    /// valid in the other process while `self` is alive.
    pub fn for_others(socket: &Path) -> io::Result<Self> {
        Self::through(socket, &std::process::id().to_string())
    }

    fn through(socket: &Path, process: &str) -> io::Result<Self> {
        if socket.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(Self {
                path: socket.to_owned(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
            return Err(too_long(socket, "it has no parent directory to go through"));
        };
        let dir = File::options()
            .read(true)
            .custom_flags(O_PATH | O_DIRECTORY)
            .open(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", dir.display())))?;
        let path = Path::new("/proc")
            .join(process)
            .join("fd")
            .join(dir.as_raw_fd().to_string())
            .join(name);
        if path.as_os_str().len() > SUN_PATH_MAX {
            return Err(too_long(socket, "even its file name alone is too long"));
        }
        Ok(Self {
            path,
            _dir: Some(dir),
        })
    }

    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

fn too_long(socket: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "socket path {} is longer than the {SUN_PATH_MAX} bytes of a socket address, and {why}",
            socket.display()
        ),
    )
}

/// Binds a listening socket at `path`, however long.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    UnixListener::bind(ShortPath::new(path)?.as_path())
}

/// Connects to the socket at `path`, however long.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(ShortPath::new(path)?.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn deep_dir(root: &Path) -> PathBuf {
        let dir = root.join("a".repeat(60)).join("b".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn short_paths_are_used_as_they_are() {
        let p = ShortPath::new(Path::new("/run/pier/x.sock")).unwrap();
        assert_eq!(p.as_path(), Path::new("/run/pier/x.sock"));
    }

    #[test]
    fn a_socket_under_a_long_directory_binds_and_connects() {
        let tmp = tempfile::tempdir().unwrap();
        let path = deep_dir(tmp.path()).join("monitor.sock");
        assert!(path.as_os_str().len() > SUN_PATH_MAX);
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "the socket lives at its real path");
        let mut client = connect(&path).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn another_process_reaches_it_through_this_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let path = deep_dir(tmp.path()).join("console.sock");
        let _listener = bind(&path).unwrap();
        let short = ShortPath::for_others(&path).unwrap();
        let shown = short.as_path().to_string_lossy().into_owned();
        assert!(shown.starts_with(&format!("/proc/{}/fd/", std::process::id())));
        UnixStream::connect(short.as_path()).unwrap();
    }

    #[test]
    fn a_file_name_too_long_for_any_address_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s".repeat(120));
        let err = bind(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("file name"), "{err}");
    }
}
