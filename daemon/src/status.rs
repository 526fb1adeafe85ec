//! The runtime's readiness as CRI `Status` reports it.

use k8s_cri::v1::RuntimeCondition;

use crate::binaries;
use crate::config::Config;
use crate::network::conflist;

/// `RuntimeReady`: the default handler's OCI runtime binary can be run.
pub fn runtime_condition(config: &Config) -> RuntimeCondition {
    let name = &config.runtime.default_runtime;
    let problem = match config.runtime.handlers.get(name) {
        None => Some(format!(
            "default runtime handler {name:?} is not configured"
        )),
        Some(handler) => match binaries::resolve(&handler.path) {
            Some(_) => None,
            None => Some(format!(
                "OCI runtime {} of handler {name:?} is not an executable file (PATH searched for bare names)",
                handler.path.display()
            )),
        },
    };
    condition("RuntimeReady", "RuntimeNotReady", problem)
}

/// `NetworkReady`: a CNI network configuration exists and its plugins are installed.
pub fn network_condition(config: &Config) -> RuntimeCondition {
    let problem = conflist::find_network(&config.cni.conf_dir)
        .and_then(|network| network.check_plugins(&config.cni.plugin_dirs))
        .err()
        .map(|e| e.to_string());
    condition("NetworkReady", "NetworkPluginNotReady", problem)
}

fn condition(kind: &str, reason: &str, problem: Option<String>) -> RuntimeCondition {
    RuntimeCondition {
        r#type: kind.into(),
        status: problem.is_none(),
        reason: if problem.is_some() {
            reason.into()
        } else {
            String::new()
        },
        message: problem.unwrap_or_default(),
    }
}
