//! ContainerStats and PodSandboxStats: CPU and memory from the cgroups the
//! processes are in (v1 or v2, see `super::cgroup`), writable-layer usage
//! from the container's upper directory. Those are file reads and a walk of
//! every writable layer: they run on blocking threads, or a node's worth of
//! them (60 ms for 500 containers) would hold an async worker and every
//! request queued behind it.

use k8s_cri::v1::{
    ContainerAttributes, ContainerConfig, ContainerFilter, ContainerStats, ContainerStatsFilter,
    CpuUsage, FilesystemIdentifier, FilesystemUsage, LinuxPodSandboxStats, MemoryUsage,
    PodSandboxAttributes, PodSandboxStats, PodSandboxStatsFilter, UInt64Value,
};
use pier_storage::{ContainerRecord, ImageStore, SandboxRecord};

use super::cgroup::{Cgroup, Detail};
use super::{ContainerRuntime, RUNNING, config_of, select};
use crate::daemon::Daemon;
use crate::error::Error;

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

/// ContainerStats' CPU and memory, from one reading of a cgroup.
fn usage(cgroup: &Cgroup) -> (Option<CpuUsage>, Option<MemoryUsage>) {
    let sample = cgroup.read(Detail::Usage);
    let timestamp = sample.timestamp;
    let cpu = sample.cpu.usage_ns.map(|ns| CpuUsage {
        timestamp,
        usage_core_nano_seconds: value(ns),
        usage_nano_cores: None,
    });
    let memory = &sample.memory;
    let memory = memory.usage.map(|used| MemoryUsage {
        timestamp,
        working_set_bytes: memory.working_set().and_then(value),
        available_bytes: None,
        usage_bytes: value(used),
        rss_bytes: memory.rss.and_then(value),
        page_faults: memory.pgfault_hierarchy.and_then(value),
        major_page_faults: memory.pgmajfault_hierarchy.and_then(value),
    });
    (cpu, memory)
}

fn container_stats(images: &ImageStore, record: &ContainerRecord) -> ContainerStats {
    let config = config_of(record);
    let runtime = ContainerRuntime::from_record(record);
    let alive = record.state == RUNNING
        && runtime.pid > 0
        && pier_proto::proc_stat::start_time(runtime.pid) == Some(runtime.start_time);
    let (cpu, memory) = match alive.then(|| Cgroup::of_process(runtime.pid)).flatten() {
        Some(cgroup) => usage(&cgroup),
        None => (None, None),
    };
    let (upper, layer) = images.writable_layer(&record.id).unwrap_or_default();
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        cpu,
        memory,
        writable_layer: Some(FilesystemUsage {
            timestamp: crate::time::now_ns(),
            fs_id: Some(FilesystemIdentifier {
                mountpoint: upper.display().to_string(),
            }),
            used_bytes: value(layer.bytes),
            inodes_used: value(layer.inodes),
        }),
        swap: None,
    }
}

/// ContainerStats for one container.
pub async fn one(daemon: &Daemon, id: &str) -> Result<ContainerStats, Error> {
    let record = daemon.require_container(id).await?;
    let images = daemon.images.clone();
    Ok(tokio::task::spawn_blocking(move || container_stats(&images, &record)).await?)
}

/// ListContainerStats: the containers the filter selects.
pub async fn many(
    daemon: &Daemon,
    filter: Option<ContainerStatsFilter>,
) -> Result<Vec<ContainerStats>, Error> {
    let filter = filter.map(|f| ContainerFilter {
        id: f.id,
        state: None,
        pod_sandbox_id: f.pod_sandbox_id,
        label_selector: f.label_selector,
    });
    // One scan of the table, not one lookup per listed container.
    let selected = select(daemon, filter).await?;
    let images = daemon.images.clone();
    Ok(tokio::task::spawn_blocking(move || {
        selected
            .iter()
            .map(|(record, _)| container_stats(&images, record))
            .collect()
    })
    .await?)
}

