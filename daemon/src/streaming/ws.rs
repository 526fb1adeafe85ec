//! Kubernetes channel framing on WebSocket messages: the first byte of a
//! binary message is its channel; `base64.` protocols send text whose first
//! character is the channel as an ASCII digit and the rest base64.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use super::activity::Activity;

/// v5's channel-close message: `[255, channel]`.
pub const CLOSE_CHANNEL: u8 = 255;

/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Binary,
    Base64,
}

impl Codec {
    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Codec::Binary => {
                let mut m = Vec::with_capacity(data.len() + 1);
                m.push(channel);
                m.extend_from_slice(data);
                Message::Binary(m.into())
            }
            Codec::Base64 => {
                let mut text = String::with_capacity(data.len() * 4 / 3 + 5);
                text.push(char::from(b'0' + channel));
                STANDARD.encode_string(data, &mut text);
                Message::Text(text.into())
            }
        }
    }

    /// Channel and payload of a data message; `None` for control messages
    /// and for payloads that do not decode (ignored, as kubelet does).
    pub fn decode(self, message: &Message) -> Option<(u8, Vec<u8>)> {
        let raw: &[u8] = match message {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes(),
            _ => return None,
        };
        let (&first, rest) = raw.split_first()?;
        match self {
            Codec::Binary => Some((first, rest.to_vec())),
            Codec::Base64 if first == CLOSE_CHANNEL => Some((first, rest.to_vec())),
            Codec::Base64 => {
                let channel = first.checked_sub(b'0')?;
                STANDARD.decode(rest).ok().map(|d| (channel, d))
            }
        }
    }
}

/// The sending half of a channel connection: one task writes every
/// channel's messages in order.
pub struct Writer {
    pub tx: mpsc::Sender<(u8, Bytes)>,
    task: JoinHandle<Option<SplitSink<Socket, Message>>>,
}

impl Writer {
    pub fn start(
        mut sink: SplitSink<Socket, Message>,
        codec: Codec,
        activity: Arc<Activity>,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(u8, Bytes)>(16);
        let task = tokio::spawn(async move {
            while let Some((channel, data)) = rx.recv().await {
                sink.send(codec.encode(channel, &data)).await.ok()?;
                activity.touch();
            }
            Some(sink)
        });
        Self { tx, task }
    }

    /// A sender for one channel: a task tags what `rx` yields with the
    /// channel number. Ends when the sender is dropped and drained.
    pub fn channel(&self, channel: u8) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
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

    /// Sends what is queued, a normal close frame, and waits (bounded) for
    /// the client's close so nothing in flight is lost.
    pub async fn close(self, reader: JoinHandle<()>) {
        drop(self.tx);
        if let Ok(Some(mut sink)) = self.task.await {
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

/// Performs the server side of the WebSocket framing on an upgraded
/// connection.
pub async fn accept(io: TokioIo<Upgraded>) -> (SplitSink<Socket, Message>, SplitStream<Socket>) {
    WebSocketStream::from_raw_socket(io, Role::Server, None)
        .await
        .split()
}

/// Reads data messages and routes each as `(channel, payload)` until the
/// client closes, fails or stays idle past `idle`; then cancels `gone`.
/// Routing waits for room, so a slow consumer slows the client down.
pub fn read_loop(
    mut stream: SplitStream<Socket>,
    codec: Codec,
    activity: Arc<Activity>,
    idle: Duration,
    gone: CancellationToken,
    route: mpsc::Sender<(u8, Bytes)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_base64_framing() {
        let m = Codec::Binary.encode(1, b"hi");
        assert_eq!(m, Message::Binary(Bytes::from_static(b"\x01hi")));
        assert_eq!(Codec::Binary.decode(&m), Some((1, b"hi".to_vec())));
        // The example from the protocol's documentation: "\n" on stdout.
        let m = Codec::Base64.encode(1, b"\n");
        assert_eq!(m, Message::Text("1Cg==".into()));
        assert_eq!(
            Codec::Base64.decode(&Message::Text("0Zm9vCg==".into())),
            Some((0, b"foo\n".to_vec()))
        );
        assert_eq!(Codec::Base64.decode(&Message::Text("0***".into())), None);
        assert_eq!(Codec::Binary.decode(&Message::Binary(Bytes::new())), None);
        assert_eq!(
            Codec::Binary.decode(&Message::Binary(Bytes::from_static(&[255, 0]))),
            Some((CLOSE_CHANNEL, vec![0]))
        );
    }
}
