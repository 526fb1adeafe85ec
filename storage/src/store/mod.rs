//! The image store the daemon's ImageService calls: pull, list, status,
//! remove, filesystem usage, and container root filesystems.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{RwLock, Semaphore};

use crate::auth::Auth;
use crate::config::ConfigFile;
use crate::db::shared::{SharedDatabase, lock, with_db};
use crate::db::{Database, DbError, ImageRecord, LayerRecord};
use crate::digest::{self, Digest};
use crate::endpoint::RegistryConfig;
use crate::error::{ImageError, PullError};
use crate::image::{FsInfo, Image};
use crate::layers::{self, LayerDirs, LayerJob, Leases, PullState};
use crate::manifest::{Manifest, Platform};
use crate::reference::{ImageRef, ImageSpec};
use crate::registry::{Session, Source};
use crate::{blobs, gc, usage};

mod containers;
mod volumes;

/// Settings of the image store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `/var/lib/pier` by default: holds `blobs/`, `layers/`, `containers/`.
    pub root: PathBuf,
    pub registry: RegistryConfig,
    /// Platform picked from indexes; the host's by default.
    pub platform: Platform,
    /// Most bytes one pull may unpack, against decompression bombs.
    pub max_unpacked_bytes: u64,
    /// Images (references or ids) reported as pinned, like the pause image.
    pub pinned_images: Vec<String>,
    /// Layers fetched at the same time within one pull.
    pub max_concurrent_layers: usize,
}

impl StoreConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            registry: RegistryConfig::default(),
            platform: Platform::host(),
            max_unpacked_bytes: 64 << 30,
            pinned_images: Vec::new(),
            max_concurrent_layers: 4,
        }
    }
}

/// The image and layer store. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    db: SharedDatabase,
    layers: LayerDirs,
    blobs: blobs::BlobDir,
    leases: Leases,
    pinned: Vec<ImageSpec>,
    /// Pulls hold it shared, removal exclusively: a removal never deletes a
    /// layer a pull in progress has found present and is about to record.
    gc: RwLock<()>,
    /// Bytes downloaded from registries (configs and layers) since open.
    downloaded: Arc<AtomicU64>,
}

