//! Bringing stored sandboxes in line with the node at startup: what a crash
//! or a reboot took away is marked not ready, and what a crashed setup left
//! half made is released.

use std::path::Path;

use super::{NOT_READY, READY, SandboxRuntime, config_of, namespaces, teardown};
use crate::daemon::Daemon;
use crate::error::Error;

/// `statfs` magic of the namespace filesystem a pinned namespace lives on.
const NSFS_MAGIC: u32 = 0x6e73_6673;

/// Whether `path` is still a pinned namespace (a reboot empties /run).
fn is_pinned(path: &Path) -> bool {
    // The magic's C type differs between libcs; `as _` fits it to the local one.
    let nsfs = nix::sys::statfs::FsType(NSFS_MAGIC as _);
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nsfs)
}

/// Runs once before serving.
pub async fn reconcile(daemon: &Daemon) -> Result<(), Error> {
    for record in daemon.db(|db| db.sandboxes()).await? {
        let runtime = SandboxRuntime::from_record(&record);
        let pins = [
            &runtime.netns,
            &runtime.ipcns,
            &runtime.utsns,
            &runtime.pidns,
        ];
        let intact =
            pins.into_iter().flatten().all(|p| is_pinned(p)) && namespaces::infra_alive(&runtime);
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
