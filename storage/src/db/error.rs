use std::path::PathBuf;
use std::time::Duration;

use rusqlite::ErrorCode;

/// What can go wrong in the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("open database {path}: {source}; pier does not modify a database it cannot read")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path} is damaged ({detail}); pier does not modify a database it cannot \
         read: restore it from a backup, or move it away to start with an empty node"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error(
        "database {path} has schema version {found}, newer than version {supported} that this \
         pier knows; refusing to modify it (run the newer pier, or move the file away)"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("migrate database {path} to schema version {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    #[error("{kind} name {name:?} is already reserved by {holder}")]
    NameTaken {
        kind: &'static str,
        name: String,
        holder: String,
    },
    #[error("{kind} {id} already exists")]
    IdTaken { kind: &'static str, id: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// Another process held the database's write lock for longer than the
    /// connection waits ([`BUSY_TIMEOUT`]). Nothing was changed; the call can
    /// be retried.
    #[error(
        "database is locked by another process; gave up after {waited}s, nothing was changed, \
         retry: {0}",
        waited = BUSY_TIMEOUT.as_secs()
    )]
    Busy(rusqlite::Error),
    /// The file system under the database is full.
    #[error("database: no space left to write it: {0}")]
    Full(rusqlite::Error),
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
}

/// How long a call waits for another process's write lock on the database.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Busy(error),
            Some(ErrorCode::DiskFull) => Self::Full(error),
            _ => Self::Sqlite(error),
        }
    }
}
