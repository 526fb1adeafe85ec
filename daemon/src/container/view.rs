//! ContainerStatus and ListContainers: stored rows as the CRI shows them.

use std::collections::HashMap;

use futures_util::future::BoxFuture;
use k8s_cri::v1::{
    Container, ContainerConfig, ContainerFilter, ContainerResources, ContainerState,
    ContainerStatus, ContainerUser, ImageSpec,
};
use pier_storage::ContainerRecord;
use serde_json::json;

use super::{CREATED, ContainerRuntime, EXITED, RUNNING, config_of};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::events::{PodSnapshot, PodSnapshots};
use crate::sandbox::{self, SandboxRuntime};

fn state(record: &ContainerRecord) -> ContainerState {
    match record.state.as_str() {
        CREATED => ContainerState::ContainerCreated,
        RUNNING => ContainerState::ContainerRunning,
        EXITED => ContainerState::ContainerExited,
        _ => ContainerState::ContainerUnknown,
    }
}

/// The status of one container, with `info` (pid, spec) when `verbose`.
pub async fn status(
    daemon: &Daemon,
    id: &str,
    verbose: bool,
) -> Result<(ContainerStatus, HashMap<String, String>), Error> {
    let record = daemon.require_container(id).await?;
    let runtime = ContainerRuntime::from_record(&record);
    let status = status_of(&record, &runtime);
    let mut info = HashMap::new();
    if verbose {
        let spec = std::fs::read_to_string(runtime.bundle.join("config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        let details = json!({
            "sandboxID": record.sandbox_id,
            "pid": runtime.pid,
            "monitorPid": runtime.monitor_pid,
            "runtimeSpec": spec,
        });
        info.insert("info".to_owned(), details.to_string());
    }
    Ok((status, info))
}

/// A stored container as the CRI shows its status.
pub fn status_of(record: &ContainerRecord, runtime: &ContainerRuntime) -> ContainerStatus {
    let config = config_of(record);
    ContainerStatus {
        id: record.id.clone(),
        metadata: config.metadata.clone(),
        state: state(record) as i32,
        created_at: record.created_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        exit_code: record.exit_code,
        image: Some(ImageSpec {
            image: runtime.image_ref.clone(),
            ..Default::default()
        }),
        image_ref: record.image_id.clone(),
        image_id: record.image_id.clone(),
        reason: record.reason.clone(),
        message: record.message.clone(),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        mounts: config.mounts.clone(),
        log_path: runtime.log_path.display().to_string(),
        resources: config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|linux| ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
        user: runtime
            .user
            .clone()
            .map(|linux| ContainerUser { linux: Some(linux) }),
    }
}

/// The stored containers matching `filter`, oldest first, with their configs.
pub async fn select(
    daemon: &Daemon,
    filter: Option<ContainerFilter>,
) -> Result<Vec<(ContainerRecord, ContainerConfig)>, Error> {
    let records = daemon.db(|db| db.containers()).await?;
    let filter = filter.unwrap_or_default();
    Ok(records
        .into_iter()
        .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
        .filter(|r| {
            filter.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&filter.pod_sandbox_id)
        })
        .filter(|r| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == state(r) as i32)
        })
        .map(|r| {
            let config = config_of(&r);
            (r, config)
        })
        .filter(|(_, config)| {
            filter
                .label_selector
                .iter()
                .all(|(k, v)| config.labels.get(k) == Some(v))
        })
        .collect())
}

/// ListContainers: the containers matching `filter`, oldest first.
pub async fn list(
    daemon: &Daemon,
    filter: Option<ContainerFilter>,
) -> Result<Vec<Container>, Error> {
    Ok(select(daemon, filter)
        .await?
        .into_iter()
        .map(|(r, config)| Container {
            image: Some(ImageSpec {
                image: ContainerRuntime::from_record(&r).image_ref,
                ..Default::default()
            }),
            state: state(&r) as i32,
            image_ref: r.image_id.clone(),
            image_id: r.image_id,
            id: r.id,
            pod_sandbox_id: r.sandbox_id,
            metadata: config.metadata,
            created_at: r.created_at,
            labels: config.labels,
            annotations: config.annotations,
        })
        .collect())
}

/// A pod as events carry it: the sandbox's status and its containers'.
impl PodSnapshots for Daemon {
    fn snapshot<'a>(&'a self, sandbox_id: &'a str) -> BoxFuture<'a, Option<PodSnapshot>> {
        Box::pin(async move {
            let id = sandbox_id.to_owned();
            let read = self
                .db(move |db| {
                    let Some(sandbox) = db.sandbox(&id)? else {
                        return Ok(None);
                    };
                    Ok(Some((sandbox, db.containers_in_sandbox(&id)?)))
                })
                .await;
            let (record, containers) = match read {
                Ok(Some(found)) => found,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(pod_id = %sandbox_id, error = %e, "read the pod for a container event");
                    return None;
                }
            };
            let pod = sandbox::status_of(
                &*self.host,
                &record,
                &sandbox::config_of(&record),
                &SandboxRuntime::from_record(&record),
            );
            let containers = containers
                .iter()
                .map(|c| status_of(c, &ContainerRuntime::from_record(c)))
                .collect();
            Some((pod, containers))
        })
    }
}
