use std::path::PathBuf;

/// What can go wrong in the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
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
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}
