//! RunPodSandbox: reserve the name, then set up files, namespaces and network.
//! A failure at any step releases what the earlier steps made and frees the
//! name; progress is stored before each risky step so a crash leaves a row
//! that says what to release.

use k8s_cri::v1::{ContainerEventType, PodSandboxConfig, Protocol, RunPodSandboxRequest};
use prost::Message;
use serde_json::json;

use super::{NOT_READY, Namespaces, READY, SandboxRuntime, files, invalid, namespaces, teardown};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::failpoint::crash_point;
use crate::network::{cni, conflist};
use crate::userns::{Mappings, PodUserns};
use pier_storage::SandboxRecord;

/// Creates a ready sandbox and returns its id.
pub async fn run(daemon: &Daemon, request: RunPodSandboxRequest) -> Result<String, Error> {
    let config = request.config.ok_or_else(|| invalid("config", "missing"))?;
    let metadata = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("config.metadata", "missing"))?;
    for (field, value) in [
        ("config.metadata.name", &metadata.name),
        ("config.metadata.namespace", &metadata.namespace),
        ("config.metadata.uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
    }
    crate::validate::pod_config(&config)?;
    let handler = request.runtime_handler;
    if !handler.is_empty() && !daemon.config.runtime.handlers.contains_key(&handler) {
        return Err(invalid(
            "runtime_handler",
            format!("{handler:?} is not a configured runtime handler"),
        ));
    }
    let ns = Namespaces::of(&config);
    let sysctls = sysctls(&config, &ns)?;
    let userns = crate::userns::of_pod(&config)?;
    if userns.is_some() {
        check_userns_support(daemon, &handler).await?;
    }
    // A host-network pod takes the node's hostname, so only a hostname that
    // will be set is checked.
    if !ns.host_network() && !config.hostname.is_empty() {
        check_hostname(&config.hostname)?;
    }

    let id = crate::ids::new_id().map_err(Error::io("generate a sandbox id"))?;
    tracing::Span::current().record("pod_id", id.as_str());
    let _guard = daemon.locks.lock(&id).await;
    let record = SandboxRecord {
        id: id.clone(),
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        attempt: metadata.attempt,
        state: NOT_READY.into(),
        created_at: crate::time::now_ns(),
        runtime_handler: handler,
        config: config.encode_to_vec(),
        runtime: SandboxRuntime::default().to_bytes(),
    };
    log_directory(&config.log_directory)?;
    daemon.db(move |db| db.insert_sandbox(&record)).await?;
    crash_point("run_pod.row_inserted");

    let mut runtime = SandboxRuntime::default();
    let set = set_up(daemon, &id, &config, ns, &sysctls, userns, &mut runtime);
    match set.await {
        Ok(()) => {
            let bytes = runtime.to_bytes();
            let sandbox = id.clone();
            daemon
                .db(move |db| {
                    db.set_sandbox_runtime(&sandbox, &bytes)?;
                    db.set_sandbox_state(&sandbox, READY)
                })
                .await?;
            crash_point("run_pod.row_ready");
            tracing::info!(ips = ?runtime.ips, "sandbox ready");
            for kind in [
                ContainerEventType::ContainerCreatedEvent,
                ContainerEventType::ContainerStartedEvent,
            ] {
                daemon.events.emit(daemon, &id, &id, kind).await;
            }
            Ok(id)
        }
        Err(e) => {
            tracing::warn!(error = %e, "sandbox setup failed; releasing what was set up");
            teardown::release(daemon, &id, &config, &runtime).await;
            if let Err(remove) = files::remove_dir(&runtime.dir) {
                tracing::warn!(error = %remove, "remove sandbox dir");
            }
            let sandbox = id.clone();
            daemon.db(move |db| db.delete_sandbox(&sandbox)).await?;
            Err(e)
        }
    }
}

