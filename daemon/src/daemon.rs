//! The daemon's shared state, handed to every service.

use std::sync::Arc;

use pier_storage::{ContainerRecord, Database, DbError, ImageStore, SandboxRecord, SharedDatabase};

use crate::config::Config;
use crate::error::Error;
use crate::events::{Events, ExitWatch};
use crate::features::Features;
use crate::host::Host;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use tokio::sync::OwnedMutexGuard;

/// What every CRI request can reach.
pub struct Daemon {
    pub config: Config,
    /// Serialises calls on one sandbox or container.
    pub locks: KeyedLocks,
    pub images: ImageStore,
    /// The OCI runtime, monitors, namespaces and CNI: the node itself.
    pub host: Arc<dyn Host>,
    /// Container exits as the monitors report them.
    pub exits: ExitWatch,
    /// Lifecycle events for GetContainerEvents subscribers.
    pub events: Events,
    /// What the node and each runtime handler support, probed once.
    pub features: Features,
    /// Prometheus metrics; recorded whether or not an endpoint serves them.
    pub metrics: Arc<Metrics>,
    db: SharedDatabase,
}

impl Daemon {
    pub fn new(
        config: Config,
        db: SharedDatabase,
        images: ImageStore,
        host: Arc<dyn Host>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(
            Arc::clone(&db),
            config.runroot.join("containers"),
            images.clone(),
        ));
        Self {
            config,
            locks: KeyedLocks::default(),
            images,
            host,
            exits: ExitWatch::default(),
            events: Events::default(),
            features: Features::default(),
            metrics,
            db,
        }
    }

    /// Runs `work` against the database on a blocking thread: SQLite calls
    /// block, and must not stall the async workers serving other requests.
    pub async fn db<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Database) -> Result<T, DbError> + Send + 'static,
    {
        pier_storage::with_db(&self.db, work)
            .await?
            .map_err(Error::from)
    }

    /// The sandbox with this id or unique id prefix.
    pub async fn find_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, Error> {
        let wanted = id.to_owned();
        self.db(move |db| {
            by_id_or_prefix(&wanted, db.sandbox(&wanted)?, || db.sandboxes(), |s| &s.id)
        })
        .await
    }

    /// The container with this id or unique id prefix.
    pub async fn find_container(&self, id: &str) -> Result<Option<ContainerRecord>, Error> {
        let wanted = id.to_owned();
        self.db(move |db| {
            by_id_or_prefix(
                &wanted,
                db.container(&wanted)?,
                || db.containers(),
                |c| &c.id,
            )
        })
        .await
    }

    /// The container with this id or unique id prefix, read while holding
    /// its lock, with the guard: the record stays true until the guard
    /// drops. A full id is locked before the one read; a prefix must be
    /// resolved first, and is read again under the lock.
    pub async fn lock_container(
        &self,
        id: &str,
    ) -> Result<Option<(OwnedMutexGuard<()>, ContainerRecord)>, Error> {
        let full = if crate::ids::is_full(id) {
            id.to_owned()
        } else {
            match self.find_container(id).await? {
                Some(record) => record.id,
                None => return Ok(None),
            }
        };
        let guard = self.locks.lock(&full).await;
        let record = self.db(move |db| db.container(&full)).await?;
        Ok(record.map(|record| (guard, record)))
    }

    /// The sandbox, or NOT_FOUND; its id goes into the request's span.
    pub async fn require_sandbox(&self, id: &str) -> Result<SandboxRecord, Error> {
        let record = self
            .find_sandbox(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "pod sandbox",
                id: id.to_owned(),
            })?;
        tracing::Span::current().record("pod_id", record.id.as_str());
        Ok(record)
    }

    /// The container, or NOT_FOUND; its id goes into the request's span.
    pub async fn require_container(&self, id: &str) -> Result<ContainerRecord, Error> {
        let record = self
            .find_container(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "container",
                id: id.to_owned(),
            })?;
        tracing::Span::current().record("container_id", record.id.as_str());
        Ok(record)
    }
}

/// The exact match if there is one, else the one record whose id `wanted`
/// uniquely prefixes (crictl users type short ids).
fn by_id_or_prefix<T>(
    wanted: &str,
    exact: Option<T>,
    all: impl FnOnce() -> Result<Vec<T>, DbError>,
    id: impl Fn(&T) -> &String,
) -> Result<Option<T>, DbError> {
    if exact.is_some() {
        return Ok(exact);
    }
    let all = all()?;
    let found = crate::ids::resolve(wanted, all.iter().map(|r| id(r).as_str())).map(str::to_owned);
    Ok(found.and_then(|found| all.into_iter().find(|r| *id(r) == found)))
}
