//! Versioned schema. `PRAGMA user_version` holds the version; each entry of
//! `MIGRATIONS` moves the schema one version forward and runs in its own
//! transaction, so a crash mid-migration leaves the previous version intact.

use std::path::Path;

use rusqlite::Connection;

use super::DbError;

/// Forward migrations, in order: entry `i` takes the schema from version `i`
/// to `i + 1`. Never edit a released entry; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE sandboxes (
        id              TEXT PRIMARY KEY,
        name            TEXT NOT NULL,
        namespace       TEXT NOT NULL,
        uid             TEXT NOT NULL,
        attempt         INTEGER NOT NULL,
        state           TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        runtime_handler TEXT NOT NULL,
        config          BLOB NOT NULL,
        runtime         BLOB NOT NULL,
        UNIQUE (name, namespace, uid, attempt)
    );
    CREATE TABLE containers (
        id          TEXT PRIMARY KEY,
        sandbox_id  TEXT NOT NULL REFERENCES sandboxes(id),
        name        TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        image_id    TEXT NOT NULL,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        started_at  INTEGER NOT NULL DEFAULT 0,
        finished_at INTEGER NOT NULL DEFAULT 0,
        exit_code   INTEGER NOT NULL DEFAULT 0,
        reason      TEXT NOT NULL DEFAULT '',
        message     TEXT NOT NULL DEFAULT '',
        config      BLOB NOT NULL,
        runtime     BLOB NOT NULL,
        UNIQUE (sandbox_id, name, attempt)
    );
    CREATE INDEX containers_by_sandbox ON containers(sandbox_id);
    CREATE TABLE images (
        id              TEXT PRIMARY KEY,
        manifest_digest TEXT NOT NULL,
        size            INTEGER NOT NULL,
        config          BLOB NOT NULL,
        pinned          INTEGER NOT NULL DEFAULT 0,
        created_at      INTEGER NOT NULL
    );
    CREATE TABLE image_names (
        name     TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
    );
    CREATE INDEX image_names_by_image ON image_names(image_id);
    CREATE TABLE layers (
        chain_id TEXT PRIMARY KEY,
        diff_id  TEXT NOT NULL,
        parent   TEXT NOT NULL,
        size     INTEGER NOT NULL
    );
    CREATE TABLE image_layers (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        chain_id TEXT NOT NULL REFERENCES layers(chain_id),
        PRIMARY KEY (image_id, position)
    );
    CREATE INDEX image_layers_by_layer ON image_layers(chain_id);
    ",
    // 2: images containers mount as volumes (KEP-4639), which must stay
    // while the container exists.
    "
    CREATE TABLE image_volumes (
        container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
        image_id     TEXT NOT NULL,
        PRIMARY KEY (container_id, image_id)
    );
    CREATE INDEX image_volumes_by_image ON image_volumes(image_id);
    ",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(super) fn stored_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Refuses a database from a newer pier before any pragma or migration writes to it.
pub(super) fn refuse_newer(conn: &Connection, path: &Path) -> Result<(), DbError> {
    let found = stored_version(conn).map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    if found > SCHEMA_VERSION {
        return Err(DbError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let found = stored_version(conn).map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        let err = |source| DbError::Migrate {
            path: path.to_owned(),
            version,
            source,
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(path = %path.display(), version, "migrated database schema");
    }
    Ok(())
}
