//! A mixed CRI load: clients in parallel, each driving its own pods and
//! containers through a seeded random sequence of calls (pods, containers,
//! exec, pulls, lists, stats), every call timed and its status code
//! counted. The same seed drives the same sequence against any runtime, so
//! pier and containerd get the same load. Used by `pier-load-bench` and by
//! the load smoke test.

mod client;
mod leaks;
mod rng;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use leaks::Footprint;
pub use rng::Rng;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Clients in parallel, each on its own connection.
    pub clients: usize,
    /// Calls in total, shared evenly among the clients.
    pub ops: usize,
    /// Seeds every client's sequence (client `n` uses `seed + n`).
    pub seed: u64,
    /// The image containers run (already pulled).
    pub image: String,
    /// Images PullImage draws from.
    pub pulls: Vec<String>,
    /// Where pods' log directories are made.
    pub log_dir: PathBuf,
    /// The whole run, clean-up included, must end within this: past it,
    /// the calls still open are reported as stuck (a deadlock).
    pub deadline: Duration,
}

/// One RPC's figures.
#[derive(Debug, Clone, Default)]
pub struct CallFigures {
    /// Every call's time, failed ones included.
    pub times: Vec<Duration>,
    /// Failed calls by gRPC code name.
    pub errors: BTreeMap<String, usize>,
    /// The first message seen for each error code.
    pub messages: BTreeMap<String, String>,
}

impl CallFigures {
    /// The `p` quantile (0 to 1) of the call times.
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.times.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Per RPC name.
    pub calls: BTreeMap<&'static str, CallFigures>,
    /// The calls still open when the deadline passed: (client, RPC).
    pub stuck: Vec<(usize, &'static str)>,
    /// What the runtime still had or ran after every client removed its pods.
    pub leaks: Vec<String>,
    /// From the first call to the end of the clients' clean-up.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Calls that failed with INTERNAL or UNKNOWN: a runtime bug, never a
    /// client's mistake.
    pub fn internal_errors(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (rpc, figures) in &self.calls {
            for (code, count) in &figures.errors {
                if code == "Internal" || code == "Unknown" {
                    found.push(format!("{rpc}: {count} x {code}"));
                }
            }
        }
        found
    }

    /// The number of calls made.
    pub fn total_calls(&self) -> usize {
        self.calls.values().map(|c| c.times.len()).sum()
    }
}

/// Shared between the clients: figures, and which call each has open.
#[derive(Default)]
struct Shared {
    calls: BTreeMap<&'static str, CallFigures>,
    open: BTreeMap<usize, &'static str>,
}

type Recorder = Arc<Mutex<Shared>>;

fn lock(shared: &Recorder) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the load against the CRI socket `socket` of a runtime whose
/// private files live under `dir` and whose daemon is `daemon_pid` (for
/// the processes and mounts it leaves behind). The runtime must have no
/// pods when this starts.
pub async fn run(socket: &Path, dir: &Path, daemon_pid: u32, options: &LoadOptions) -> LoadReport {
    let before = Footprint::take(dir, daemon_pid);
    let shared: Recorder = Arc::default();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..options.clients {
        let share = options.ops / options.clients + usize::from(n < options.ops % options.clients);
        let socket = socket.to_owned();
        let options = options.clone();
        let shared = Arc::clone(&shared);
        tasks.spawn(async move { client::drive(n, share, &socket, &options, shared).await });
    }
    let finished = tokio::time::timeout(options.deadline, async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    let mut report = {
        let mut shared = lock(&shared);
        LoadReport {
            calls: std::mem::take(&mut shared.calls),
            stuck: match finished {
                Ok(()) => Vec::new(),
                Err(_) => shared.open.iter().map(|(n, rpc)| (*n, *rpc)).collect(),
            },
            leaks: Vec::new(),
            elapsed,
        }
    };
    tasks.abort_all();
    if report.stuck.is_empty() {
        report.leaks = leaks::find(socket, dir, daemon_pid, &before).await;
    }
    report
}
