//! ListMetricDescriptors and ListPodSandboxMetrics: the container metrics
//! kubelet's `/metrics/cadvisor` serves when it takes them from the runtime
//! instead of cAdvisor. Per ready pod: the pod's own CPU, memory and
//! processes (its cgroup parent's, or the sum of its containers' when it
//! has none) and its network interfaces; per running container: CPU,
//! memory, OOM kills, processes and its writable layer.
//!
//! A call reads the database once, then does all file reading off the
//! async runtime: the cgroups on a blocking thread, each cgroup file once,
//! while a thread of its own reads the pods' network namespaces (see
//! `netdev`). What cannot be read (a container that just exited, a
//! namespace already released) is left out and logged at debug; it never
//! fails the call.

mod emit;
pub mod families;
mod netdev;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use k8s_cri::v1::{ContainerMetrics, PodSandboxMetrics};
use pier_storage::{ContainerRecord, ImageStore, SandboxRecord};

use crate::container::cgroup::{Cgroup, Detail, Sample};
use crate::container::{ContainerRuntime, RUNNING};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::sandbox::{self, Namespaces, SandboxRuntime};
use emit::{Labels, Layer, PodName, Series};

pub use families::descriptors;

/// ListPodSandboxMetrics: the metrics of every ready pod.
pub async fn list(daemon: &Daemon) -> Result<Vec<PodSandboxMetrics>, Error> {
    let sandboxes = daemon.db(|db| db.sandboxes()).await?;
    let containers = daemon.db(|db| db.containers()).await?;
    let pods = plan(&sandboxes, &containers);
    let images = daemon.images.clone();
    let span = tracing::Span::current();
    let metrics = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        collect(&pods, &images)
    })
    .await?;
    Ok(metrics)
}

/// What a call reads of one pod, taken from its row.
#[derive(Debug)]
struct PodPlan {
    id: String,
    labels: Labels,
    /// The pinned network namespace; `None` for a host-network pod, whose
    /// interfaces are the node's.
    netns: Option<PathBuf>,
    cgroup_parent: String,
    containers: Vec<ContainerPlan>,
}

#[derive(Debug)]
struct ContainerPlan {
    id: String,
    labels: Labels,
    pid: i32,
    start_time: u64,
}

/// The ready pods and their running containers.
fn plan(sandboxes: &[SandboxRecord], containers: &[ContainerRecord]) -> Vec<PodPlan> {
    sandboxes
        .iter()
        .filter(|s| s.state == sandbox::READY)
        .map(|record| {
            let config = sandbox::config_of(record);
            let pod = PodName {
                name: record.name.clone(),
                namespace: record.namespace.clone(),
                uid: record.uid.clone(),
            };
            let netns = match Namespaces::of(&config).host_network() {
                true => None,
                false => SandboxRuntime::from_record(record).netns,
            };
            let containers = containers
                .iter()
                .filter(|c| c.sandbox_id == record.id && c.state == RUNNING)
                .map(|c| {
                    let runtime = ContainerRuntime::from_record(c);
                    ContainerPlan {
                        id: c.id.clone(),
                        labels: Labels::container(
                            &c.id,
                            &c.name,
                            c.attempt,
                            &runtime.image_ref,
                            &pod,
                        ),
                        pid: runtime.pid,
                        start_time: runtime.start_time,
                    }
                })
                .collect();
            PodPlan {
                id: record.id.clone(),
                labels: Labels::pod(&record.id, &pod),
                netns,
                cgroup_parent: config.linux.map(|l| l.cgroup_parent).unwrap_or_default(),
                containers,
            }
        })
        .collect()
}