async fn set_up(
    daemon: &Daemon,
    id: &str,
    config: &PodSandboxConfig,
    ns: Namespaces,
    sysctls: &[(String, String)],
    userns: Option<Mappings>,
    runtime: &mut SandboxRuntime,
) -> Result<(), Error> {
    let runroot = &daemon.config.runroot;
    runtime.dir = runroot.join("sandboxes").join(id);
    runtime.hostname = hostname(config, ns)?;
    std::fs::create_dir_all(&runtime.dir)
        .map_err(Error::io(format!("create {}", runtime.dir.display())))?;
    files::write(&runtime.dir, &runtime.hostname, config.dns_config.as_ref())?;
    if !ns.host_ipc() {
        let shm = runtime.dir.join("shm");
        files::mount_shm(&*daemon.host, &shm)?;
        runtime.shm = Some(shm);
    }
    let pin = |kind: &str| Some(runroot.join(kind).join(id));
    if !ns.host_network() {
        runtime.netns = pin("netns");
        // Kubelet gives host-network pods the host's UTS namespace too.
        runtime.utsns = pin("utsns");
    }
    if !ns.host_ipc() {
        runtime.ipcns = pin("ipcns");
    }
    runtime.userns = userns.map(|mappings| PodUserns {
        path: runroot.join("userns").join(id),
        mappings,
    });
    let infra = &daemon.config.runtime.infra_path;
    let infra = if ns.shared_pid() {
        runtime.pidns = pin("pidns");
        crate::binaries::resolve_own(infra).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "start the pod's infra process for its shared PID namespace: \
                 {} is not an executable file",
                infra.display()
            ))
        })?
    } else {
        infra.clone()
    };
    save_progress(daemon, id, runtime).await?;
    namespaces::pin(&*daemon.host, runtime, &infra, sysctls).await?;
    crash_point(match runtime.infra {
        Some(_) => "run_pod.infra_started",
        None => "run_pod.namespaces_pinned",
    });

    let Some(netns) = runtime.netns.clone() else {
        return Ok(());
    };
    let network = conflist::find_network(&daemon.config.cni.conf_dir)?;
    runtime.cni_conflist = Some(network.conflist.clone());
    runtime.cni_runtime_config = json!({ "portMappings": port_mappings(config) });
    save_progress(daemon, id, runtime).await?;
    let metadata = config.metadata.clone().unwrap_or_default();
    let pod = cni::Attachment {
        sandbox_id: id,
        netns: &netns,
        pod_name: &metadata.name,
        pod_namespace: &metadata.namespace,
        pod_uid: &metadata.uid,
        runtime_config: &runtime.cni_runtime_config,
    };
    let dirs = &daemon.config.cni.plugin_dirs;
    let result = daemon.host.network_add(&network, dirs, &pod).await?;
    crash_point("run_pod.cni_added");
    runtime.ips = cni::result_ips(&result);
    runtime.cni_result = Some(result);
    Ok(())
}

/// Refuses a pod that asks for its own user namespace where the node or
/// the pod's runtime handler cannot give it one: such a pod must never run
/// in the node's user namespace instead.
async fn check_userns_support(daemon: &Daemon, handler: &str) -> Result<(), Error> {
    let (config, host) = (&daemon.config, &*daemon.host);
    if let Err(reason) = daemon.features.userns(config, host).await {
        return Err(Error::FailedPrecondition(format!(
            "the pod asks for a user namespace of its own (hostUsers: false), which this \
             node cannot give: {reason}"
        )));
    }
    if !daemon
        .features
        .handler(config, host, handler)
        .await
        .user_namespaces
    {
        return Err(Error::FailedPrecondition(format!(
            "the pod asks for a user namespace of its own (hostUsers: false), and runtime \
             handler {handler:?} does not support user namespaces"
        )));
    }
    Ok(())
}

async fn save_progress(daemon: &Daemon, id: &str, runtime: &SandboxRuntime) -> Result<(), Error> {
    let bytes = runtime.to_bytes();
    let id = id.to_owned();
    daemon
        .db(move |db| db.set_sandbox_runtime(&id, &bytes))
        .await
}

