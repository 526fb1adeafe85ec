//! The layer store: `layers/<hex of chain id>/`, one unpacked layer each.
//! A layer is fetched and unpacked in one pass (network → decompressor →
//! tar → temp dir), verified on the way, and renamed into place only when
//! its compressed digest, size and diff id all match.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::digest::{self, Digest, HashingReader};
use crate::error::PullError;
use crate::fsops;
use crate::manifest::Descriptor;
use crate::overlay;
use crate::registry::{self, Session, Source};
use crate::unpack::{self, UnpackError, UnpackOptions};

/// Prefix of directories being unpacked; never a valid layer name.
pub const TMP_PREFIX: &str = ".tmp-";
/// Prefix of directories being deleted.
pub const TRASH_PREFIX: &str = ".trash-";

/// One layer to make present.
#[derive(Debug, Clone)]
pub struct LayerJob {
    pub blob: Descriptor,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub parent: Option<Digest>,
}

/// Shared by the layer fetches of one pull.
pub struct PullState {
    /// Bytes the pull may still unpack, charged by every layer's unpacker
    /// as it reads, so layers unpacked side by side share one limit.
    pub budget: Arc<AtomicU64>,
    /// The limit the budget started from, for the error that names it.
    pub limit: u64,
    /// Set when one layer failed: the others stop early. They are never
    /// dropped mid-way, which would leave their unpacker threads running.
    pub aborted: AtomicBool,
    /// The store's count of bytes downloaded, for its users' metrics.
    pub downloaded: Arc<AtomicU64>,
}

impl PullState {
    pub fn new(budget: u64, downloaded: Arc<AtomicU64>) -> Self {
        Self {
            budget: Arc::new(AtomicU64::new(budget)),
            limit: budget,
            aborted: AtomicBool::new(false),
            downloaded,
        }
    }
}

/// Counts pulls in progress that rely on each layer, so that removing an
/// image never deletes a layer another pull is about to record, and a failed
/// pull removes the layers only it wanted. Also the single-flight locks.
#[derive(Default)]
pub struct Leases {
    counts: Mutex<HashMap<Digest, usize>>,
    flights: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl Leases {
    pub fn take(&self, chain_id: &Digest) {
        *lock(&self.counts).entry(chain_id.clone()).or_default() += 1;
    }

    /// Drops a lease; runs `if_last` under the lease lock when it was the last.
    pub fn release(&self, chain_id: &Digest, if_last: impl FnOnce()) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(chain_id) {
            *n -= 1;
            if *n == 0 {
                counts.remove(chain_id);
                if_last();
            }
        }
    }

    /// Runs `f` with the knowledge that nobody holds a lease on `chain_id`.
    pub fn if_unleased(&self, chain_id: &Digest, f: impl FnOnce()) {
        let counts = lock(&self.counts);
        if !counts.contains_key(chain_id) {
            f();
        }
    }

    /// The single-flight lock of one layer or blob.
    pub fn flight(&self, chain_id: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.flights)
            .entry(chain_id.clone())
            .or_default()
            .clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where layers live.
#[derive(Debug, Clone)]
pub struct LayerDirs {
    pub root: PathBuf,
    /// Short symlinks to layers, for mounts of many layers.
    pub links: PathBuf,
}

impl LayerDirs {
    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.hex())
    }

    /// Moves a layer out of sight (cheap, under locks); [`Self::purge_trash`]
    /// deletes it later.
    pub fn trash(&self, chain_id: &Digest) {
        let from = self.path(chain_id);
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let to = self
            .root
            .join(format!("{TRASH_PREFIX}{}-{n}", chain_id.hex()));
        overlay::unlink_layer(&self.links, &from);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(layer = %chain_id, error = %e, "cannot move layer to trash"),
        }
    }

    /// Deletes trashed directories, and temp ones too when `with_temp` (at
    /// startup only: at run time they belong to unpacks in progress).
    pub fn purge_trash(&self, with_temp: bool) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name.starts_with(TRASH_PREFIX) || (with_temp && name.starts_with(TMP_PREFIX)))
                && let Err(e) = std::fs::remove_dir_all(entry.path())
            {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove");
            }
        }
    }
}

/// Makes one layer present, downloading it unless it is already there or
/// another pull is fetching it (then waits for that one). The caller holds a
/// lease on `job.chain_id`. Returns the unpacked size when this call
/// unpacked it, `None` when it was already there.
pub async fn ensure(
    dirs: &LayerDirs,
    leases: &Leases,
    session: &Session,
    source: &Source,
    job: &LayerJob,
    state: &PullState,
) -> Result<Option<u64>, PullError> {
    let flight = leases.flight(&job.chain_id);
    let _guard = flight.lock().await;
    let dest = dirs.path(&job.chain_id);
    if tokio::fs::symlink_metadata(&dest).await.is_ok() {
        return Ok(None);
    }
    let tmp = dirs
        .root
        .join(format!("{TMP_PREFIX}{}", job.chain_id.hex()));
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    tokio::fs::create_dir(&tmp)
        .await
        .map_err(|e| PullError::io("create layer dir", tmp.clone(), e))?;
    let result = fetch_and_unpack(session, source, job, &tmp, state).await;
    let size = match result {
        Ok(size) => size,
        Err(e) => {
            let tmp2 = tmp.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(tmp2)).await;
            return Err(e);
        }
    };
    crate::failpoint::crash_point("pull.layer_unpacked");
    let finish = {
        let (tmp, dest) = (tmp.clone(), dest.clone());
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            // Durable before it is renamed into place: a power cut must not
            // leave a layer that looks unpacked but is not on disk.
            fsops::syncfs(&tmp)?;
            std::fs::rename(&tmp, &dest)
        })
    };
    match finish.await {
        Ok(Ok(())) => {
            crate::failpoint::crash_point("pull.layer_renamed");
            Ok(Some(size))
        }
        Ok(Err(e)) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(PullError::io("commit layer", dest, e))
        }
        Err(e) => Err(PullError::Io {
            context: "commit layer",
            path: dest,
            source: io::Error::other(e),
        }),
    }
}

