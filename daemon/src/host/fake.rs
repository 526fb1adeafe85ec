//! A host for unit tests: it records every call, keeps its "processes" in
//! a table, and ends a container when it is sent a signal the test said it
//! would die of, as its monitor would: exit file first, then the monitor's
//! own exit.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use futures_util::future::BoxFuture;
use pier_proto::exit_file::{self, ExitStatus};
use pier_proto::monitor::Created;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use super::{Host, NamespaceError, OciRuntime, Process, RuncError, Urgency};
use crate::container::launch::{BundleReady, Launch, LaunchError};
use crate::network::cni::{Attachment, CniError};
use crate::network::conflist::NetworkConfig;
use crate::pinns::PinRequest;

/// One call the fake was asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    RuntimeStart(String),
    RuntimeKill(String, String),
    RuntimeUpdate(String),
    RuntimeDelete(String),
    LaunchMonitor(String),
    Kill(i32),
    EndInterruptedCreate(String),
    /// The namespaces asked for, by the paths they are pinned at.
    PinNamespaces(Vec<PathBuf>),
    UnpinNamespace(PathBuf),
    MountShm(PathBuf),
    UnmountShm(PathBuf),
    NetworkAdd(String),
    NetworkDel(String),
}

/// A container the fake can end, as its monitor would.
struct Container {
    monitor: Process,
    exit_dir: PathBuf,
    /// The signals (as runc takes them) it exits of.
    dies_of: Vec<String>,
}

type Observer = Box<dyn Fn(&Call) + Send + Sync>;

pub struct FakeHost {
    calls: Mutex<Vec<Call>>,
    called: watch::Sender<usize>,
    /// Running processes, pid → start time.
    processes: watch::Sender<HashMap<i32, u64>>,
    next_pid: AtomicI32,
    containers: Mutex<HashMap<String, Container>>,
    pinned: Mutex<HashSet<PathBuf>>,
    start_gate: Mutex<Option<oneshot::Receiver<()>>>,
    observer: Mutex<Option<Observer>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            calls: Mutex::default(),
            called: watch::channel(0).0,
            processes: watch::channel(HashMap::new()).0,
            next_pid: AtomicI32::new(1000),
            containers: Mutex::default(),
            pinned: Mutex::default(),
            start_gate: Mutex::default(),
            observer: Mutex::default(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeHost {
    /// What the fake was asked, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// Resolves once a call `wanted` accepts has been made.
    pub async fn called(&self, wanted: impl Fn(&Call) -> bool) {
        let mut called = self.called.subscribe();
        while !self.calls().iter().any(&wanted) {
            let _ = called.changed().await;
        }
    }

    /// Runs `observe` on every call as it is made, before it takes effect.
    pub fn observe(&self, observe: impl Fn(&Call) + Send + Sync + 'static) {
        *lock(&self.observer) = Some(Box::new(observe));
    }

    /// Makes the next `runtime_start` wait until the returned sender fires
    /// (or is dropped).
    pub fn hold_start(&self) -> oneshot::Sender<()> {
        let (release, gate) = oneshot::channel();
        *lock(&self.start_gate) = Some(gate);
        release
    }

    /// A new running process.
    pub fn spawn(&self) -> Process {
        let process = Process {
            pid: self.next_pid.fetch_add(1, Ordering::Relaxed),
            start_time: 4242,
        };
        self.processes.send_modify(|p| {
            p.insert(process.pid, process.start_time);
        });
        process
    }

    /// Ends a process, as a crash or a signal would.
    pub fn end(&self, process: Process) {
        self.processes.send_modify(|p| {
            if p.get(&process.pid) == Some(&process.start_time) {
                p.remove(&process.pid);
            }
        });
    }

    /// Makes container `id` (watched through `monitor`, writing its exit
    /// file into `exit_dir`) exit when sent one of `dies_of`.
    pub fn add_container(&self, id: &str, monitor: Process, exit_dir: &Path, dies_of: &[&str]) {
        let container = Container {
            monitor,
            exit_dir: exit_dir.to_owned(),
            dies_of: dies_of.iter().map(|s| (*s).to_owned()).collect(),
        };
        lock(&self.containers).insert(id.to_owned(), container);
    }

    /// Container `id` exits with `exit_code`: its monitor writes the exit
    /// file and then exits itself.
    pub fn exit(&self, id: &str, exit_code: i32) {
        let Some(container) = lock(&self.containers).remove(id) else {
            return;
        };
        let status = ExitStatus {
            exit_code,
            finished_ns: crate::time::now_ns(),
            oom_killed: false,
        };
        exit_file::write(&container.exit_dir, &status).expect("write the exit file");
        self.end(container.monitor);
    }

    fn record(&self, call: Call) {
        if let Some(observe) = lock(&self.observer).as_ref() {
            observe(&call);
        }
        let count = {
            let mut calls = lock(&self.calls);
            calls.push(call);
            calls.len()
        };
        self.called.send_replace(count);
    }
}

/// The exit code of a process ended by `signal`, as a shell reports it.
fn killed_by(signal: &str) -> i32 {
    let number = match signal {
        "SIGKILL" | "KILL" | "9" => 9,
        "SIGINT" | "INT" | "2" => 2,
        _ => 15,
    };
    128 + number
}

impl Host for FakeHost {
    /// `running` once the container was started, `created` before.
    fn runtime_state<'a>(
        &'a self,
        _runtime: OciRuntime<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<String, RuncError>> {
        let started = self.calls().contains(&Call::RuntimeStart(id.to_owned()));
        let status = if started { "running" } else { "created" };
        Box::pin(async move { Ok(status.to_owned()) })
    }

    fn runtime_start<'a>(
        &'a self,
        _runtime: OciRuntime<'a>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), RuncError>> {
        self.record(Call::RuntimeStart(id.to_owned()));
        let gate = lock(&self.start_gate).take();
        Box::pin(async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            Ok(())
        })
    }

