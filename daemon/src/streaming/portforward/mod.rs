//! Port forwarding: a TCP connection to localhost:<port> inside the pod's
//! network namespace, copied to and from a client stream.

mod spdy;
mod websocket;

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use nix::sched::{CloneFlags, setns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;
use crate::sandbox::{self, Namespaces, SandboxRuntime};

pub use spdy::serve as serve_spdy;
pub use websocket::serve as serve_websocket;

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read size from the pod's socket.
const CHUNK: usize = 32 << 10;

/// Connects to `port` on the pod's loopback (IPv4, then IPv6).
pub async fn connect(daemon: &Daemon, sandbox_id: &str, port: u16) -> Result<TcpStream, String> {
    let record = daemon
        .find_sandbox(sandbox_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("pod sandbox {sandbox_id} not found"))?;
    if record.state != sandbox::READY {
        return Err(format!("pod sandbox {} is not ready", record.id));
    }
    let netns = match Namespaces::of(&sandbox::config_of(&record)).host_network() {
        true => None,
        false => Some(
            SandboxRuntime::from_record(&record)
                .netns
                .ok_or_else(|| format!("pod sandbox {} has no network namespace", record.id))?,
        ),
    };
    let (tx, rx) = oneshot::channel();
    // setns() changes the calling thread for good: a thread of its own,
    // which ends right after. The socket keeps its namespace on any thread.
    std::thread::Builder::new()
        .name("portforward-connect".into())
        .spawn(move || {
            let _ = tx.send(connect_in(netns, port));
        })
        .map_err(|e| format!("spawn connect thread: {e}"))?;
    let stream = rx
        .await
        .map_err(|_| "connect thread ended without an answer".to_string())??;
    stream
        .set_nonblocking(true)
        .and_then(|()| TcpStream::from_std(stream))
        .map_err(|e| format!("socket: {e}"))
}

fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<StdTcpStream, String> {
    if let Some(path) = netns {
        let ns = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter network namespace {}: {e}", path.display()))?;
    }
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    StdTcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|first| {
        StdTcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
            .map_err(|_| format!("connect to localhost:{port} in the pod: {first}"))
    })
}

/// Copies the client's bytes to the socket and the socket's bytes to the
/// client. The client's end of data half-closes the socket and the copy
/// goes on the other way, for the pod's answer; the socket's EOF drops
/// `to_client` (the protocol half-closes the client's stream) and ends the
/// forward, as it does in kubelet's runtimes. `gone` ends it early.
pub async fn forward(
    socket: TcpStream,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: mpsc::Sender<Bytes>,
    gone: CancellationToken,
) -> Result<(), String> {
    let (mut r, mut w) = socket.into_split();
    let upstream = async move {
        while let Some(data) = from_client.recv().await {
            w.write_all(&data).await?;
        }
        w.shutdown().await
    };
    let downstream = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0
                || to_client
                    .send(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
            {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    tokio::pin!(upstream, downstream);
    let mut upstream_done = false;
    loop {
        tokio::select! {
            up = &mut upstream, if !upstream_done => {
                upstream_done = true;
                up.map_err(|e| format!("write to the pod: {e}"))?;
            }
            down = &mut downstream => return down.map_err(|e| format!("read from the pod: {e}")),
            () = gone.cancelled() => return Ok(()),
        }
    }
}
