//! pierd's Prometheus metrics (docs/operations.md#metrics-and-tracing).
//!
//! Everything a request records is an atomic add. What is a count of things
//! (containers by state, the monitors' log counters) comes from a census
//! taken at most once a second on a blocking thread, which a scrape waits
//! for only briefly: encoding costs O(series), whatever the node holds, and
//! never touches the database.

mod census;
mod endpoint;
mod layer;
mod process;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pier_storage::{ImageStore, SharedDatabase};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use endpoint::{Endpoint, bind};
pub use layer::CriMetricsLayer;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// 0.5 ms to about a minute: CRI calls range from a status read to a
/// StopContainer that waits out a grace period.
fn call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// 50 ms to about 7 minutes: a cached image to a large pull on a slow link.
fn pull_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// The daemon's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    cri_requests: Family<CallLabels, Counter>,
    cri_duration: Family<MethodLabels, Histogram>,
    pulls: Family<ResultLabels, Counter>,
    pull_duration: Histogram,
    exec_sync_duration: Histogram,
    monitors: Gauge,
    monitor_reattached: Counter,
    container_oom: Counter,
    census: Arc<census::Census>,
}

impl Metrics {
    /// `run_containers` is where the monitors keep their files
    /// (`<runroot>/containers`).
    pub fn new(db: SharedDatabase, run_containers: PathBuf, images: ImageStore) -> Self {
        let mut registry = Registry::default();
        let cri_requests = Family::<CallLabels, Counter>::default();
        let cri_duration =
            Family::<MethodLabels, Histogram>::new_with_constructor(call_histogram as fn() -> _);
        let pulls = Family::<ResultLabels, Counter>::default();
        let pull_duration = pull_histogram();
        let exec_sync_duration = call_histogram();
        let monitors = Gauge::default();
        let monitor_reattached = Counter::default();
        let container_oom = Counter::default();
        // Counters are registered without `_total`: the encoder adds it.
        registry.register(
            "pier_cri_requests",
            "CRI calls answered, by method and gRPC status code",
            cri_requests.clone(),
        );
        registry.register(
            "pier_cri_request_duration_seconds",
            "Time from a CRI call's arrival to its answer, by method",
            cri_duration.clone(),
        );
        registry.register(
            "pier_image_pulls",
            "Image pulls finished, by result (success or failure)",
            pulls.clone(),
        );
        registry.register(
            "pier_image_pull_duration_seconds",
            "Time of each image pull, successful or not",
            pull_duration.clone(),
        );
        registry.register(
            "pier_exec_sync_duration_seconds",
            "Time of each ExecSync, from the call to the command's exit",
            exec_sync_duration.clone(),
        );
        registry.register(
            "pier_monitors",
            "Container monitors alive and watched by this pierd",
            monitors.clone(),
        );
        registry.register(
            "pier_monitor_reattached",
            "Monitors found alive and picked up again when pierd started",
            monitor_reattached.clone(),
        );
        registry.register(
            "pier_container_oom",
            "Containers whose exit the kernel's OOM killer caused",
            container_oom.clone(),
        );
        let census = Arc::new(census::Census::new(db, run_containers, images));
        registry.register_collector(Box::new(Arc::clone(&census)));
        registry.register_collector(Box::new(process::ProcessCollector));
        Self {
            registry,
            cri_requests,
            cri_duration,
            pulls,
            pull_duration,
            exec_sync_duration,
            monitors,
            monitor_reattached,
            container_oom,
            census,
        }
    }

    /// Records one answered CRI call.
    pub fn record_call(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.cri_requests
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                code: code_name(code),
            })
            .inc();
        self.cri_duration
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_pull(&self, succeeded: bool, elapsed: Duration) {
        let result = if succeeded { "success" } else { "failure" };
        self.pulls.get_or_create(&ResultLabels { result }).inc();
        self.pull_duration.observe(elapsed.as_secs_f64());
    }

    pub fn record_exec_sync(&self, elapsed: Duration) {
        self.exec_sync_duration.observe(elapsed.as_secs_f64());
    }

    /// A monitor is being watched; the gauge drops when the guard does.
    pub fn monitor_watched(self: &Arc<Self>) -> MonitorGuard {
        self.monitors.inc();
        MonitorGuard(Arc::clone(self))
    }

    pub fn monitor_reattached(&self) {
        self.monitor_reattached.inc();
    }

    pub fn container_oom(&self) {
        self.container_oom.inc();
    }

    /// Keeps the log counters of a container whose run dir is about to go,
    /// so the node's totals never go down.
    pub fn retire_log_counters(&self, run_dir: &Path) {
        self.census.retire(run_dir);
    }

    /// Takes a census now, for the first scrape to find.
    pub async fn refresh(&self) {
        self.census.refresh(true).await;
    }

    /// Brings the census up to date for a scrape, waiting at most `patience`.
    pub async fn refresh_for_scrape(&self, patience: Duration) {
        let _ = tokio::time::timeout(patience, self.census.refresh(false)).await;
    }

    /// The exposition of every metric, in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// gRPC's own spelling of a status code (`OK`, `NotFound`), as grpc-go's
/// and tonic's interceptors label them.
fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".to_owned(),
        other => format!("{other:?}"),
    }
}

/// Counts one watched monitor in `pier_monitors` while it lives.
pub struct MonitorGuard(Arc<Metrics>);

impl Drop for MonitorGuard {
    fn drop(&mut self) {
        self.0.monitors.dec();
    }
}
