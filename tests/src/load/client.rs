//! One load client: its own connection, pods and containers, and a seeded
//! sequence of calls drawn from a weighted mix. A call is only drawn where
//! it makes sense for the client's own objects (a container is started
//! only once created), so every failure is the runtime's answer, not a
//! race between clients.

use std::path::Path;
use std::time::Instant;

use k8s_cri::v1::*;

use super::{LoadOptions, Recorder, Rng, lock};
use crate::Cri;
use crate::workload::{container, pod, pod_security};

/// Pods a client keeps ready at once, and containers per pod.
const MAX_READY_PODS: usize = 2;
const MAX_CONTAINERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
    Exited,
}

struct Container {
    id: String,
    state: State,
}

struct Pod {
    id: String,
    config: PodSandboxConfig,
    ready: bool,
    containers: Vec<Container>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    RunPod,
    StopPod,
    RemovePod,
    Create,
    Start,
    StopContainer,
    RemoveContainer,
    Exec,
    Pull,
    ListPods,
    ListContainers,
    ListImages,
    PodStatus,
    ContainerStatus,
    Stats,
    ListStats,
}

/// The mix, in parts of 100: container churn and probes dominate, as on a
/// busy node; lists and stats stand for kubelet's relists and the stats
/// provider.
const MIX: [(Op, usize); 16] = [
    (Op::RunPod, 8),
    (Op::StopPod, 4),
    (Op::RemovePod, 4),
    (Op::Create, 12),
    (Op::Start, 12),
    (Op::StopContainer, 6),
    (Op::RemoveContainer, 9),
    (Op::Exec, 10),
    (Op::Pull, 4),
    (Op::ListPods, 5),
    (Op::ListContainers, 6),
    (Op::ListImages, 3),
    (Op::PodStatus, 4),
    (Op::ContainerStatus, 5),
    (Op::Stats, 4),
    (Op::ListStats, 4),
];

/// Times `call`, records it under `rpc`, and returns its answer.
async fn record<T>(
    shared: &Recorder,
    client: usize,
    rpc: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    lock(shared).open.insert(client, rpc);
    let started = Instant::now();
    let result = call.await;
    let elapsed = started.elapsed();
    let mut shared = lock(shared);
    shared.open.remove(&client);
    let figures = shared.calls.entry(rpc).or_default();
    figures.times.push(elapsed);
    match result {
        Ok(response) => Some(response.into_inner()),
        Err(status) => {
            let code = format!("{:?}", status.code());
            figures
                .messages
                .entry(code.clone())
                .or_insert_with(|| status.message().to_owned());
            *figures.errors.entry(code).or_default() += 1;
            None
        }
    }
}

struct Client<'a> {
    n: usize,
    rng: Rng,
    cri: Cri,
    pods: Vec<Pod>,
    made: usize,
    options: &'a LoadOptions,
    shared: Recorder,
}

/// Makes `ops` calls as client `n`, then stops and removes its pods.
pub async fn drive(n: usize, ops: usize, socket: &Path, options: &LoadOptions, shared: Recorder) {
    let cri = Cri::connect(socket).await.expect("connect a load client");
    let mut client = Client {
        n,
        rng: Rng::new(options.seed.wrapping_add(n as u64)),
        cri,
        pods: Vec::new(),
        made: 0,
        options,
        shared,
    };
    for _ in 0..ops {
        client.step().await;
    }
    client.clean_up().await;
}

