//! The streaming server behind Exec, Attach and PortForward: the RPCs store
//! the request under a single-use token and answer with a URL of this
//! server; kubelet (or crictl) connects there and upgrades to SPDY/3.1 or
//! WebSocket to carry the streams. See docs/streaming.md.

mod activity;
mod http;
mod portforward;
mod protocol;
mod remotecommand;
pub(crate) mod tokens;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::StreamingConfig;
use crate::container::RUNNING;
use crate::daemon::Daemon;
use crate::error::{Error, StartError};
use crate::sandbox;
use tokens::{Pending, Tokens};

/// Requests waiting for their client at once; beyond, Exec and friends
/// answer RESOURCE_EXHAUSTED until some are used or expire.
const MAX_PENDING: usize = 1024;

/// Timeouts of a session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that moves no byte either way for this long is closed.
    pub idle: Duration,
    /// How long a SPDY client may take to open the streams it announced.
    pub stream_creation: Duration,
}

/// What every connection handler shares.
pub struct Shared {
    pub daemon: Arc<Daemon>,
    tokens: Tokens,
    pub limits: Limits,
    /// One permit per live session.
    sessions: Arc<Semaphore>,
    max_sessions: usize,
    /// Cancelled at shutdown: every session ends.
    pub shutdown: CancellationToken,
}

/// The running server: hands out URLs and stops on `shutdown`.
#[derive(Clone)]
pub struct Streaming {
    shared: Arc<Shared>,
    base_url: Arc<str>,
}

impl Streaming {
    /// Binds the configured address (port 0: any free port) and starts
    /// serving. URLs carry the address actually bound.
    pub async fn start(
        config: &StreamingConfig,
        daemon: Arc<Daemon>,
    ) -> Result<(Self, JoinHandle<()>), StartError> {
        let listener = TcpListener::bind(config.address).await.map_err(|source| {
            StartError::StreamingListen {
                address: config.address,
                source,
            }
        })?;
        let bound = listener
            .local_addr()
            .map_err(|source| StartError::StreamingListen {
                address: config.address,
                source,
            })?;
        let shared = Arc::new(Shared {
            daemon,
            tokens: Tokens::new(MAX_PENDING, Duration::from_secs(config.token_ttl_seconds)),
            limits: Limits {
                idle: Duration::from_secs(config.idle_timeout_seconds),
                stream_creation: Duration::from_secs(config.stream_creation_timeout_seconds),
            },
            sessions: Arc::new(Semaphore::new(config.max_sessions)),
            max_sessions: config.max_sessions,
            shutdown: CancellationToken::new(),
        });
        let base_url = base_url(bound).into();
        tracing::info!(url = %base_url, "streaming server listening");
        let task = tokio::spawn(http::serve(listener, Arc::clone(&shared)));
        Ok((Self { shared, base_url }, task))
    }

    /// Ends every session and stops accepting connections.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Exec: checks the request and returns the URL to stream it.
    pub async fn exec(&self, request: ExecRequest) -> Result<String, Error> {
        let mut request = request;
        request.container_id = self.running_container(&request.container_id).await?;
        if request.cmd.is_empty() {
            return Err(invalid("cmd", "must not be empty"));
        }
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        self.url_for(Pending::Exec(request))
    }

    /// Attach: checks the request and returns the URL to stream it.
    pub async fn attach(&self, request: AttachRequest) -> Result<String, Error> {
        let mut request = request;
        request.container_id = self.running_container(&request.container_id).await?;
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        self.url_for(Pending::Attach(request))
    }

    /// PortForward: checks the request and returns the URL to stream it.
    /// The ports actually forwarded are the ones the client asks for on the
    /// stream, as with kubelet's server.
    pub async fn port_forward(&self, request: PortForwardRequest) -> Result<String, Error> {
        let mut request = request;
        let record = self
            .shared
            .daemon
            .require_sandbox(&request.pod_sandbox_id)
            .await?;
        if record.state != sandbox::READY {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                record.id
            )));
        }
        if let Some(port) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(invalid("port", format!("{port} is not a TCP port")));
        }
        request.pod_sandbox_id = record.id;
        self.url_for(Pending::PortForward(request))
    }

    async fn running_container(&self, id: &str) -> Result<String, Error> {
        let record = self.shared.daemon.require_container(id).await?;
        if record.state != RUNNING {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {}, not running",
                record.id, record.state
            )));
        }
        Ok(record.id)
    }

    fn url_for(&self, pending: Pending) -> Result<String, Error> {
        let kind = pending.kind();
        let token = self.shared.tokens.insert(pending)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// The stream flags kubelet itself refuses.
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Error> {
    if !(stdin || stdout || stderr) {
        return Err(invalid(
            "stdin/stdout/stderr",
            "one of stdin, stdout or stderr must be set",
        ));
    }
    if tty && stderr {
        // A terminal merges stderr into stdout; kubelet rejects asking for both.
        return Err(invalid("tty/stderr", "tty and stderr cannot both be true"));
    }
    Ok(())
}

/// `http://host:port` for the bound address; an unspecified address (all
/// interfaces) is reached through loopback of its family, which is where
/// kubelet, on the same node, connects from.
fn base_url(bound: SocketAddr) -> String {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, bound.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_reachable_address() {
        let url = |s: &str| base_url(s.parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(url("127.0.0.1:10010"), "http://127.0.0.1:10010");
        assert_eq!(url("0.0.0.0:5"), "http://127.0.0.1:5");
        assert_eq!(url("[::]:5"), "http://[::1]:5");
        assert_eq!(url("[fd00::1]:7"), "http://[fd00::1]:7");
    }

    #[test]
    fn stream_flags_are_checked_as_kubelet_does() {
        assert!(check_streams(false, false, false, false).is_err());
        assert!(check_streams(false, true, true, true).is_err());
        assert!(check_streams(true, true, false, true).is_ok());
        assert!(check_streams(false, false, true, false).is_ok());
    }
}
