//! The daemon's shared state, handed to every service.

use std::sync::{Arc, Mutex};

use pier_storage::{Database, DbError, ImageStore, SandboxRecord};

use crate::config::Config;
use crate::error::Error;
use crate::locks::KeyedLocks;

/// What every CRI request can reach.
#[derive(Debug)]
pub struct Daemon {
    pub config: Config,
    /// Serialises calls on one sandbox or container.
    pub locks: KeyedLocks,
    db: Arc<Mutex<Database>>,
    /// Images, layers and container root filesystems (shares `db`).
    pub images: ImageStore,
}

impl Daemon {
    pub fn new(config: Config, db: Arc<Mutex<Database>>, images: ImageStore) -> Self {
        Self {
            config,
            locks: KeyedLocks::default(),
            db,
            images,
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

    /// The sandbox with this id or unique id prefix.
    pub async fn find_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, Error> {
        let wanted = id.to_owned();
        self.db(move |db| {
            if let Some(exact) = db.sandbox(&wanted)? {
                return Ok(Some(exact));
            }
            let all = db.sandboxes()?;
            let found =
                crate::ids::resolve(&wanted, all.iter().map(|s| s.id.as_str())).map(str::to_owned);
            Ok(found.and_then(|id| all.into_iter().find(|s| s.id == id)))
        })
        .await
    }
}