impl Client<'_> {
    /// Draws calls until one applies to what this client has, and makes it.
    async fn step(&mut self) {
        let total: usize = MIX.iter().map(|(_, w)| w).sum();
        loop {
            let mut draw = self.rng.below(total);
            let op = MIX
                .iter()
                .find(|(_, weight)| {
                    let hit = draw < *weight;
                    draw = draw.saturating_sub(*weight);
                    hit
                })
                .map_or(Op::ListPods, |(op, _)| *op);
            if self.attempt(op).await {
                return;
            }
        }
    }

    /// Pods (by index) that match `ready`.
    fn pods_where(&self, ready: bool) -> Vec<usize> {
        (0..self.pods.len())
            .filter(|p| self.pods[*p].ready == ready)
            .collect()
    }

    /// Containers (pod index, container index) that `wanted` accepts.
    fn containers_where(&self, wanted: impl Fn(&Pod, &Container) -> bool) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for (p, pod) in self.pods.iter().enumerate() {
            for (c, container) in pod.containers.iter().enumerate() {
                if wanted(pod, container) {
                    found.push((p, c));
                }
            }
        }
        found
    }

    fn pick_pod(&mut self, ready: bool) -> Option<usize> {
        let candidates = self.pods_where(ready);
        self.rng.pick(&candidates).copied()
    }

    fn pick_container(
        &mut self,
        wanted: impl Fn(&Pod, &Container) -> bool,
    ) -> Option<(usize, usize)> {
        let candidates = self.containers_where(wanted);
        self.rng.pick(&candidates).copied()
    }

    /// Makes the call `op` if it applies; false if it does not.
    async fn attempt(&mut self, op: Op) -> bool {
        match op {
            Op::RunPod => {
                if self.pods_where(true).len() >= MAX_READY_PODS {
                    return false;
                }
                self.run_pod().await;
            }
            Op::StopPod => {
                let Some(p) = self.pick_pod(true) else {
                    return false;
                };
                self.stop_pod(p).await;
            }
            Op::RemovePod => {
                let Some(p) = self.pick_pod(false) else {
                    return false;
                };
                self.remove_pod(p).await;
            }
            Op::Create => {
                let roomy: Vec<usize> = self
                    .pods_where(true)
                    .into_iter()
                    .filter(|p| self.pods[*p].containers.len() < MAX_CONTAINERS)
                    .collect();
                let Some(p) = self.rng.pick(&roomy).copied() else {
                    return false;
                };
                self.create(p).await;
            }
            Op::Start => {
                let Some((p, c)) = self.pick_container(|_, c| c.state == State::Created) else {
                    return false;
                };
                let id = self.pods[p].containers[c].id.clone();
                let request = StartContainerRequest { container_id: id };
                let call = self.cri.runtime.start_container(request);
                if record(&self.shared, self.n, "StartContainer", call)
                    .await
                    .is_some()
                {
                    self.pods[p].containers[c].state = State::Running;
                }
            }
            Op::StopContainer => {
                let Some((p, c)) = self.pick_container(|_, c| c.state == State::Running) else {
                    return false;
                };
                let id = self.pods[p].containers[c].id.clone();
                // No grace: the sleeper ignores SIGTERM as its namespace's init.
                let request = StopContainerRequest {
                    container_id: id,
                    timeout: 0,
                };
                let call = self.cri.runtime.stop_container(request);
                if record(&self.shared, self.n, "StopContainer", call)
                    .await
                    .is_some()
                {
                    self.pods[p].containers[c].state = State::Exited;
                }
            }
            Op::RemoveContainer => {
                let Some((p, c)) = self.pick_container(|_, c| c.state != State::Running) else {
                    return false;
                };
                let id = self.pods[p].containers[c].id.clone();
                let request = RemoveContainerRequest { container_id: id };
                let call = self.cri.runtime.remove_container(request);
                if record(&self.shared, self.n, "RemoveContainer", call)
                    .await
                    .is_some()
                {
                    self.pods[p].containers.remove(c);
                }
            }
            Op::Exec => {
                let Some((p, c)) = self.pick_container(|_, c| c.state == State::Running) else {
                    return false;
                };
                let request = ExecSyncRequest {
                    container_id: self.pods[p].containers[c].id.clone(),
                    cmd: vec!["true".into()],
                    timeout: 10,
                };
                let call = self.cri.runtime.exec_sync(request);
                record(&self.shared, self.n, "ExecSync", call).await;
            }
            Op::Pull => {
                let Some(image) = self.rng.pick(&self.options.pulls).cloned() else {
                    return false;
                };
                let request = PullImageRequest {
                    image: Some(ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let call = self.cri.images.pull_image(request);
                record(&self.shared, self.n, "PullImage", call).await;
            }
            Op::ListPods => {
                let call = self
                    .cri
                    .runtime
                    .list_pod_sandbox(ListPodSandboxRequest::default());
                record(&self.shared, self.n, "ListPodSandbox", call).await;
            }
            Op::ListContainers => {
                let call = self
                    .cri
                    .runtime
                    .list_containers(ListContainersRequest::default());
                record(&self.shared, self.n, "ListContainers", call).await;
            }
            Op::ListImages => {
                let call = self.cri.images.list_images(ListImagesRequest::default());
                record(&self.shared, self.n, "ListImages", call).await;
            }
            Op::PodStatus => {
                let all: Vec<usize> = (0..self.pods.len()).collect();
                let Some(p) = self.rng.pick(&all).copied() else {
                    return false;
                };
                let request = PodSandboxStatusRequest {
                    pod_sandbox_id: self.pods[p].id.clone(),
                    verbose: false,
                };
                let call = self.cri.runtime.pod_sandbox_status(request);
                record(&self.shared, self.n, "PodSandboxStatus", call).await;
            }
            Op::ContainerStatus => {
                let Some((p, c)) = self.pick_container(|_, _| true) else {
                    return false;
                };
                let request = ContainerStatusRequest {
                    container_id: self.pods[p].containers[c].id.clone(),
                    verbose: false,
                };
                let call = self.cri.runtime.container_status(request);
                record(&self.shared, self.n, "ContainerStatus", call).await;
            }
            Op::Stats => {
                let Some((p, c)) = self.pick_container(|_, c| c.state == State::Running) else {
                    return false;
                };
                let request = ContainerStatsRequest {
                    container_id: self.pods[p].containers[c].id.clone(),
                };
                let call = self.cri.runtime.container_stats(request);
                record(&self.shared, self.n, "ContainerStats", call).await;
            }
            Op::ListStats => {
                let call = self
                    .cri
                    .runtime
                    .list_container_stats(ListContainerStatsRequest::default());
                record(&self.shared, self.n, "ListContainerStats", call).await;
            }
        }
        true
    }

    async fn run_pod(&mut self) {
        let name = format!("load-{}-{}", self.n, self.made);
        self.made += 1;
        let logs = self.options.log_dir.join(&name);
        // kubelet makes the pod's log directory before it runs the pod.
        std::fs::create_dir_all(&logs).expect("mkdir pod logs");
        let mut config = pod(&name, &logs);
        // What kubelet sends for a pod without shareProcessNamespace.
        pod_security(&mut config).namespace_options = Some(NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        });
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let call = self.cri.runtime.run_pod_sandbox(request);
        if let Some(ran) = record(&self.shared, self.n, "RunPodSandbox", call).await {
            self.pods.push(Pod {
                id: ran.pod_sandbox_id,
                config,
                ready: true,
                containers: Vec::new(),
            });
        }
    }

    async fn stop_pod(&mut self, p: usize) {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: self.pods[p].id.clone(),
        };
        let call = self.cri.runtime.stop_pod_sandbox(request);
        if record(&self.shared, self.n, "StopPodSandbox", call)
            .await
            .is_some()
        {
            let pod = &mut self.pods[p];
            pod.ready = false;
            for container in &mut pod.containers {
                container.state = State::Exited;
            }
        }
    }

    async fn remove_pod(&mut self, p: usize) {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: self.pods[p].id.clone(),
        };
        let call = self.cri.runtime.remove_pod_sandbox(request);
        if record(&self.shared, self.n, "RemovePodSandbox", call)
            .await
            .is_some()
        {
            self.pods.remove(p);
        }
    }

    async fn create(&mut self, p: usize) {
        let name = format!("c{}", self.made);
        self.made += 1;
        let request = CreateContainerRequest {
            pod_sandbox_id: self.pods[p].id.clone(),
            config: Some(container(&name, &self.options.image, "exec sleep 100000")),
            sandbox_config: Some(self.pods[p].config.clone()),
        };
        let call = self.cri.runtime.create_container(request);
        if let Some(created) = record(&self.shared, self.n, "CreateContainer", call).await {
            self.pods[p].containers.push(Container {
                id: created.container_id,
                state: State::Created,
            });
        }
    }

    /// Stops and removes every pod the client still has, as kubelet does
    /// when pods are deleted.
    async fn clean_up(&mut self) {
        while let Some(p) = self.pods.len().checked_sub(1) {
            if self.pods[p].ready {
                self.stop_pod(p).await;
            }
            let before = self.pods.len();
            self.remove_pod(p).await;
            if self.pods.len() == before {
                // Refused: what is left is found by the leak check.
                self.pods.remove(p);
            }
        }
    }
}