/// Bytes of a layer blob flowing from the network task to the unpacker.
type Chunk = io::Result<Bytes>;

/// A blocking `Read` over chunks sent by an async task.
struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// An error the network side sends down the pipe to stop the unpacker; the
/// network side reports the real cause itself.
#[derive(Debug)]
struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("download aborted")
    }
}

impl std::error::Error for Aborted {}

async fn fetch_and_unpack(
    session: &Session,
    source: &Source,
    job: &LayerJob,
    tmp: &Path,
    state: &PullState,
) -> Result<u64, PullError> {
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let budget = Budget {
        left: Arc::clone(&state.budget),
        limit: state.limit,
    };
    let unpacker = {
        let tmp = tmp.to_path_buf();
        tokio::task::spawn_blocking(move || {
            unpack_stream(
                ChannelReader {
                    rx,
                    current: Bytes::new(),
                },
                &tmp,
                budget,
            )
        })
    };

    let registry = source.remote.registry().to_owned();
    let digest = &job.blob.digest;
    let download = async {
        let mut stream = session.blob_stream(source, digest).await?;
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client's own digest check fails the end of the
                // stream; our size and digest check below names it better.
                Err(e) if registry::is_digest_error(&e) => break,
                Err(e) => {
                    return Err(PullError::Unreachable {
                        registry: registry.clone(),
                        cause: format!("download of {digest} interrupted after {count} bytes: {e}"),
                    });
                }
            };
            if state.aborted.load(Ordering::Relaxed) {
                return Err(PullError::Registry {
                    registry: registry.clone(),
                    cause: format!("download of {digest} cancelled: another layer failed"),
                });
            }
            count += chunk.len() as u64;
            state
                .downloaded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if count > job.blob.size {
                break;
            }
            hasher.update(&chunk);
            if tx.send(Ok(chunk)).await.is_err() {
                // The unpacker stopped; its error is the one to report.
                return Ok(());
            }
        }
        registry::verify(digest, job.blob.size, count, &Digest::from_hasher(hasher))
    };
    let downloaded = download.await;
    if downloaded.is_err() {
        let _ = tx.send(Err(io::Error::other(Aborted))).await;
    }
    drop(tx);
    let unpacked = unpacker.await.map_err(|e| PullError::Io {
        context: "unpack layer",
        path: tmp.to_path_buf(),
        source: io::Error::other(e),
    })?;
    downloaded?;
    let (diff_id, unpacked_bytes) = unpacked.map_err(|e| layer_error(e, job))?;
    if diff_id != job.diff_id {
        return Err(PullError::DiffIdMismatch {
            digest: digest.to_string(),
            expected: job.diff_id.to_string(),
            actual: diff_id.to_string(),
        });
    }
    tracing::debug!(layer = %job.chain_id, unpacked_bytes, "layer unpacked");
    Ok(unpacked_bytes)
}

/// Decompresses (by magic number, whatever the media type claims) and
/// unpacks, hashing the uncompressed stream for the diff id.
fn unpack_stream(
    reader: ChannelReader,
    dest: &Path,
    budget: Budget,
) -> Result<(Digest, u64), UnpackError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf().map_err(UnpackError::Read)?;
    let decoder: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Read)?)
    } else {
        Box::new(buffered)
    };
    let mut hashing = HashingReader::new(Budgeted {
        inner: decoder,
        budget,
    });
    unpack::unpack(&mut hashing, dest, UnpackOptions::default())?;
    hashing.finish().map_err(UnpackError::Read)
}

/// The unpack budget one pull's layers share.
struct Budget {
    left: Arc<AtomicU64>,
    limit: u64,
}

/// Charges every uncompressed byte to the pull's budget before the unpacker
/// sees it: the read that would cross the limit fails instead, so no byte
/// past the limit is ever written.
struct Budgeted<R> {
    inner: R,
    budget: Budget,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let charged = self
            .budget
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n as u64)
            });
        match charged {
            Ok(_) => Ok(n),
            Err(_) => Err(digest::limit_error(self.budget.limit)),
        }
    }
}

fn layer_error(e: UnpackError, job: &LayerJob) -> PullError {
    let digest = job.blob.digest.to_string();
    match e {
        UnpackError::Unsafe { entry, reason } => PullError::UnsafeEntry {
            digest,
            entry,
            reason,
        },
        UnpackError::Read(io) => match digest::limit_exceeded(&io) {
            Some(limit) => PullError::TooLarge { digest, limit },
            None => PullError::BadLayer {
                digest,
                cause: io.to_string(),
            },
        },
        UnpackError::Write { path, source } => PullError::io("unpack layer", path, source),
    }
}
