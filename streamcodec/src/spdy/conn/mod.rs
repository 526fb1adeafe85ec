//! The server side of one SPDY/3.1 connection, as kubelet's clients use it:
//! the client opens every stream (odd ids), the server replies to each at
//! once and then reads and writes data on it.
//!
//! One task reads frames and routes DATA to the stream's channel
//! ([`read`]); one task owns the socket's write half and the header
//! compressor and writes what every stream queues, in order, so a SYN_REPLY
//! always precedes the data on its stream ([`write`]).
//!
//! Flow control: the peer's receive window is not enforced. Go's spdystream,
//! which kubectl, crictl and the API server use, never sends WINDOW_UPDATE,
//! so honouring the initial 64 KiB window would stall every stream after
//! 64 KiB; TCP's own window is the back-pressure. WINDOW_UPDATE is sent for
//! what the server has taken in, so a strict 3.1 peer is never stalled
//! either.

mod read;
mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::frame;
use super::headers::Headers;
use crate::Activity;
use read::Reader;
use write::{Out, write_loop};

pub use write::{Closed, StreamWriter};

/// How long a closing connection waits for the peer to close its side, so
/// no unread byte turns the close into a reset that loses data in flight.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// The client's data; ends at its FIN or RST_STREAM.
    pub data: mpsc::Receiver<Bytes>,
    pub writer: StreamWriter,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("spdy: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("spdy: {0}")]
    Headers(#[from] super::headers::HeaderError),
    #[error("spdy: connection idle for {0:?}")]
    Idle(Duration),
    #[error("spdy: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Connection {
    /// Streams as the client opens them, already replied to.
    pub streams: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
    gone: CancellationToken,
    last_stream: Arc<AtomicU32>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Serves SPDY on `io`, reporting traffic to `activity`; the connection
    /// ends once `activity` has seen nothing move for `idle`.
    pub fn start<IO, A>(io: IO, activity: Arc<A>, idle: Duration) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
        A: Activity,
    {
        let (r, w) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(64);
        let (streams_tx, streams) = mpsc::channel(8);
        let gone = CancellationToken::new();
        let last_stream = Arc::new(AtomicU32::new(0));
        let reader = Reader::new(
            out.clone(),
            streams_tx,
            Arc::clone(&last_stream),
            Arc::clone(&activity),
        );
        let reader = tokio::spawn({
            let gone = gone.clone();
            async move {
                if let Err(e) = reader.run(r, idle).await {
                    tracing::debug!(error = %e, "spdy connection ended");
                }
                gone.cancel();
            }
        });
        let writer = tokio::spawn({
            let gone = gone.clone();
            async move {
                if let Err(e) = write_loop(w, out_rx, activity).await {
                    tracing::debug!(error = %e, "spdy write failed");
                }
                gone.cancel();
            }
        });
        Self {
            streams,
            out,
            gone,
            last_stream,
            reader,
            writer,
        }
    }

    /// Cancelled once the peer has gone (EOF, error, idle timeout).
    pub fn gone(&self) -> CancellationToken {
        self.gone.clone()
    }

    /// Sends GOAWAY, closes the write side once everything queued is out,
    /// and waits (bounded) for the peer to close its side.
    pub async fn close(self) {
        let Self {
            streams,
            out,
            last_stream,
            mut reader,
            writer,
            ..
        } = self;
        drop(streams);
        let _ = out
            .send(Out::GoAway {
                last: last_stream.load(Ordering::Relaxed),
                status: frame::GOAWAY_OK,
            })
            .await;
        drop(out);
        let _ = writer.await;
        if tokio::time::timeout(CLOSE_LINGER, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

#[cfg(test)]
mod tests;
