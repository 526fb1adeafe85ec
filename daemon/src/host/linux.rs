//! The real host: runc, processes, mounts and CNI plugins on this node.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pier_proto::monitor::Created;
use serde_json::Value;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{
    Host, NamespaceError, OciRuntime, Process, RuncError, Urgency, leftovers, namespaces, runc,
    runc_direct,
};
use crate::container::launch::{self, BundleReady, Launch, LaunchError};
use crate::network::cni::{self, Attachment, CniError};
use crate::network::conflist::NetworkConfig;
use crate::pinns::PinRequest;
use pier_proto::proc_stat::start_time;

/// Size of the pod's /dev/shm, as Docker and CRI-O default it.
const SHM_SIZE: &str = "65536k";

/// Longest StartContainer waits for a created container's init to exec.
/// The exec is of a binary runc already found; only a stuck filesystem
/// comes near this.
const FIFO_START_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a `runc_direct` step for container `id` of the runtime root `root`
/// on a blocking thread. A step that did not finish (it panicked) is left
/// to the runtime, as a case the step does not cover would be.
async fn direct(
    root: &Path,
    id: &str,
    step: impl FnOnce(&Path, &str) -> Result<runc_direct::Outcome, runc_direct::DirectError>
    + Send
    + 'static,
) -> Result<runc_direct::Outcome, runc_direct::DirectError> {
    let (root, id) = (root.to_owned(), id.to_owned());
    match tokio::task::spawn_blocking(move || step(&root, &id)).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::warn!(error = %e, "a direct runtime step did not finish");
            Ok(runc_direct::Outcome::UseRuntime(
                "the direct step did not finish",
            ))
        }
    }
}

/// `statfs` magic of the namespace filesystem a pinned namespace lives on.
const NSFS_MAGIC: u32 = 0x6e73_6673;

/// The node pierd runs on.
#[derive(Debug, Default)]
pub struct LinuxHost;

impl Host for LinuxHost {
    fn runtime_start<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RuncError>> {
        Box::pin(async move {
            let started = direct(runtime.root, id, |root, id| {
                runc_direct::start(root, id, FIFO_START_WITHIN)
            });
            match started.await {
                Ok(runc_direct::Outcome::Done) => Ok(()),
                Ok(runc_direct::Outcome::UseRuntime(why)) => {
                    tracing::debug!(why, "container started by the runtime");
                    runc::run(runtime.binary, runtime.root, &["start", id]).await
                }
                Err(e) => Err(RuncError::Start(e)),
            }
        })
    }

    fn runtime_state<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<String, RuncError>> {
        Box::pin(async move { runc::state(runtime.binary, runtime.root, id).await })
    }