/// PodSandboxStats: the pod's cgroup parent when kubelet gave one, and its containers.
pub async fn pod(daemon: &Daemon, id: &str) -> Result<PodSandboxStats, Error> {
    let record = daemon.require_sandbox(id).await?;
    let filter = ContainerFilter {
        pod_sandbox_id: record.id.clone(),
        ..Default::default()
    };
    let containers = select(daemon, Some(filter)).await?;
    let images = daemon.images.clone();
    Ok(tokio::task::spawn_blocking(move || pod_stats(&images, &record, &containers)).await?)
}

/// The stats of one pod, from its row and the selected container rows
/// (those of other pods are skipped).
fn pod_stats(
    images: &ImageStore,
    record: &SandboxRecord,
    containers: &[(ContainerRecord, ContainerConfig)],
) -> PodSandboxStats {
    let config = crate::sandbox::config_of(record);
    let containers: Vec<ContainerStats> = containers
        .iter()
        .filter(|(c, _)| c.sandbox_id == record.id)
        .map(|(c, _)| container_stats(images, c))
        .collect();
    let parent = config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let (cpu, memory) = match pod_usage(&parent) {
        (None, None) => summed_usage(&containers),
        usage => usage,
    };
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: record.id.clone(),
            metadata: config.metadata,
            labels: config.labels,
            annotations: config.annotations,
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu,
            memory,
            network: None,
            process: None,
            containers,
        }),
        windows: None,
    }
}

/// A pod without a cgroup of its own (no cgroup parent, as crictl's and
/// critest's pods come): the sum of its containers' usage, which is what the
/// pod's cgroup would hold. crictl leaves out a pod whose usage is missing.
fn summed_usage(containers: &[ContainerStats]) -> (Option<CpuUsage>, Option<MemoryUsage>) {
    fn add(total: &mut Option<UInt64Value>, part: &Option<UInt64Value>) {
        if let Some(part) = part {
            total.get_or_insert_default().value += part.value;
        }
    }
    let timestamp = crate::time::now_ns();
    let mut cpu: Option<CpuUsage> = None;
    let mut memory: Option<MemoryUsage> = None;
    for stats in containers {
        if let Some(part) = &stats.cpu {
            let total = cpu.get_or_insert_with(|| CpuUsage {
                timestamp,
                ..Default::default()
            });
            add(
                &mut total.usage_core_nano_seconds,
                &part.usage_core_nano_seconds,
            );
            add(&mut total.usage_nano_cores, &part.usage_nano_cores);
        }
        if let Some(part) = &stats.memory {
            let total = memory.get_or_insert_with(|| MemoryUsage {
                timestamp,
                ..Default::default()
            });
            add(&mut total.working_set_bytes, &part.working_set_bytes);
            add(&mut total.available_bytes, &part.available_bytes);
            add(&mut total.usage_bytes, &part.usage_bytes);
            add(&mut total.rss_bytes, &part.rss_bytes);
            add(&mut total.page_faults, &part.page_faults);
            add(&mut total.major_page_faults, &part.major_page_faults);
        }
    }
    (cpu, memory)
}

/// Usage of a pod's cgroup parent, if it exists.
fn pod_usage(parent: &str) -> (Option<CpuUsage>, Option<MemoryUsage>) {
    match Cgroup::of_parent(parent) {
        Some(cgroup) => usage(&cgroup),
        None => (None, None),
    }
}

/// ListPodSandboxStats: the pods the filter selects.
pub async fn pods(
    daemon: &Daemon,
    filter: Option<PodSandboxStatsFilter>,
) -> Result<Vec<PodSandboxStats>, Error> {
    let filter = filter.map(|f| k8s_cri::v1::PodSandboxFilter {
        id: f.id,
        state: None,
        label_selector: f.label_selector,
    });
    let selected: std::collections::HashSet<String> = crate::sandbox::list(daemon, filter)
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    // Each table is read once for the whole list.
    let sandboxes = daemon.db(|db| db.sandboxes()).await?;
    let containers = select(daemon, None).await?;
    let images = daemon.images.clone();
    Ok(tokio::task::spawn_blocking(move || {
        sandboxes
            .iter()
            .filter(|s| selected.contains(&s.id))
            .map(|s| pod_stats(&images, s, &containers))
            .collect()
    })
    .await?)
}