impl ImageStore {
    /// Opens the store under `config.root`, creating its directories, and
    /// removes what a crash left: partial pulls and unpacks, layers and blobs
    /// no image records, mounts and dirs of containers no longer recorded.
    pub async fn open(config: StoreConfig, db: SharedDatabase) -> Result<Self, ImageError> {
        let pinned = config
            .pinned_images
            .iter()
            .map(|p| ImageSpec::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let root = config.root.clone();
        let layers = LayerDirs {
            root: root.join("layers"),
            links: crate::overlay::links_dir(&root),
        };
        let blobs = blobs::BlobDir::new(root.join("blobs"));
        let store = Self {
            inner: Arc::new(Inner {
                config,
                db,
                layers,
                blobs,
                leases: Leases::default(),
                pinned,
                gc: RwLock::new(()),
                downloaded: Arc::default(),
            }),
        };
        let inner = store.inner.clone();
        blocking(move || {
            for dir in [
                &inner.layers.root,
                &inner.blobs.root,
                &crate::layout::containers_dir(&root),
            ] {
                std::fs::create_dir_all(dir).map_err(|e| ImageError::io("create", dir, e))?;
            }
            inner.blobs.create_dirs()?;
            let db = lock(&inner.db);
            gc::startup_cleanup(&root, &db, &inner.layers, &inner.blobs)
        })
        .await?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.config.root
    }

    /// The directory holding one directory per unpacked layer, named by its
    /// chain id's hex digits.
    pub fn layers_dir(&self) -> &Path {
        &self.inner.layers.root
    }

    /// Bytes downloaded from registries since the store was opened, whether
    /// or not their pull succeeded.
    pub fn downloaded_bytes(&self) -> u64 {
        self.inner.downloaded.load(Ordering::Relaxed)
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Database) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, ImageError> {
        with_db(&self.inner.db, f)
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?
            .map_err(ImageError::from)
    }

    /// Pulls `reference` (any form kubelet sends) and returns the image.
    /// The pull runs in a task of its own: a caller that gives up (a
    /// cancelled RPC) leaves it to finish or fail cleanly, never half done.
    pub async fn pull(&self, reference: &str, auth: &Auth) -> Result<Image, ImageError> {
        let (store, reference, auth) = (self.clone(), reference.to_owned(), auth.clone());
        tokio::spawn(async move { store.pull_to_end(&reference, &auth).await })
            .await
            .map_err(|e| ImageError::Task(e.to_string()))?
    }

    async fn pull_to_end(&self, reference: &str, auth: &Auth) -> Result<Image, ImageError> {
        let image = ImageRef::parse(reference)?;
        let name = image.to_string();
        let wrap = |cause: PullError| ImageError::Pull {
            image: name.clone(),
            cause,
        };
        let started = std::time::Instant::now();
        let config = &self.inner.config;
        let session = config.registry.session(&image, auth);
        let resolved = session
            .resolve(&image, &config.platform)
            .await
            .map_err(wrap)?;
        let Manifest::Image {
            config: config_desc,
            layers: blobs,
        } = &resolved.manifest
        else {
            return Err(wrap(PullError::BadManifest("resolved to an index".into())));
        };
        let mut names = Vec::new();
        if image.digest().is_none()
            && let Some(tag) = image.repo_tag()
        {
            names.push(tag);
        }
        names.push(image.repo_digest(resolved.repo_digest.as_str()));
        let id = config_desc.digest.to_string();

        let _gc = self.inner.gc.read().await;
        if let Some(image) = self.add_names_if_present(&id, &names).await? {
            tracing::info!(image = %name, id, "image already present");
            return Ok(image);
        }

        let config_raw = self
            .config_blob(&session, &resolved.source, config_desc)
            .await;
        let config_raw = config_raw.map_err(wrap)?;
        let parsed = ConfigFile::parse(&config_raw).map_err(wrap)?;
        if parsed.diff_ids.len() != blobs.len() {
            return Err(wrap(PullError::BadManifest(format!(
                "manifest has {} layers, config has {} diff ids",
                blobs.len(),
                parsed.diff_ids.len()
            ))));
        }
        let chain = digest::chain_ids(&parsed.diff_ids);
        let jobs: Vec<LayerJob> = blobs
            .iter()
            .zip(&parsed.diff_ids)
            .zip(&chain)
            .enumerate()
            .map(|(i, ((blob, diff_id), chain_id))| LayerJob {
                blob: blob.clone(),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
                parent: i.checked_sub(1).map(|p| chain[p].clone()),
            })
            .collect();

        for job in &jobs {
            self.inner.leases.take(&job.chain_id);
        }
        let result = self.fetch_layers(&session, &resolved.source, &jobs).await;
        let result = match result {
            Ok(sizes) => {
                let record = ImageRecord {
                    id: id.clone(),
                    manifest_digest: resolved.manifest_digest.to_string(),
                    size: config_desc.size + blobs.iter().map(|b| b.size).sum::<u64>(),
                    config: config_raw.to_vec(),
                    pinned: self.is_pinned(&id, &names),
                    created_at: crate::time::now_ns(),
                    names,
                    layers: chain.iter().map(ToString::to_string).collect(),
                };
                self.commit(record, &jobs, sizes, &resolved.manifest_raw, &config_raw)
                    .await
            }
            Err(e) => Err(wrap(e)),
        };
        self.release_leases(&jobs).await;
        if result.is_err() {
            self.forget_config(&id, &config_desc.digest).await;
        }
        let image = result?;
        tracing::info!(
            image = %name, id, layers = jobs.len(), elapsed_ms = started.elapsed().as_millis() as u64,
            "image pulled"
        );
        Ok(image)
    }

    /// The image config, fetched once however many pulls want it at the
    /// same time, and stored right away so that they find it.
    async fn config_blob(
        &self,
        session: &Session,
        source: &Source,
        desc: &crate::manifest::Descriptor,
    ) -> Result<bytes::Bytes, PullError> {
        let flight = self.inner.leases.flight(&desc.digest);
        let _guard = flight.lock().await;
        if let Some(raw) = self.inner.blobs.read(&desc.digest).await {
            return Ok(raw);
        }
        let raw = session.fetch_small_blob(source, desc).await?;
        let inner = self.inner.clone();
        inner
            .downloaded
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        let data = raw.clone();
        tokio::task::spawn_blocking(move || inner.blobs.write(&data))
            .await
            .map_err(|e| PullError::Io {
                context: "store config",
                path: self.inner.blobs.path(&desc.digest),
                source: std::io::Error::other(e),
            })??;
        Ok(raw)
    }

    async fn fetch_layers(
        &self,
        session: &Session,
        source: &Source,
        jobs: &[LayerJob],
    ) -> Result<HashMap<Digest, u64>, PullError> {
        let state = PullState::new(
            self.inner.config.max_unpacked_bytes,
            Arc::clone(&self.inner.downloaded),
        );
        let permits = Semaphore::new(self.inner.config.max_concurrent_layers.max(1));
        let fetches = jobs.iter().map(|job| async {
            let _permit = permits.acquire().await;
            if state.aborted.load(Ordering::Relaxed) {
                return Ok((job.chain_id.clone(), None));
            }
            let fresh = layers::ensure(
                &self.inner.layers,
                &self.inner.leases,
                session,
                source,
                job,
                &state,
            )
            .await
            .inspect_err(|_| state.aborted.store(true, Ordering::Relaxed))?;
            Ok::<_, PullError>((job.chain_id.clone(), fresh))
        });
        // Every fetch runs to its end (an aborted one ends quickly), so no
        // unpacker is still writing when the pull reports its result.
        let done = futures_util::future::join_all(fetches).await;
        let mut first_error = None;
        let mut fresh = Vec::new();
        for result in done {
            match result {
                Ok(ok) => fresh.push(ok),
                Err(e) => {
                    // The first real cause, not another layer's cancellation.
                    let cancelled = matches!(&e, PullError::Registry { cause, .. } if cause.contains("cancelled"));
                    if first_error.is_none()
                        || (!cancelled && first_error.as_ref().is_some_and(|(c, _)| *c))
                    {
                        first_error = Some((cancelled, e));
                    }
                }
            }
        }
        if let Some((_, e)) = first_error {
            return Err(e);
        }
        Ok(fresh
            .into_iter()
            .filter_map(|(c, s)| s.map(|s| (c, s)))
            .collect())
    }

    /// Records the layers and the image; layers found already present keep
    /// their recorded size.
    async fn commit(
        &self,
        record: ImageRecord,
        jobs: &[LayerJob],
        fresh: HashMap<Digest, u64>,
        manifest_raw: &[u8],
        config_raw: &[u8],
    ) -> Result<Image, ImageError> {
        let inner = self.inner.clone();
        let jobs = jobs.to_vec();
        let (manifest_raw, config_raw) = (manifest_raw.to_vec(), config_raw.to_vec());
        let image_name = record
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| record.id.clone());
        blocking(move || {
            let write = |data: &[u8]| {
                inner.blobs.write(data).map_err(|cause| ImageError::Pull {
                    image: image_name.clone(),
                    cause,
                })
            };
            write(&manifest_raw)?;
            write(&config_raw)?;
            let mut db = lock(&inner.db);
            for job in &jobs {
                let size = match fresh.get(&job.chain_id) {
                    Some(size) => *size,
                    None => match db.layer(job.chain_id.as_str())? {
                        Some(row) => row.size,
                        None => usage::tree_usage(&inner.layers.path(&job.chain_id)).bytes,
                    },
                };
                db.insert_layer(&LayerRecord {
                    chain_id: job.chain_id.to_string(),
                    diff_id: job.diff_id.to_string(),
                    parent: job
                        .parent
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    size,
                })?;
            }
            db.insert_image(&record)?;
            crate::failpoint::crash_point("pull.image_row");
            let stored = db.image(&record.id)?.unwrap_or(record);
            Ok(Image::from_record(stored))
        })
        .await
    }

