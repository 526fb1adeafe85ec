//! Counts of what the node holds (containers and sandboxes by state) and the
//! sum of the monitors' log counters, taken in the background.
//!
//! A scrape whose last census is more than a second old first asks for a new
//! one, and waits for it only a short while (it takes a few milliseconds);
//! encoding then serves the last census taken. Encoding itself never reads
//! the database or a monitor's file, a slow census never holds a scrape up
//! for long, and a node without scrapes pays nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pier_proto::files;
use pier_proto::log_stats::LogStats;
use pier_storage::{ImageStore, SharedDatabase};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A census younger than this is served as it is.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// States every scrape shows, at zero when nothing is in them, so a series
/// does not vanish when its last member goes.
const CONTAINER_STATES: [&str; 4] = ["creating", "created", "running", "exited"];
const SANDBOX_STATES: [&str; 2] = [crate::sandbox::READY, crate::sandbox::NOT_READY];

#[derive(Clone)]
pub struct Census(Arc<Inner>);

struct Inner {
    db: SharedDatabase,
    run_containers: PathBuf,
    images: ImageStore,
    taken: Mutex<Snapshot>,
    /// Log counters of containers already removed. Held while files are
    /// read, so a container is never counted both live and retired.
    retired: Mutex<LogStats>,
    /// One census at a time; scrapes that arrive meanwhile share its result.
    flight: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Snapshot {
    at: Option<Instant>,
    containers: BTreeMap<String, i64>,
    sandboxes: BTreeMap<String, i64>,
    logs: LogStats,
}

impl std::fmt::Debug for Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Census")
            .field("run_containers", &self.0.run_containers)
            .finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain counters: a panic elsewhere cannot leave them half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Census {
    pub fn new(db: SharedDatabase, run_containers: PathBuf, images: ImageStore) -> Self {
        Self(Arc::new(Inner {
            db,
            run_containers,
            images,
            taken: Mutex::default(),
            retired: Mutex::default(),
            flight: tokio::sync::Mutex::new(()),
        }))
    }

    /// Takes a census unless the last one is fresh, and waits for it. A
    /// caller that stops waiting leaves the census to finish for the next.
    pub async fn refresh(&self, even_if_fresh: bool) {
        let _flight = self.0.flight.lock().await;
        let fresh = locked(&self.0.taken)
            .at
            .is_some_and(|at| at.elapsed() < FRESH_FOR);
        if fresh && !even_if_fresh {
            return;
        }
        let census = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || census.take()).await {
            tracing::warn!(error = %e, "metrics census failed");
        }
    }

    fn take(&self) {
        let states = {
            let db = pier_storage::db::shared::lock(&self.0.db);
            db.container_states()
                .and_then(|c| Ok((c, db.sandbox_states()?)))
        };
        let (containers, sandboxes) = match states {
            Ok(states) => states,
            Err(e) => {
                tracing::warn!(error = %e, "metrics census: reading states");
                return;
            }
        };
        let logs = {
            let retired = locked(&self.0.retired);
            let mut sum = *retired;
            for stats in self.live_log_stats() {
                add(&mut sum, &stats);
            }
            sum
        };
        let with_known = |known: &[&str], found: Vec<(String, i64)>| {
            let mut all: BTreeMap<String, i64> =
                known.iter().map(|s| ((*s).to_owned(), 0)).collect();
            all.extend(found);
            all
        };
        *locked(&self.0.taken) = Snapshot {
            at: Some(Instant::now()),
            containers: with_known(&CONTAINER_STATES, containers),
            sandboxes: with_known(&SANDBOX_STATES, sandboxes),
            logs,
        };
    }

    fn live_log_stats(&self) -> impl Iterator<Item = LogStats> {
        let entries = std::fs::read_dir(&self.0.run_containers)
            .into_iter()
            .flatten();
        entries.filter_map(|entry| {
            let path = entry.ok()?.path().join(files::LOG_STATS);
            LogStats::read(&path).ok().flatten()
        })
    }

    /// Moves a container's log counters from live to retired, and deletes
    /// its counters file so no later census counts it again.
    pub fn retire(&self, run_dir: &Path) {
        let path = run_dir.join(files::LOG_STATS);
        let mut retired = locked(&self.0.retired);
        if let Ok(Some(stats)) = LogStats::read(&path) {
            add(&mut retired, &stats);
        }
        let _ = std::fs::remove_file(&path);
    }
}

fn add(sum: &mut LogStats, more: &LogStats) {
    sum.written_bytes += more.written_bytes;
    sum.dropped_bytes += more.dropped_bytes;
    sum.split_lines += more.split_lines;
}

impl Collector for Census {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let taken = locked(&self.0.taken);
        for (name, help, by_state) in [
            (
                "pier_containers",
                "Containers by state (creating, created, running, exited)",
                &taken.containers,
            ),
            (
                "pier_pod_sandboxes",
                "Pod sandboxes by state (ready, notready)",
                &taken.sandboxes,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (state, count) in by_state {
                let labels = [("state", state.as_str())];
                ConstGauge::new(*count).encode(family.encode_family(&labels)?)?;
            }
        }
        let logs = taken.logs;
        drop(taken);
        for (name, help, value) in [
            (
                "pier_image_pull_bytes",
                "Bytes downloaded from registries by image pulls, failed ones too",
                self.0.images.downloaded_bytes(),
            ),
            (
                "pier_container_log_written_bytes",
                "Bytes the monitors wrote to container log files",
                logs.written_bytes,
            ),
            (
                "pier_container_log_dropped_bytes",
                "Bytes of container output the monitors could not write to the log (disk full, I/O error)",
                logs.dropped_bytes,
            ),
            (
                "pier_container_log_split_lines",
                "Lines longer than container_logs.max_line_size, cut into partial (P) records",
                logs.split_lines,
            ),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        Ok(())
    }
}