/// The pod's hostname: its own, or the node's where kubelet sent none or the
/// pod shares the host network. containerd (`setupSandboxFiles`) and CRI-O
/// both fall back to the node's hostname; the pod name is no fallback, since
/// kubelet already derives the hostname from it and a raw name may be longer
/// than the kernel's 64 bytes.
fn hostname(config: &PodSandboxConfig, ns: Namespaces) -> Result<String, Error> {
    if !ns.host_network() && !config.hostname.is_empty() {
        return Ok(config.hostname.clone());
    }
    let host = nix::unistd::gethostname().map_err(|source| Error::System {
        what: "read the node's hostname".into(),
        source,
    })?;
    Ok(host.to_string_lossy().into_owned())
}

/// Makes the pod's log directory (kubelet makes it too, first). A path
/// that is taken by something other than a directory is the request's
/// fault, not the node's.
fn log_directory(dir: &str) -> Result<(), Error> {
    if dir.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => invalid(
            "config.log_directory",
            format!("{dir} cannot be made a directory: {e}"),
        ),
        _ => Error::Io {
            what: format!("create pod log directory {dir}"),
            source: e,
        },
    })
}

/// The kernel's limit on a UTS hostname (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// Refuses a hostname that `sethostname` would refuse (longer than 64 bytes)
/// or that is no RFC 1123 host name (dot-separated labels of letters, digits
/// and inner hyphens), which resolvers and `/etc/hosts` would not accept.
fn check_hostname(hostname: &str) -> Result<(), Error> {
    const FIELD: &str = "config.hostname";
    if hostname.len() > HOST_NAME_MAX {
        return Err(invalid(
            FIELD,
            format!(
                "{hostname:?} is {} bytes, over the kernel's limit of {HOST_NAME_MAX}",
                hostname.len()
            ),
        ));
    }
    for label in hostname.split('.') {
        let valid = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(invalid(
                FIELD,
                format!(
                    "{hostname:?} is not a valid host name: each dot-separated label \
                     must be letters, digits and inner hyphens"
                ),
            ));
        }
    }
    Ok(())
}

/// The portmap plugin's runtime config for the mappings that name a host port.
fn port_mappings(config: &PodSandboxConfig) -> Vec<serde_json::Value> {
    config
        .port_mappings
        .iter()
        .filter(|m| m.host_port > 0)
        .map(|m| {
            let protocol = match Protocol::try_from(m.protocol) {
                Ok(Protocol::Udp) => "udp",
                Ok(Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": protocol,
                "hostIP": m.host_ip,
            })
        })
        .collect()
}

/// The pod's sysctls, checked: only namespaced ones, and none for a namespace
/// the pod shares with the host.
fn sysctls(config: &PodSandboxConfig, ns: &Namespaces) -> Result<Vec<(String, String)>, Error> {
    let Some(linux) = &config.linux else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (key, value) in &linux.sysctls {
        let key = key.replace('/', ".");
        let is_ipc = key.starts_with("fs.mqueue.")
            || key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem";
        let is_net = key.starts_with("net.");
        let reason = if !is_ipc && !is_net {
            Some("is not a namespaced sysctl")
        } else if is_net && ns.host_network() {
            Some("is a network sysctl, and the pod uses the host network")
        } else if is_ipc && ns.host_ipc() {
            Some("is an IPC sysctl, and the pod uses the host IPC namespace")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(invalid("config.linux.sysctls", format!("{key} {reason}")));
        }
        out.push((key, value.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::check_hostname;

    #[test]
    fn hostnames_the_kernel_and_resolvers_take_pass() {
        for ok in [
            "a",
            "pod-1",
            "web.default.svc",
            "A1-b2",
            &"x".repeat(63),
            &"y".repeat(64),
        ] {
            assert!(check_hostname(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn long_or_malformed_hostnames_name_the_field() {
        let long = "a".repeat(65);
        for bad in [
            long.as_str(),
            "-a",
            "a-",
            "a..b",
            "a b",
            "a/b",
            "a_b",
            "\u{e9}t\u{e9}",
        ] {
            let message = check_hostname(bad).expect_err(bad).to_string();
            assert!(message.contains("config.hostname"), "{message}");
        }
    }
}