    /// Layers this pull held: those no image uses and no other pull wants go.
    async fn release_leases(&self, jobs: &[LayerJob]) {
        let inner = self.inner.clone();
        let jobs = jobs.to_vec();
        let result = blocking(move || {
            for job in &jobs {
                inner.leases.release(&job.chain_id, || {
                    let db = lock(&inner.db);
                    match db.layer_in_use(job.chain_id.as_str()) {
                        Ok(true) => {}
                        Ok(false) => {
                            if let Err(e) = db.delete_unused_layer(job.chain_id.as_str()) {
                                tracing::warn!(layer = %job.chain_id, error = %e, "cannot forget layer");
                            }
                            inner.layers.trash(&job.chain_id);
                        }
                        Err(e) => tracing::warn!(layer = %job.chain_id, error = %e, "layer check"),
                    }
                });
            }
            inner.layers.purge_trash(false);
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "releasing layers after pull");
        }
    }

    /// Deletes the config blob a failed pull stored, unless an image uses
    /// it: a failed pull leaves nothing behind. A pull of the same image
    /// that succeeds later writes it again with its rows.
    async fn forget_config(&self, id: &str, digest: &Digest) {
        let (inner, id, digest) = (self.inner.clone(), id.to_owned(), digest.clone());
        let result = blocking(move || {
            let unused = lock(&inner.db).image(&id)?.is_none();
            if unused {
                inner.blobs.remove(&digest);
            }
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "forgetting the config of a failed pull");
        }
    }