    fn runtime_kill<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
        signal: &'a str,
    ) -> BoxFuture<'a, Result<(), RuncError>> {
        Box::pin(async move {
            let args = ["kill", "--all", id, signal];
            runc::run(runtime.binary, runtime.root, &args).await
        })
    }

    fn runtime_update<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
        resources: &'a [u8],
    ) -> BoxFuture<'a, Result<(), RuncError>> {
        Box::pin(async move {
            let args = ["update", "--resources", "-", id];
            runc::run_with_input(runtime.binary, runtime.root, &args, Some(resources)).await
        })
    }

    fn runtime_delete<'a>(
        &'a self,
        runtime: OciRuntime<'a>,
        id: &'a str,
        urgency: Urgency,
    ) -> BoxFuture<'a, Result<(), RuncError>> {
        Box::pin(async move {
            match direct(runtime.root, id, runc_direct::delete).await {
                Ok(runc_direct::Outcome::Done) => return Ok(()),
                Ok(runc_direct::Outcome::UseRuntime(why)) => {
                    tracing::debug!(why, "container deleted by the runtime");
                }
                Err(e) => tracing::warn!(error = %e, "direct delete; the runtime deletes it"),
            }
            let args = ["delete", "--force", id];
            runc::run_as(runtime.binary, runtime.root, &args, None, urgency)
                .await
                .map(drop)
        })
    }

    fn launch_monitor(&self, launch: &Launch, ready: BundleReady) -> Result<Created, LaunchError> {
        launch::launch(launch, ready)
    }

    fn wait_exit(&self, process: Process) -> BoxFuture<'_, io::Result<()>> {
        Box::pin(async move {
            let Some(fd) = pidfd(process) else {
                return Ok(());
            };
            // SAFETY: the AsyncFd takes ownership of the OwnedFd, which stays
            // open and unchanged until the AsyncFd is dropped.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
            // A pidfd becomes readable when its process exits.
            let _ = fd.readable().await?;
            Ok(())
        })
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        start_time(pid)
    }

    fn is_alive(&self, process: Process) -> bool {
        pier_proto::proc_stat::is_running(process.pid, process.start_time)
    }

    fn kill(&self, process: Process) -> nix::Result<()> {
        if !self.is_alive(process) {
            return Ok(());
        }
        kill(Pid::from_raw(process.pid), Signal::SIGKILL)
    }

    fn end_interrupted_create<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Vec<Process>> {
        let id = id.to_owned();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || leftovers::end_interrupted_create(&id))
                .await
                .unwrap_or_default()
        })
    }

    fn pin_namespaces<'a>(
        &'a self,
        request: &'a PinRequest,
    ) -> BoxFuture<'a, Result<Option<Process>, NamespaceError>> {
        Box::pin(async move {
            let Some(pid) = namespaces::run_helper(request).await? else {
                return Ok(None);
            };
            // Read now, while it surely runs: the pair identifies it from here on.
            let started = start_time(pid).ok_or(NamespaceError::InfraExited(pid))?;
            Ok(Some(Process {
                pid,
                start_time: started,
            }))
        })
    }

    fn pid_namespace_init(&self, pin: &Path) -> Option<Process> {
        let pid = namespaces::pid_namespace_init(pin)?;
        let start_time = self.start_time(pid)?;
        Some(Process { pid, start_time })
    }

    fn is_pinned(&self, path: &Path) -> bool {
        // The magic's C type differs between libcs; `as _` fits it to the local one.
        let nsfs = nix::sys::statfs::FsType(NSFS_MAGIC as _);
        nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nsfs)
    }

    fn unpin_namespace(&self, path: &Path) {
        crate::pinns::unpin(path);
    }

    fn mount_shm(&self, path: &Path) -> nix::Result<()> {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let options = format!("mode=1777,size={SHM_SIZE}");
        mount(
            Some("shm"),
            path,
            Some("tmpfs"),
            flags,
            Some(options.as_str()),
        )
    }

    fn unmount_shm(&self, path: &Path) {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "unmount pod shm"),
        }
    }

    fn network_add<'a>(
        &'a self,
        network: &'a NetworkConfig,
        plugin_dirs: &'a [PathBuf],
        pod: &'a Attachment<'a>,
    ) -> BoxFuture<'a, Result<Value, CniError>> {
        Box::pin(async move {
            cni::add_loopback(plugin_dirs, pod).await?;
            cni::add(network, plugin_dirs, pod).await
        })
    }

    fn network_del<'a>(
        &'a self,
        network: &'a NetworkConfig,
        plugin_dirs: &'a [PathBuf],
        pod: &'a Attachment<'a>,
        add_result: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<(), CniError>> {
        Box::pin(cni::del(network, plugin_dirs, pod, add_result))
    }
}

/// A pidfd for `process`, or `None` if that process is gone.
fn pidfd(process: Process) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, process.pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pid may have been recycled before the pidfd was opened: only the
    // start time proves it is still our process.
    (start_time(process.pid) == Some(process.start_time)).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable_and_a_pidfd_checks_it() {
        let pid = std::process::id() as i32;
        let started = LinuxHost.start_time(pid).expect("start time");
        let me = Process {
            pid,
            start_time: started,
        };
        assert!(LinuxHost.is_alive(me));
        assert!(pidfd(me).is_some());
        let other = Process {
            pid,
            start_time: started + 1,
        };
        assert!(!LinuxHost.is_alive(other));
        assert!(
            pidfd(other).is_none(),
            "a different start time is another process"
        );
    }
}
