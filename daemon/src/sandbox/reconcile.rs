//! Bringing stored sandboxes in line with the node at startup: what a crash
//! or a reboot took away is marked not ready, and what a crashed setup left
//! half made is released.

use super::{NOT_READY, READY, SandboxRuntime, config_of, namespaces, teardown};
use crate::daemon::Daemon;
use crate::error::Error;

/// Runs once before serving.
pub async fn reconcile(daemon: &Daemon) -> Result<(), Error> {
    for record in daemon.db(|db| db.sandboxes()).await? {
        let runtime = SandboxRuntime::from_record(&record);
        let userns = runtime.userns.as_ref().map(|u| &u.path);
        let host = &*daemon.host;
        let intact = namespaces::pinned(&runtime)
            .into_iter()
            .chain(userns)
            .all(|p| host.is_pinned(p))
            && namespaces::infra_alive(host, &runtime);
        if record.state == READY && intact {
            continue;
        }
        // Not ready (stopped, or a setup a crash interrupted), or damaged:
        // release whatever is left. Release is idempotent.
        teardown::release(daemon, &record.id, &config_of(&record), &runtime).await;
        if record.state == READY {
            tracing::warn!(pod_id = %record.id, "sandbox namespaces are gone; marking it not ready");
            let id = record.id.clone();
            daemon
                .db(move |db| db.set_sandbox_state(&id, NOT_READY))
                .await?;
        }
    }
    Ok(())
}