    async fn add_names_if_present(
        &self,
        id: &str,
        names: &[String],
    ) -> Result<Option<Image>, ImageError> {
        let (id, names) = (id.to_owned(), names.to_vec());
        let layers = self.inner.layers.clone();
        self.db(move |db| {
            let Some(mut record) = db.image(&id)? else {
                return Ok(None);
            };
            let complete = record.layers.iter().all(|c| match Digest::parse(c) {
                Ok(c) => layers.path(&c).is_dir(),
                Err(_) => false,
            });
            if !complete {
                return Ok(None);
            }
            for name in names {
                if !record.names.contains(&name) {
                    record.names.push(name);
                }
            }
            db.insert_image(&record)?;
            Ok(db.image(&id)?.map(Image::from_record))
        })
        .await
    }

    fn is_pinned(&self, id: &str, names: &[String]) -> bool {
        self.inner.pinned.iter().any(|spec| match spec {
            ImageSpec::Id(pinned) => pinned == id,
            ImageSpec::Reference(r) => names.contains(&r.lookup_name()),
        })
    }

    /// The image `image` names (id, repo tag or repo digest), if present.
    pub async fn status(&self, image: &str) -> Result<Option<Image>, ImageError> {
        let spec = ImageSpec::parse(image)?;
        // crictl shows ids truncated; a unique id prefix names an image too.
        let prefix = image.trim().trim_start_matches("sha256:").to_owned();
        let is_prefix = prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit());
        let record = self
            .db(move |db| {
                let found = match spec {
                    ImageSpec::Id(id) => db.image(&id)?,
                    ImageSpec::Reference(r) => db.image_by_name(&r.lookup_name())?,
                };
                if found.is_some() || !is_prefix {
                    return Ok(found);
                }
                let wanted = format!("sha256:{}", prefix.to_ascii_lowercase());
                let mut matching = db
                    .images()?
                    .into_iter()
                    .filter(|i| i.id.starts_with(&wanted));
                Ok(match (matching.next(), matching.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                })
            })
            .await?;
        Ok(record.map(Image::from_record))
    }

    /// Every image, or only the one `filter` names.
    pub async fn list(&self, filter: Option<&str>) -> Result<Vec<Image>, ImageError> {
        match filter.filter(|f| !f.is_empty()) {
            Some(filter) => Ok(self.status(filter).await?.into_iter().collect()),
            None => {
                let records = self.db(|db| db.images()).await?;
                Ok(records.into_iter().map(Image::from_record).collect())
            }
        }
    }

    /// Removes the image `image` names with all its names, and the layers no
    /// other image uses. Removing an absent image succeeds; an image a
    /// container was created from is refused.
    pub async fn remove(&self, image: &str) -> Result<(), ImageError> {
        let Some(found) = self.status(image).await? else {
            tracing::debug!(image, "remove: image already absent");
            return Ok(());
        };
        let _gc = self.inner.gc.write().await;
        let inner = self.inner.clone();
        let name = image.to_owned();
        blocking(move || {
            let mut db = lock(&inner.db);
            let users = db.containers_using_image(&found.id)?;
            if !users.is_empty() {
                return Err(ImageError::InUse {
                    image: name,
                    containers: users,
                });
            }
            let Some(orphans) = db.delete_image(&found.id)? else {
                return Ok(());
            };
            drop(db);
            for chain_id in orphans {
                if let Ok(chain_id) = Digest::parse(&chain_id) {
                    inner
                        .leases
                        .if_unleased(&chain_id, || inner.layers.trash(&chain_id));
                }
            }
            for digest in [&found.id, &found.manifest_digest] {
                if let Ok(digest) = Digest::parse(digest) {
                    inner.blobs.remove(&digest);
                }
            }
            inner.layers.purge_trash(false);
            tracing::info!(image = %name, id = %found.id, "image removed");
            Ok(())
        })
        .await
    }

    /// Space and inodes used by images and by containers' writable layers.
    pub async fn fs_info(&self) -> Result<FsInfo, ImageError> {
        let root = self.inner.config.root.clone();
        blocking(move || Ok(usage::fs_info(&root))).await
    }
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.config.root)
            .finish()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Task(e.to_string()))?
}
