//! Opening the database and the typed API over its tables.

mod containers;
mod error;
mod images;
pub mod migrations;
mod sandboxes;
pub mod shared;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

pub use containers::{ContainerProgress, ContainerRecord};
pub use error::DbError;
pub use images::{ImageRecord, LayerRecord};
pub use sandboxes::SandboxRecord;

/// One open pier database. Not `Sync`: the daemon serialises access (one
/// connection behind a mutex, used from blocking threads).
#[derive(Debug)]
pub struct Database {
    conn: Connection,
    path: PathBuf,
}

impl Database {
    /// Opens (creating if absent) the database at `path`, switches it to WAL
    /// and runs the forward migrations. A database written by a newer pier is
    /// refused before anything in it is modified.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let open_err = |source| DbError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // Another process (a second pierd, an operator's sqlite3) may hold the
        // write lock briefly; wait rather than fail a CRI request.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        migrations::refuse_newer(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrations::migrate(&mut conn, path)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version stored in the file.
    pub fn schema_version(&self) -> Result<u32, DbError> {
        Ok(migrations::stored_version(&self.conn)?)
    }
}
