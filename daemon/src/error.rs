//! The daemon's error types, and the one place they become gRPC statuses.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use pier_proto::client::ClientError;
use pier_storage::{DbError, ErrorKind};
use tonic::{Code, Status};

use crate::container::launch::LaunchError;
use crate::container::spec::SpecError;
use crate::host::{NamespaceError, RuncError};
use crate::network::cni::CniError;
use crate::network::conflist::ConflistError;
use crate::streaming::tokens::TokenError;

/// Why a CRI request failed. Each variant keeps the error that caused it;
/// [`Status::from`] is the one place a variant gets its gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not implemented by pier yet")]
    Unimplemented(&'static str),
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    /// Reading or writing a file or directory; `what` names it.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A system call other than file I/O (a mount, the node's hostname).
    #[error("{what}: {source}")]
    System {
        what: String,
        #[source]
        source: nix::Error,
    },
    /// The OCI spec could not be made from the request.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("write {path}: {source}")]
    SaveSpec {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// The OCI runtime could not be run, or failed.
    #[error(transparent)]
    Runtime(#[from] RuncError),
    #[error(transparent)]
    Namespaces(#[from] NamespaceError),
    #[error("start container monitor: {0}")]
    Launch(#[from] LaunchError),
    /// The container ignored SIGKILL for as long as StopContainer waits.
    #[error("container {id} is still running {waited:?} after SIGKILL")]
    StillRunning { id: String, waited: Duration },
    /// The container's monitor no longer answers on its control socket: the
    /// container exited, or the monitor died.
    #[error("{what}: the container's monitor is gone ({source})")]
    MonitorGone {
        what: String,
        #[source]
        source: ClientError,
    },
    /// The monitor answered, but the request through it failed.
    #[error("{what}: {source}")]
    Monitor {
        what: String,
        #[source]
        source: ClientError,
    },
    /// An ExecSync ran past its timeout; the monitor killed the process
    /// and everything it started.
    #[error("command {cmd:?} in container {id} timed out after {timeout:?}")]
    ExecTimedOut {
        id: String,
        cmd: Vec<String>,
        timeout: Duration,
    },
    /// The exec'd process never started; `reason` is the runtime's (or the
    /// monitor's) own text naming the cause.
    #[error("exec {cmd:?} in container {id}: {reason}")]
    ExecStart {
        id: String,
        cmd: Vec<String>,
        reason: String,
        not_found: bool,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Image(#[from] pier_storage::ImageError),
    #[error("pod network: {0}")]
    Cni(#[from] CniError),
    #[error("pod network not ready: {0}")]
    NetworkNotReady(#[from] ConflistError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// For `map_err`: an I/O failure while doing `what` (which names the path).
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// For `map_err`: a request through a container's monitor that failed
    /// while doing `what`. A monitor that no longer listens is gone, which
    /// is not pierd's failure but the container's state.
    pub fn monitor(what: impl Into<String>) -> impl FnOnce(ClientError) -> Self {
        let what = what.into();
        move |source| {
            let gone = matches!(
                &source,
                ClientError::Connect { source, .. }
                    if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
            );
            if gone {
                Self::MonitorGone { what, source }
            } else {
                Self::Monitor { what, source }
            }
        }
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::InvalidArgument { .. } | Error::Spec(SpecError::Invalid { .. }) => {
                Code::InvalidArgument
            }
            Error::NotFound { .. } | Error::Db(DbError::NotFound { .. }) => Code::NotFound,
            Error::Db(DbError::NameTaken { .. } | DbError::IdTaken { .. }) => Code::AlreadyExists,
            Error::Launch(e) if e.command_cannot_run() => Code::FailedPrecondition,
            Error::Db(DbError::Busy(_)) => Code::Unavailable,
            Error::Db(DbError::Full(_)) => Code::ResourceExhausted,
            Error::FailedPrecondition(_)
            | Error::NetworkNotReady(_)
            | Error::MonitorGone { .. } => Code::FailedPrecondition,
            Error::Token(TokenError::Full(_)) => Code::ResourceExhausted,
            // kubelet's CRI client (k8s.io/cri-client remote_runtime.go,
            // execSyncV1) turns DEADLINE_EXCEEDED from ExecSync into
            // ErrCommandTimedOut; the prober hands it to pkg/probe/exec as
            // a timeout, which counts as a failed probe (ExecProbeTimeout)
            // rather than a probe of unknown result.
            Error::StillRunning { .. } | Error::ExecTimedOut { .. } => Code::DeadlineExceeded,
            Error::ExecStart {
                not_found: true, ..
            } => Code::NotFound,
            Error::ExecStart { .. } => Code::FailedPrecondition,
            Error::Image(e) => match e.kind() {
                ErrorKind::InvalidArgument => Code::InvalidArgument,
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::Unauthenticated => Code::Unauthenticated,
                ErrorKind::Unavailable => Code::Unavailable,
                ErrorKind::FailedPrecondition => Code::FailedPrecondition,
                ErrorKind::ResourceExhausted => Code::ResourceExhausted,
                ErrorKind::DataLoss => Code::DataLoss,
                ErrorKind::Internal => Code::Internal,
            },
            Error::Io { .. }
            | Error::System { .. }
            | Error::Spec(_)
            | Error::SaveSpec { .. }
            | Error::Runtime(_)
            | Error::Namespaces(_)
            | Error::Launch(_)
            | Error::Monitor { .. }
            | Error::Token(_)
            | Error::Cni(_)
            | Error::Db(_)
            | Error::Task(_) => {
                if self.out_of_resources() {
                    Code::ResourceExhausted
                } else {
                    Code::Internal
                }
            }
        }
    }

    /// Whether a system call behind this error failed because pierd or the
    /// node ran out of something (descriptors, processes, memory, disk):
    /// the call can succeed again once load drops, so it is no bug of
    /// pierd's, and kubelet backs off and retries.
    fn out_of_resources(&self) -> bool {
        const EXHAUSTED: [Errno; 6] = [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::EAGAIN,
            Errno::ENOMEM,
            Errno::ENOSPC,
            Errno::EDQUOT,
        ];
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = next {
            let errno = match error.downcast_ref::<io::Error>() {
                Some(io) => io.raw_os_error().map(Errno::from_raw),
                None => error.downcast_ref::<Errno>().copied(),
            };
            if errno.is_some_and(|errno| EXHAUSTED.contains(&errno)) {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// The longest message a status carries. gRPC sends it in a header, and
/// an h2 client drops the connection on a header list over its limit (16
/// KiB by default), taking the client's other calls with it; an error that
/// quotes a huge request field or a runtime's long stderr is cut here.
const STATUS_MESSAGE_MAX: usize = 4096;

/// The longest start of `text` that fits in `max` bytes without cutting a
/// character in two.
pub fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `message` cut to [`STATUS_MESSAGE_MAX`] bytes on a character boundary.
fn status_message(mut message: String) -> String {
    if message.len() > STATUS_MESSAGE_MAX {
        let end = head(&message, STATUS_MESSAGE_MAX).len();
        message.truncate(end);
        message.push_str("... (cut)");
    }
    message
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let status = Status::new(error.code(), status_message(error.to_string()));
        // Logged inside the request's span, so the method and ids come along.
        match status.code() {
            Code::Internal => tracing::error!(error = %status.message(), "request failed"),
            _ => {
                tracing::info!(code = ?status.code(), error = %status.message(), "request refused")
            }
        }
        status
    }
}

/// Why pierd could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("state root {root} is in use by another pierd (lock {lock} is held)")]
    RootInUse { root: PathBuf, lock: PathBuf },
    #[error("another pierd is already serving {path}")]
    AlreadyServing { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("listen on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error("streaming server: listen on {address}: {source}")]
    StreamingListen {
        address: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("metrics endpoint: listen on {address}: {source}")]
    MetricsListen {
        address: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("tracing: {0}")]
    Tracing(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("open image store: {0}")]
    Images(#[from] pier_storage::ImageError),
    #[error("serve CRI: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("install signal handler: {0}")]
    Signal(io::Error),
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// The status a request would get, checked to name `names` in its message.
    fn answer(error: Error, names: &[&str]) -> Code {
        let status = Status::from(error);
        for name in names {
            assert!(
                status.message().contains(name),
                "{:?} does not name {name:?}",
                status.message()
            );
        }
        status.code()
    }

    fn refused() -> io::Error {
        io::Error::from(io::ErrorKind::ConnectionRefused)
    }

    #[test]
    fn requests_pier_does_not_serve_are_unimplemented_naming_the_rpc() {
        let code = answer(Error::Unimplemented("CheckpointContainer"), &["Checkpoint"]);
        assert_eq!(code, Code::Unimplemented);
    }

    #[test]
    fn bad_arguments_are_invalid_naming_the_field() {
        let direct = Error::InvalidArgument {
            field: "config.metadata.name",
            reason: "must not be empty".into(),
        };
        assert_eq!(
            answer(direct, &["config.metadata.name"]),
            Code::InvalidArgument
        );
        let from_spec = Error::from(SpecError::invalid("config.linux.resources", "bad"));
        assert_eq!(
            answer(from_spec, &["config.linux.resources"]),
            Code::InvalidArgument
        );
    }

    #[test]
    fn unknown_ids_are_not_found_and_taken_names_already_exist() {
        let missing = Error::NotFound {
            kind: "container",
            id: "abc".into(),
        };
        assert_eq!(answer(missing, &["container abc"]), Code::NotFound);
        let gone_row = Error::Db(DbError::NotFound {
            kind: "sandbox",
            id: "def".into(),
        });
        assert_eq!(answer(gone_row, &["def"]), Code::NotFound);
        let image = Error::Image(pier_storage::ImageError::NotFound {
            image: "busybox".into(),
        });
        assert_eq!(answer(image, &["busybox"]), Code::NotFound);
        let taken = Error::Db(DbError::NameTaken {
            kind: "container",
            name: "web".into(),
            holder: "abc".into(),
        });
        assert_eq!(answer(taken, &["web", "abc"]), Code::AlreadyExists);
    }

    #[test]
    fn a_command_runc_cannot_exec_fails_a_precondition_and_long_messages_are_cut() {
        // runc 1.1's stderr, as the monitor hands it over.
        let stderr = "time=\"2026-11-30T22:41:39Z\" level=error msg=\"runc create failed: \
                      unable to start container process: exec: \\\"3600\\\": executable \
                      file not found in $PATH\"";
        let missing = Error::Launch(LaunchError::Runtime(stderr.into()));
        assert_eq!(answer(missing, &["3600"]), Code::FailedPrecondition);
        let other = Error::Launch(LaunchError::Runtime("runc create failed: mount".into()));
        assert_eq!(answer(other, &["mount"]), Code::Internal);
        let huge = Error::FailedPrecondition("x".repeat(100_000));
        assert!(Status::from(huge).message().len() <= STATUS_MESSAGE_MAX + 16);
    }

    #[test]
    fn what_the_node_or_the_container_is_not_ready_for_fails_a_precondition() {
        let state = Error::FailedPrecondition("container abc is not running".into());
        assert_eq!(answer(state, &["abc"]), Code::FailedPrecondition);
        let network = Error::from(ConflistError::NoNetwork {
            dir: "/etc/cni/net.d".into(),
        });
        assert_eq!(
            answer(network, &["/etc/cni/net.d"]),
            Code::FailedPrecondition
        );
    }

    #[test]
    fn a_monitor_that_is_gone_says_so_and_is_no_internal_error() {
        let connect = ClientError::Connect {
            path: "/run/pier/containers/abc/monitor.sock".into(),
            source: refused(),
        };
        let error = Error::monitor("exec in container abc")(connect);
        assert!(matches!(error, Error::MonitorGone { .. }), "{error:?}");
        assert!(error.source().is_some(), "the connect error is kept");
        let code = answer(error, &["exec in container abc", "monitor is gone"]);
        assert_eq!(code, Code::FailedPrecondition);

        let refused_request = ClientError::Refused("no such exec session".into());
        let error = Error::monitor("reopen the log of container abc")(refused_request);
        assert!(matches!(error, Error::Monitor { .. }), "{error:?}");
        let code = answer(error, &["reopen the log of container abc", "no such exec"]);
        assert_eq!(code, Code::Internal);
    }

    #[test]
    fn a_container_that_survives_sigkill_exceeds_the_stop_deadline() {
        let error = Error::StillRunning {
            id: "abc".into(),
            waited: Duration::from_secs(10),
        };
        let code = answer(error, &["container abc", "SIGKILL"]);
        assert_eq!(code, Code::DeadlineExceeded);
    }

    #[test]
    fn too_many_waiting_streams_exhaust_a_resource_and_no_randomness_is_internal() {
        let full = Error::from(TokenError::Full(1000));
        assert_eq!(answer(full, &["1000"]), Code::ResourceExhausted);
        let random = Error::from(TokenError::Random("getrandom: EAGAIN".into()));
        assert_eq!(answer(random, &["random", "EAGAIN"]), Code::Internal);
    }

    #[test]
    fn node_failures_are_internal_naming_what_failed_and_keeping_the_cause() {
        let cases = [
            (
                Error::io("create /run/pier/sandboxes/abc")(io::Error::from(
                    io::ErrorKind::PermissionDenied,
                )),
                "/run/pier/sandboxes/abc",
            ),
            (
                Error::System {
                    what: "mount pod /dev/shm at /run/pier/sandboxes/abc/shm".into(),
                    source: nix::Error::EPERM,
                },
                "/dev/shm",
            ),
            (
                Error::SaveSpec {
                    path: "/var/lib/pier/containers/abc/bundle/config.json".into(),
                    source: oci_spec::OciSpecError::Io(refused()),
                },
                "config.json",
            ),
            (
                Error::from(RuncError::Spawn {
                    binary: "/usr/sbin/runc".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                }),
                "/usr/sbin/runc",
            ),
            (
                Error::from(NamespaceError::Spawn(io::Error::from(
                    io::ErrorKind::NotFound,
                ))),
                "namespace helper",
            ),
            (
                Error::from(CniError::Spawn {
                    plugin: "bridge".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                }),
                "bridge",
            ),
        ];
        for (error, names) in cases {
            assert!(error.source().is_some(), "{error:?} keeps its cause");
            assert_eq!(answer(error, &[names]), Code::Internal);
        }
    }

    #[test]
    fn runtime_and_monitor_failures_are_internal_with_the_runtimes_words() {
        let runc = Error::from(RuncError::Failed {
            command: "runc start abc".into(),
            stderr: "container not created".into(),
        });
        assert_eq!(
            answer(runc, &["runc start abc", "container not created"]),
            Code::Internal
        );
        let create = Error::from(LaunchError::Runtime("exec format error".into()));
        assert_eq!(
            answer(create, &["monitor", "exec format error"]),
            Code::Internal
        );
        let helper = Error::from(NamespaceError::Helper("unshare: EPERM".into()));
        assert_eq!(
            answer(helper, &["pin pod namespaces", "EPERM"]),
            Code::Internal
        );
    }

    #[test]
    fn running_out_of_descriptors_processes_or_space_is_resource_exhausted() {
        let os = |errno: Errno| io::Error::from_raw_os_error(errno as i32);
        let cases = [
            Error::io("write /run/pier/sandboxes/abc/hostname")(os(Errno::EMFILE)),
            Error::from(NamespaceError::Spawn(os(Errno::EAGAIN))),
            Error::from(LaunchError::Pipe(Errno::ENFILE)),
            Error::from(RuncError::Spawn {
                binary: "/usr/sbin/runc".into(),
                source: os(Errno::ENOMEM),
            }),
        ];
        for error in cases {
            let text = error.to_string();
            assert_eq!(
                Status::from(error).code(),
                Code::ResourceExhausted,
                "{text}"
            );
        }
        let denied = Error::io("write /run/pier/x")(os(Errno::EACCES));
        assert_eq!(Status::from(denied).code(), Code::Internal);
    }

    #[test]
    fn a_locked_database_is_unavailable_and_a_full_one_exhausted() {
        let sqlite = |code: i32| {
            DbError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        let busy = Error::Db(sqlite(rusqlite::ffi::SQLITE_BUSY));
        assert_eq!(
            answer(busy, &["locked by another process", "retry"]),
            Code::Unavailable
        );
        let full = Error::Db(sqlite(rusqlite::ffi::SQLITE_FULL));
        assert_eq!(answer(full, &["no space"]), Code::ResourceExhausted);
        let image = Error::Image(pier_storage::ImageError::Db(sqlite(
            rusqlite::ffi::SQLITE_BUSY,
        )));
        assert_eq!(Status::from(image).code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn a_failed_task_is_internal() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let Err(join) = task.await else {
            panic!("an aborted task fails")
        };
        assert_eq!(answer(Error::from(join), &["task"]), Code::Internal);
    }
}
