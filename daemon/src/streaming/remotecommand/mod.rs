//! Exec and attach over SPDY and WebSocket: each protocol module turns its
//! streams into a [`session::Io`], [`session::run`] drives the monitor, and
//! the protocol module reports the [`session::Outcome`] as [`status`] says.

pub mod session;
mod spdy;
pub mod status;
mod websocket;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::protocol::Flavor;
use super::tokens::Pending;

pub use session::{Target, TermSize};
pub use spdy::serve as serve_spdy;
pub use websocket::serve as serve_websocket;

/// The channels a remote command session asked for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// An exec or attach to serve on an upgraded connection, whichever
/// protocol carries it.
pub struct Request {
    pub target: Target,
    pub wanted: Wanted,
    /// What the negotiated protocol version changes.
    pub flavor: Flavor,
}

impl Request {
    /// The exec or attach behind `pending`; `None` for a port forward.
    pub fn of(pending: &Pending, flavor: Flavor) -> Option<Self> {
        let (stdin, stdout, stderr, tty) = match pending {
            Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::PortForward(_) => return None,
        };
        Some(Self {
            target: Target::of(pending)?,
            wanted: Wanted {
                stdin,
                stdout,
                stderr,
                tty,
            },
            flavor,
        })
    }
}

/// Turns a byte stream of concatenated JSON sizes (`{"Width":80,"Height":24}`,
/// as Go's json.Encoder writes them) into sizes; a chunk may end mid-object.
pub fn decode_resizes(mut data: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(chunk) = data.recv().await {
            buf.extend_from_slice(&chunk);
            let mut sizes = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
            let mut used = 0;
            let mut parsed = Vec::new();
            loop {
                match sizes.next() {
                    Some(Ok(size)) => {
                        used = sizes.byte_offset();
                        parsed.push(size);
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "bad resize message; ignoring the stream");
                        return;
                    }
                    None => {
                        used = buf.len();
                        break;
                    }
                }
            }
            buf.drain(..used);
            for size in parsed {
                if tx.send(size).await.is_err() {
                    return;
                }
            }
            if buf.len() > 4096 {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ExecRequest, PortForwardRequest};

    use super::*;

    #[test]
    fn a_request_carries_the_streams_asked_for() {
        let exec = Pending::Exec(ExecRequest {
            container_id: "c1".into(),
            cmd: vec!["sh".into()],
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        });
        let flavor = Flavor::of("v4.channel.k8s.io");
        let Some(request) = Request::of(&exec, flavor) else {
            panic!("an exec is a remote command");
        };
        let w = request.wanted;
        assert_eq!(
            (w.stdin, w.stdout, w.stderr, w.tty),
            (true, true, false, true)
        );
        assert_eq!(request.target.container_id, "c1");
        assert_eq!(request.target.exec, Some(vec!["sh".to_string()]));
        assert_eq!(request.flavor, flavor);
        let forward = Pending::PortForward(PortForwardRequest::default());
        assert!(Request::of(&forward, flavor).is_none());
    }

    #[tokio::test]
    async fn resizes_split_across_chunks_are_decoded() {
        let (tx, rx) = mpsc::channel(8);
        let mut sizes = decode_resizes(rx);
        for chunk in [
            &b"{\"Width\":80,\"Height\":24}\n{\"Wid"[..],
            b"th\":100,\"Height\":40}",
            b"{\"Width\":1,\"Height\":2}",
        ] {
            let _ = tx.send(Bytes::from_static(chunk)).await;
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(s) = sizes.recv().await {
            got.push((s.width, s.height));
        }
        assert_eq!(got, vec![(80, 24), (100, 40), (1, 2)]);
    }
}
