//! The exit file: what the monitor leaves when the container's init has
//! exited, and the daemon's source of truth for what happened while it was
//! away.
//!
//! Path: `<exit dir>/exit` in every exit dir the monitor was given (the tmpfs
//! runtime dir and a durable per-container dir). Written atomically: a temp
//! file in the same dir, fsync, rename, fsync of the dir, so a reader sees
//! either no file or a complete one. The content is UTF-8 text, one
//! `key=value` per line, after a version line:
//!
//! ```text
//! pier-exit-v1
//! exit_code=137
//! finished_ns=1795426983123456789
//! oom_killed=false
//! ```
//!
//! `exit_code` is the status for a normal exit, 128+signal for a signal
//! death. `finished_ns` is the wall clock (ns since the Unix epoch) when the
//! monitor reaped the init. Unknown keys are ignored by readers, so later
//! versions can add lines.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::files::{EXIT, EXIT_TEMP};

const VERSION_LINE: &str = "pier-exit-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub exit_code: i32,
    pub finished_ns: i64,
    pub oom_killed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExitFileError {
    #[error("exit file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("exit file {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

impl ExitStatus {
    pub fn encode(&self) -> String {
        format!(
            "{VERSION_LINE}\nexit_code={}\nfinished_ns={}\noom_killed={}\n",
            self.exit_code, self.finished_ns, self.oom_killed
        )
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        if lines.next() != Some(VERSION_LINE) {
            return Err(format!("first line is not {VERSION_LINE}"));
        }
        let (mut code, mut finished, mut oom) = (None, None, None);
        for line in lines {
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("line without '=': {line:?}"));
            };
            match k {
                "exit_code" => code = v.parse().ok(),
                "finished_ns" => finished = v.parse().ok(),
                "oom_killed" => oom = v.parse().ok(),
                _ => {}
            }
        }
        match (code, finished, oom) {
            (Some(exit_code), Some(finished_ns), Some(oom_killed)) => Ok(Self {
                exit_code,
                finished_ns,
                oom_killed,
            }),
            _ => Err("missing or invalid exit_code, finished_ns or oom_killed".into()),
        }
    }
}

/// Path of the exit file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(EXIT)
}

/// Write the exit file into `dir` atomically and durably.
pub fn write(dir: &Path, status: &ExitStatus) -> Result<(), ExitFileError> {
    let tmp = dir.join(EXIT_TEMP);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExitFileError::Io { path, source }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(status.encode().as_bytes())
        .map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    let dst = path_in(dir);
    fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    // The rename itself must survive a power cut on the durable dir.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

/// Read the exit file in `dir`; `Ok(None)` when there is none (yet).
pub fn read(dir: &Path) -> Result<Option<ExitStatus>, ExitFileError> {
    let path = path_in(dir);
    match fs::read_to_string(&path) {
        Ok(text) => ExitStatus::decode(&text)
            .map(Some)
            .map_err(|reason| ExitFileError::Malformed { path, reason }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ExitFileError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_file_round_trips_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        assert!(matches!(read(dir.path()), Ok(None)));
        let st = ExitStatus {
            exit_code: 137,
            finished_ns: 1_795_426_983_123_456_789,
            oom_killed: true,
        };
        write(dir.path(), &st).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(dir.path()).ok().flatten(), Some(st));
        assert!(!dir.path().join(EXIT_TEMP).exists());
    }

    #[test]
    fn malformed_exit_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        fs::write(path_in(dir.path()), "garbage\n").unwrap_or_else(|e| panic!("{e}"));
        let err = read(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("exit file") && err.contains(EXIT), "{err}");
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let st = ExitStatus::decode(
            "pier-exit-v1\nexit_code=3\nfinished_ns=5\noom_killed=false\nnew=1\n",
        );
        assert_eq!(
            st,
            Ok(ExitStatus {
                exit_code: 3,
                finished_ns: 5,
                oom_killed: false
            })
        );
    }
}
