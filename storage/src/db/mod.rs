//! Opening the database and the typed API over its tables.

mod containers;
mod error;
mod images;
pub mod migrations;
mod sandboxes;
pub mod shared;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

pub use containers::{ContainerProgress, ContainerRecord};
pub use error::{BUSY_TIMEOUT, DbError};
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
    /// and runs the forward migrations. A database written by a newer pier,
    /// or one SQLite cannot read whole, is refused before anything in it is
    /// modified.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        // Checked through a read-only connection first: closing a writable
        // one checkpoints the WAL into the file, which must not happen to a
        // file that is refused.
        if path.exists() {
            drop(Self::open_read_only(path)?);
        }
        let open_err = |source| DbError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        // Another process (a second pierd, an operator's sqlite3) may hold the
        // write lock briefly; wait rather than fail a CRI request.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
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

    /// Opens the database at `path` for reading only, for tools that run
    /// beside a live pierd (`pierd check`): nothing is created, migrated or
    /// written, and a damaged file is refused as [`Self::open`] refuses it.
    pub fn open_read_only(path: &Path) -> Result<Self, DbError> {
        let open_err = |source| DbError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        migrations::refuse_newer(&conn, path)?;
        refuse_damaged(&conn, path)?;
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

/// Refuses a file SQLite cannot read whole, before anything writes to it:
/// a pragma or a migration on a damaged file could make it worse, and what
/// is in it is the only record of the node's pods. The check reads every
/// page once; pier's database is small (rows of pods, containers, images).
fn refuse_damaged(conn: &Connection, path: &Path) -> Result<(), DbError> {
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(|source| DbError::Open {
            path: path.to_owned(),
            source,
        })?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(DbError::Damaged {
            path: path.to_owned(),
            detail: verdict,
        })
    }
}
