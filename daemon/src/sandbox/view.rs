//! PodSandboxStatus and ListPodSandbox: stored rows as the CRI shows them.

use std::collections::HashMap;

use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandbox, PodSandboxConfig, PodSandboxFilter,
    PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};
use pier_storage::SandboxRecord;
use serde_json::json;

use super::{READY, SandboxRuntime, config_of, namespaces};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::host::Host;

/// Ready as stored, unless the process holding its PID namespace died since
/// (which took every container in it along): kubelet must then recreate it.
fn state(host: &dyn Host, record: &SandboxRecord, runtime: &SandboxRuntime) -> PodSandboxState {
    if record.state == READY && namespaces::infra_alive(host, runtime) {
        PodSandboxState::SandboxReady
    } else {
        PodSandboxState::SandboxNotready
    }
}

/// The status of one sandbox, with `info` when `verbose`.
pub async fn status(
    daemon: &Daemon,
    id: &str,
    verbose: bool,
) -> Result<(PodSandboxStatus, HashMap<String, String>), Error> {
    let record = daemon.require_sandbox(id).await?;
    let runtime = SandboxRuntime::from_record(&record);
    let config = config_of(&record);
    let status = status_of(&*daemon.host, &record, &config, &runtime);
    let mut info = HashMap::new();
    if verbose {
        let details = json!({
            "sandboxId": record.id,
            "state": record.state,
            "runtime": runtime,
            "config": config,
        });
        info.insert("info".to_owned(), details.to_string());
    }
    Ok((status, info))
}

/// A stored sandbox as the CRI shows its status.
pub fn status_of(
    host: &dyn Host,
    record: &SandboxRecord,
    config: &PodSandboxConfig,
    runtime: &SandboxRuntime,
) -> PodSandboxStatus {
    let state = state(host, record, runtime);
    let ready = state == PodSandboxState::SandboxReady;
    let mut ips = if ready {
        runtime.ips.clone()
    } else {
        Vec::new()
    }
    .into_iter();
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    PodSandboxStatus {
        id: record.id.clone(),
        metadata: config.metadata.clone(),
        state: state as i32,
        created_at: record.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: ips.next().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(options),
            }),
        }),
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

/// The sandboxes matching `filter`, oldest first.
pub async fn list(
    daemon: &Daemon,
    filter: Option<PodSandboxFilter>,
) -> Result<Vec<PodSandbox>, Error> {
    let records = daemon.db(|db| db.sandboxes()).await?;
    let filter = filter.unwrap_or_default();
    Ok(records
        .iter()
        .filter(|r| filter.id.is_empty() || r.id.starts_with(&filter.id))
        .map(|r| (r, state(&*daemon.host, r, &SandboxRuntime::from_record(r))))
        .filter(|(_, state)| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == *state as i32)
        })
        .filter_map(|(r, state)| {
            let config = config_of(r);
            let labels_match = filter
                .label_selector
                .iter()
                .all(|(k, v)| config.labels.get(k) == Some(v));
            labels_match.then(|| PodSandbox {
                id: r.id.clone(),
                metadata: config.metadata.clone(),
                state: state as i32,
                created_at: r.created_at,
                labels: config.labels.clone(),
                annotations: config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
        })
        .collect())
}
