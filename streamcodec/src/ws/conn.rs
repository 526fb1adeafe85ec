//! The server side of a channel connection on WebSocket: one task writes
//! every channel's messages in order, one reads the client's messages and
//! routes each as `(channel, payload)`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use super::codec::Codec;
use crate::Activity;

/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Messages queued each way before the sender waits.
const QUEUE: usize = 16;

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Both halves of a channel connection.
pub struct Connection<S> {
    /// Sends `(channel, payload)` to the client, in order.
    pub tx: mpsc::Sender<(u8, Bytes)>,
    writer: JoinHandle<Option<Sink<S>>>,
    reader: JoinHandle<()>,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Performs the server side of the WebSocket framing on an upgraded
    /// connection and starts both halves. The client's data messages come
    /// out of the returned receiver as `(channel, payload)` until it
    /// closes, fails or `activity` has seen nothing move for `idle`; then
    /// `gone` is cancelled. Routing waits for room, so a slow consumer
    /// slows the client down.
    pub async fn accept<A: Activity>(
        io: S,
        codec: Codec,
        activity: Arc<A>,
        idle: Duration,
        gone: CancellationToken,
    ) -> (Self, mpsc::Receiver<(u8, Bytes)>) {
        let (sink, stream) = WebSocketStream::from_raw_socket(io, Role::Server, None)
            .await
            .split();
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write_loop(sink, rx, codec, Arc::clone(&activity)));
        let (route, routed) = mpsc::channel(QUEUE);
        let reader = tokio::spawn(read_loop(stream, codec, activity, idle, gone, route));
        (Self { tx, writer, reader }, routed)
    }

    /// A sender for one channel: a task tags what `rx` yields with the
    /// channel number. Ends when the sender is dropped and drained.
    pub fn channel(&self, channel: u8) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let out = self.tx.clone();
        let task = tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if out.send((channel, data)).await.is_err() {
                    return;
                }
            }
        });
        (tx, task)
    }

    /// Sends what is queued (once every sender is gone), a normal close
    /// frame, and waits (bounded) for the client's close so nothing in
    /// flight is lost.
    pub async fn close(self) {
        let Self { tx, writer, reader } = self;
        drop(tx);
        if let Ok(Some(mut sink)) = writer.await {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
            let _ = sink.flush().await;
        }
        let mut reader = reader;
        if tokio::time::timeout(CLOSE_LINGER, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
}

/// Writes every queued message; hands the sink back for the close frame
/// once all senders are gone, or `None` if the client stopped taking them.
async fn write_loop<S, A>(
    mut sink: Sink<S>,
    mut rx: mpsc::Receiver<(u8, Bytes)>,
    codec: Codec,
    activity: Arc<A>,
) -> Option<Sink<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    A: Activity,
{
    while let Some((channel, data)) = rx.recv().await {
        sink.send(codec.encode(channel, &data)).await.ok()?;
        activity.touch();
    }
    Some(sink)
}

async fn read_loop<S, A>(
    mut stream: SplitStream<WebSocketStream<S>>,
    codec: Codec,
    activity: Arc<A>,
    idle: Duration,
    gone: CancellationToken,
    route: mpsc::Sender<(u8, Bytes)>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    A: Activity,
{
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = activity.idle_for(idle) => {
                tracing::debug!(?idle, "websocket stream idle");
                break;
            }
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket read");
                break;
            }
            None => break,
        };
        activity.touch();
        if message.is_close() {
            break;
        }
        if let Some((channel, data)) = codec.decode(&message) {
            // Nobody listening any more is fine: keep reading until close.
            let _ = route.send((channel, Bytes::from(data))).await;
        }
    }
    gone.cancel();
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;

    use super::*;
    use crate::activity::manual::Manual;
    use crate::ws::CLOSE_CHANNEL;

    type Client = WebSocketStream<DuplexStream>;

    async fn pair(
        codec: Codec,
    ) -> (
        Connection<DuplexStream>,
        mpsc::Receiver<(u8, Bytes)>,
        Client,
        Arc<Manual>,
        CancellationToken,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let activity = Arc::new(Manual::default());
        let gone = CancellationToken::new();
        let idle = Duration::from_secs(60);
        let (conn, routed) =
            Connection::accept(a, codec, Arc::clone(&activity), idle, gone.clone()).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (conn, routed, client, activity, gone)
    }

    async fn next(client: &mut Client) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .ok()?
            .and_then(Result::ok)
    }

    #[tokio::test]
    async fn channels_are_routed_in_and_written_out_in_order() {
        let (conn, mut routed, mut client, activity, gone) = pair(Codec::Binary).await;
        for m in [&b"\x00hi"[..], b"\x04{}", b"", b"\xff\x00"] {
            assert!(client.send(Message::binary(m.to_vec())).await.is_ok());
        }
        assert_eq!(routed.recv().await, Some((0, Bytes::from_static(b"hi"))));
        assert_eq!(routed.recv().await, Some((4, Bytes::from_static(b"{}"))));
        // The empty message names no channel and is skipped.
        assert_eq!(
            routed.recv().await,
            Some((CLOSE_CHANNEL, Bytes::from_static(b"\x00")))
        );
        let _ = conn.tx.send((1, Bytes::from_static(b"ready"))).await;
        let (stdout, pump) = conn.channel(1);
        let _ = stdout.send(Bytes::from_static(b"out")).await;
        drop(stdout);
        assert!(pump.await.is_ok());
        assert_eq!(
            next(&mut client).await,
            Some(Message::binary(&b"\x01ready"[..]))
        );
        assert_eq!(
            next(&mut client).await,
            Some(Message::binary(&b"\x01out"[..]))
        );
        assert!(activity.touches() >= 5, "reads and writes are reported");
        // Closing: a normal close frame; the client's answer ends the reader.
        let closing = tokio::spawn(conn.close());
        match next(&mut client).await {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("not a close frame: {other:?}"),
        }
        assert!(next(&mut client).await.is_none());
        assert!(closing.await.is_ok());
        assert!(gone.is_cancelled());
    }

    #[tokio::test]
    async fn base64_protocols_carry_text() {
        let (conn, mut routed, mut client, _, _) = pair(Codec::Base64).await;
        assert!(client.send(Message::text("0Zm9vCg==")).await.is_ok());
        assert_eq!(routed.recv().await, Some((0, Bytes::from_static(b"foo\n"))));
        let _ = conn.tx.send((2, Bytes::from_static(b"\n"))).await;
        assert_eq!(next(&mut client).await, Some(Message::text("2Cg==")));
    }

    #[tokio::test]
    async fn the_client_closing_or_going_idle_ends_the_connection() {
        let (_conn, _routed, mut client, _, gone) = pair(Codec::Binary).await;
        assert!(client.close(None).await.is_ok());
        tokio::time::timeout(Duration::from_secs(5), gone.cancelled())
            .await
            .ok();
        assert!(gone.is_cancelled());

        let (_conn, _routed, _client, activity, gone) = pair(Codec::Binary).await;
        for _ in 0..100 {
            if activity.limit().is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(activity.limit(), Some(Duration::from_secs(60)));
        assert!(!gone.is_cancelled());
        activity.go_idle();
        tokio::time::timeout(Duration::from_secs(5), gone.cancelled())
            .await
            .ok();
        assert!(gone.is_cancelled());
    }
}