    fn runtime_kill<'a>(
        &'a self,
        _runtime: OciRuntime<'a>,
        id: &'a str,
        signal: &'a str,
    ) -> BoxFuture<'a, Result<(), RuncError>> {
        self.record(Call::RuntimeKill(id.to_owned(), signal.to_owned()));
        let dies = lock(&self.containers)
            .get(id)
            .is_some_and(|c| c.dies_of.iter().any(|s| s == signal));
        if dies {
            self.exit(id, killed_by(signal));
        }
        Box::pin(async { Ok(()) })
    }

    fn runtime_update<'a>(
        &'a self,
        _runtime: OciRuntime<'a>,
        id: &'a str,
        _resources: &'a [u8],
    ) -> BoxFuture<'a, Result<(), RuncError>> {
        self.record(Call::RuntimeUpdate(id.to_owned()));
        Box::pin(async { Ok(()) })
    }

    fn runtime_delete<'a>(
        &'a self,
        _runtime: OciRuntime<'a>,
        id: &'a str,
        _urgency: Urgency,
    ) -> BoxFuture<'a, Result<(), RuncError>> {
        self.record(Call::RuntimeDelete(id.to_owned()));
        Box::pin(async { Ok(()) })
    }

    fn launch_monitor(&self, launch: &Launch, ready: BundleReady) -> Result<Created, LaunchError> {
        if ready.blocking_recv().is_err() {
            return Err(LaunchError::Cancelled);
        }
        self.record(Call::LaunchMonitor(launch.args.id.clone()));
        let (container, monitor) = (self.spawn(), self.spawn());
        Ok(Created {
            pid: container.pid,
            start_time: container.start_time,
            monitor_pid: monitor.pid,
            monitor_start_time: monitor.start_time,
        })
    }

    fn wait_exit(&self, process: Process) -> BoxFuture<'_, io::Result<()>> {
        let mut processes = self.processes.subscribe();
        Box::pin(async move {
            let gone = |p: &HashMap<i32, u64>| p.get(&process.pid) != Some(&process.start_time);
            let _ = processes.wait_for(gone).await;
            Ok(())
        })
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        self.processes.borrow().get(&pid).copied()
    }

    fn kill(&self, process: Process) -> nix::Result<()> {
        self.record(Call::Kill(process.pid));
        self.end(process);
        Ok(())
    }

    fn end_interrupted_create<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Vec<Process>> {
        self.record(Call::EndInterruptedCreate(id.to_owned()));
        Box::pin(async { Vec::new() })
    }

    fn pin_namespaces<'a>(
        &'a self,
        request: &'a PinRequest,
    ) -> BoxFuture<'a, Result<Option<Process>, NamespaceError>> {
        let pins: Vec<PathBuf> = [&request.net, &request.ipc, &request.uts, &request.pid]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        self.record(Call::PinNamespaces(pins.clone()));
        // As the helper does, a file at each path holds the namespace.
        for pin in &pins {
            if let Some(parent) = pin.parent() {
                std::fs::create_dir_all(parent).expect("create pin dir");
            }
            std::fs::write(pin, b"").expect("create pin file");
        }
        lock(&self.pinned).extend(pins);
        let infra = request.pid.is_some().then(|| self.spawn());
        Box::pin(async move { Ok(infra) })
    }

    /// The fake starts no infra processes.
    fn pid_namespace_init(&self, _pin: &Path) -> Option<Process> {
        None
    }

    fn is_pinned(&self, path: &Path) -> bool {
        lock(&self.pinned).contains(path)
    }

    fn unpin_namespace(&self, path: &Path) {
        self.record(Call::UnpinNamespace(path.to_owned()));
        lock(&self.pinned).remove(path);
        let _ = std::fs::remove_file(path);
    }

    fn mount_shm(&self, path: &Path) -> nix::Result<()> {
        self.record(Call::MountShm(path.to_owned()));
        Ok(())
    }

    fn unmount_shm(&self, path: &Path) {
        self.record(Call::UnmountShm(path.to_owned()));
    }

    fn network_add<'a>(
        &'a self,
        _network: &'a NetworkConfig,
        _plugin_dirs: &'a [PathBuf],
        pod: &'a Attachment<'a>,
    ) -> BoxFuture<'a, Result<Value, CniError>> {
        self.record(Call::NetworkAdd(pod.sandbox_id.to_owned()));
        let result = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.2/16"}]});
        Box::pin(async move { Ok(result) })
    }

    fn network_del<'a>(
        &'a self,
        _network: &'a NetworkConfig,
        _plugin_dirs: &'a [PathBuf],
        pod: &'a Attachment<'a>,
        _add_result: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<(), CniError>> {
        self.record(Call::NetworkDel(pod.sandbox_id.to_owned()));
        Box::pin(async { Ok(()) })
    }
}
