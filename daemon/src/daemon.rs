//! The daemon's shared state, handed to every service.

use std::sync::{Arc, Mutex};

use pier_storage::{Database, DbError};

use crate::config::Config;
use crate::error::Error;

/// What every CRI request can reach.
#[derive(Debug)]
pub struct Daemon {
    pub config: Config,
    db: Arc<Mutex<Database>>,
}

impl Daemon {
    pub fn new(config: Config, db: Database) -> Self {
        Self {
            config,
            db: Arc::new(Mutex::new(db)),
        }
    }

    /// Runs `work` against the database on a blocking thread: SQLite calls
    /// block, and must not stall the async workers serving other requests.
    pub async fn db<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Database) -> Result<T, DbError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written
            // (transactions roll back), so a poisoned lock is safe to reuse.
            let mut db = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut db)
        })
        .await?
        .map_err(Error::from)
    }
}