/// Reads every pod of `pods`: the network namespaces on a thread of their
/// own while this thread reads the cgroups and writable layers.
fn collect(pods: &[PodPlan], images: &ImageStore) -> Vec<PodSandboxMetrics> {
    let (indices, namespaces): (Vec<usize>, Vec<(String, PathBuf)>) = pods
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, (p.id.clone(), p.netns.clone()?))))
        .unzip();
    let span = tracing::Span::current();
    std::thread::scope(|scope| {
        // Spawned, never borrowed from a pool: netdev enters namespaces.
        let spawn = || {
            std::thread::Builder::new()
                .name("pod-netns-stats".into())
                .spawn_scoped(scope, || {
                    let _entered = span.enter();
                    let started = std::time::Instant::now();
                    let readings = netdev::read_in_namespaces(&namespaces);
                    tracing::debug!(namespaces = namespaces.len(), elapsed = ?started.elapsed(), "pod network namespaces read");
                    readings
                })
                .inspect_err(|e| tracing::warn!(error = %e, "spawn the network metrics thread"))
                .ok()
        };
        let network = (!namespaces.is_empty()).then(spawn).flatten();
        let started = std::time::Instant::now();
        let mut metrics: Vec<PodSandboxMetrics> =
            pods.iter().map(|pod| pod_metrics(pod, images)).collect();
        tracing::debug!(pods = pods.len(), elapsed = ?started.elapsed(), "pod and container cgroups read");
        let readings = match network.map(|thread| thread.join()) {
            Some(Ok(readings)) => readings,
            Some(Err(_)) => {
                tracing::warn!("the network metrics thread panicked; no network metrics");
                Vec::new()
            }
            None => Vec::new(),
        };
        for (i, reading) in indices.into_iter().zip(readings) {
            if let Some(reading) = reading {
                let mut series = Series::new(&pods[i].labels, reading.timestamp);
                series.network(&reading.interfaces);
                metrics[i].metrics.append(&mut series.metrics);
            }
        }
        metrics
    })
}

/// A pod's own cgroup metrics and its containers'.
fn pod_metrics(pod: &PodPlan, images: &ImageStore) -> PodSandboxMetrics {
    let mut summed = Sample {
        timestamp: crate::time::now_ns(),
        ..Default::default()
    };
    let mut container_metrics = Vec::with_capacity(pod.containers.len());
    for c in &pod.containers {
        let alive = c.pid > 0 && pier_proto::proc_stat::start_time(c.pid) == Some(c.start_time);
        let Some(cgroup) = alive.then(|| Cgroup::of_process(c.pid)).flatten() else {
            tracing::debug!(pod_id = %pod.id, container_id = %c.id, "container not running; no metrics");
            continue;
        };
        let sample = cgroup.read(Detail::Full);
        summed.add(&sample);
        let mut series = Series::new(&c.labels, sample.timestamp);
        series.cgroup(&sample);
        series.layer(&writable_layer(images, &c.id));
        container_metrics.push(ContainerMetrics {
            container_id: c.id.clone(),
            metrics: series.metrics,
        });
    }
    // A pod's processes are in its containers' cgroups, not in its own.
    let own = Cgroup::of_parent(&pod.cgroup_parent).map(|cgroup| Sample {
        processes: summed.processes,
        threads: summed.threads,
        ..cgroup.read(Detail::Full)
    });
    let sample = own.unwrap_or(summed);
    let mut series = Series::new(&pod.labels, sample.timestamp);
    series.cgroup(&sample);
    PodSandboxMetrics {
        pod_sandbox_id: pod.id.clone(),
        metrics: series.metrics,
        container_metrics,
    }
}

/// A container's writable layer and the filesystem under it.
fn writable_layer(images: &ImageStore, id: &str) -> Layer {
    let Ok((dir, usage)) = images.writable_layer(id) else {
        tracing::debug!(
            container_id = id,
            "no writable layer; no filesystem metrics"
        );
        return Layer::default();
    };
    let fs = nix::sys::statvfs::statvfs(&dir)
        .inspect_err(
            |e| tracing::debug!(container_id = id, error = %e, "statvfs of the writable layer"),
        )
        .ok();
    Layer {
        dir: dir.display().to_string(),
        used_bytes: Some(usage.bytes),
        fs_bytes: fs
            .as_ref()
            .map(|s| s.blocks().saturating_mul(s.fragment_size())),
        fs_inodes: fs.as_ref().map(|s| s.files()),
        fs_inodes_free: fs.as_ref().map(|s| s.files_free()),
    }
}
