//! Exec and attach over SPDY and WebSocket: each protocol module turns its
//! streams into a [`session::Io`], [`session::run`] drives the monitor, and
//! the protocol module reports the [`session::Outcome`] as [`status`] says.

pub mod session;
mod spdy;
pub mod status;
mod websocket;

use bytes::Bytes;
use tokio::sync::mpsc;

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
    use super::*;

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
