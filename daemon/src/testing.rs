//! A daemon for unit tests: its state root, run root and database in a temp
//! dir, and a fake host, so the lifecycle logic runs without root, runc or
//! namespaces, and in paused time.

use std::sync::{Arc, Mutex};

use k8s_cri::v1::{PodSandboxConfig, PodSandboxMetadata, RunPodSandboxRequest};
use pier_storage::{ContainerRecord, Database, ImageStore, SandboxRecord, SharedDatabase};
use serde_json::json;

use crate::config::Config;
use crate::container::{self, CREATED, ContainerRuntime, RUNNING};
use crate::daemon::Daemon;
use crate::host::fake::FakeHost;
use crate::sandbox;

pub struct TestDaemon {
    pub daemon: Arc<Daemon>,
    pub host: Arc<FakeHost>,
    pub db: SharedDatabase,
    pub dir: tempfile::TempDir,
}

impl TestDaemon {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            root: dir.path().join("root"),
            runroot: dir.path().join("run"),
            ..Config::default()
        };
        config.cni.conf_dir = dir.path().join("cni");
        // Executable files where pierd looks for its binaries; the fake host
        // runs none of them.
        let exe = std::env::current_exe().expect("own binary");
        for handler in config.runtime.handlers.values_mut() {
            handler.path = exe.clone();
        }
        config.runtime.infra_path = exe.clone();
        config.runtime.monitor_path = exe;
        for dir in [&config.root, &config.runroot, &config.cni.conf_dir] {
            std::fs::create_dir_all(dir).expect("create dir");
        }
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "test",
            "plugins": [{"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": true}}],
        });
        let conf = config.cni.conf_dir.join("10-test.conflist");
        std::fs::write(conf, conflist.to_string()).expect("write conflist");
        let db = Database::open(&config.database_path()).expect("open database");
        let db: SharedDatabase = Arc::new(Mutex::new(db));
        let store = crate::service::image_store_config(&config);
        let images = ImageStore::open(store, Arc::clone(&db))
            .await
            .expect("open image store");
        let host = Arc::new(FakeHost::default());
        let daemon = Daemon::new(config, Arc::clone(&db), images, host.clone());
        Self {
            daemon: Arc::new(daemon),
            host,
            db,
            dir,
        }
    }

    /// A ready pod, made by RunPodSandbox through the fake host.
    pub async fn pod(&self, name: &str) -> String {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name.into(),
            ..Default::default()
        };
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        sandbox::run(&self.daemon, request).await.expect("run pod")
    }

    /// A stored container of pod `sandbox_id` in `state`, with its
    /// directories as CreateContainer makes them and a monitor that runs in
    /// the fake host: the container exits when it is sent one of `dies_of`.
    /// Nothing watches it yet.
    pub fn stored_container(
        &self,
        sandbox_id: &str,
        name: &str,
        state: &str,
        dies_of: &[&str],
    ) -> (String, ContainerRuntime) {
        let id = crate::ids::new_id().expect("id");
        let config = &self.daemon.config;
        let runtime_dir = config.runroot.join("containers").join(&id);
        let state_dir = config.root.join("containers").join(&id);
        let (process, monitor) = (self.host.spawn(), self.host.spawn());
        let runtime = ContainerRuntime {
            bundle: state_dir.join("bundle"),
            runtime_dir: runtime_dir.clone(),
            exit_dirs: vec![runtime_dir, state_dir.join("exit")],
            runtime: std::env::current_exe().expect("own binary"),
            runtime_root: config.runroot.join("runtime").join("runc"),
            pid: process.pid,
            start_time: process.start_time,
            monitor_pid: monitor.pid,
            monitor_start_time: monitor.start_time,
            ..Default::default()
        };
        for dir in [&runtime.bundle, &runtime.runtime_dir, &runtime.exit_dirs[1]] {
            std::fs::create_dir_all(dir).expect("create container dir");
        }
        self.host
            .add_container(&id, monitor, &runtime.exit_dirs[0], dies_of);
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_owned(),
            name: name.to_owned(),
            state: state.to_owned(),
            created_at: crate::time::now_ns(),
            started_at: if state == RUNNING {
                crate::time::now_ns()
            } else {
                0
            },
            runtime: runtime.to_bytes(),
            ..Default::default()
        };
        self.lock()
            .insert_container(&record)
            .expect("insert container");
        (id, runtime)
    }

    /// A container as CreateContainer (and StartContainer, for `running`)
    /// leave it: stored, with its exit watched.
    pub fn container(&self, sandbox_id: &str, name: &str, state: &str, dies_of: &[&str]) -> String {
        assert!(state == CREATED || state == RUNNING, "{state}");
        let (id, runtime) = self.stored_container(sandbox_id, name, state, dies_of);
        container::exits::watch(Arc::clone(&self.daemon), id.clone(), runtime);
        id
    }

    /// Resolves once the exit of container `id` is recorded.
    pub async fn exit_recorded(&self, id: &str) {
        let mut exited = self.daemon.exits.subscribe(id);
        exited
            .wait_for(Option::is_some)
            .await
            .expect("exit channel open");
    }

    pub fn container_row(&self, id: &str) -> Option<ContainerRecord> {
        self.lock().container(id).expect("read container")
    }

    pub fn sandbox_row(&self, id: &str) -> Option<SandboxRecord> {
        self.lock().sandbox(id).expect("read sandbox")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Database> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}
