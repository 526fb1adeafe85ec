//! The database as the daemon and the image store share it: one
//! connection behind a mutex, used from blocking threads.

use std::sync::{Arc, Mutex, MutexGuard};

use super::Database;

pub type SharedDatabase = Arc<Mutex<Database>>;

/// Locks the connection. A panic while holding the lock cannot leave SQLite
/// half-written (transactions roll back), so a poisoned lock is safe to reuse.
pub fn lock(db: &Mutex<Database>) -> MutexGuard<'_, Database> {
    db.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `work` against the database on a blocking thread: SQLite calls
/// block, and must not stall the async workers serving other requests.
/// The outer error is the blocking task's own failure (a panic).
pub async fn with_db<T, E, F>(
    db: &SharedDatabase,
    work: F,
) -> Result<Result<T, E>, tokio::task::JoinError>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(&mut Database) -> Result<T, E> + Send + 'static,
{
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || work(&mut lock(&db))).await
}
