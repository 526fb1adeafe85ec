//! The sending side of a connection: what streams queue ([`Out`]) and the
//! one task that owns the socket's write half and the header compressor, so
//! frames go out in the order they were queued and a SYN_REPLY always
//! precedes the data on its stream.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::Activity;
use crate::spdy::frame::{self, Frame};
use crate::spdy::headers::{Compressor, Headers};

/// Largest DATA frame written.
pub(super) const MAX_DATA: usize = 32 << 10;

/// What the reader and the streams ask the writer to send.
pub(super) enum Out {
    Reply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Rst { id: u32, status: u32 },
    Ping(u32),
    WindowUpdate { id: u32, delta: u32 },
    GoAway { last: u32, status: u32 },
}

/// The sending half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

/// The connection is gone; nothing more can be sent.
#[derive(Debug)]
pub struct Closed;

impl StreamWriter {
    pub(super) fn new(id: u32, out: mpsc::Sender<Out>) -> Self {
        Self { id, out }
    }

    pub async fn write(&self, data: &[u8]) -> Result<(), Closed> {
        for chunk in data.chunks(MAX_DATA) {
            self.send(Out::Data {
                id: self.id,
                data: Bytes::copy_from_slice(chunk),
                fin: false,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream (an empty DATA frame with FIN).
    pub async fn finish(&self) -> Result<(), Closed> {
        self.send(Out::Data {
            id: self.id,
            data: Bytes::new(),
            fin: true,
        })
        .await
    }

    /// Abandons the stream in both directions.
    pub async fn reset(&self) {
        let _ = self
            .send(Out::Rst {
                id: self.id,
                status: frame::RST_CANCEL,
            })
            .await;
    }

    async fn send(&self, out: Out) -> Result<(), Closed> {
        self.out.send(out).await.map_err(|_| Closed)
    }
}

/// Writes what is queued on `rx` until every sender is gone or a GOAWAY is
/// out, then shuts the write half down.
pub(super) async fn write_loop<W: AsyncWrite + Unpin, A: Activity>(
    mut w: W,
    mut rx: mpsc::Receiver<Out>,
    activity: Arc<A>,
) -> std::io::Result<()> {
    let mut headers = Compressor::default();
    let mut buf = BytesMut::with_capacity(MAX_DATA + 64);
    let mut going_away = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Batch what is already queued into one write.
        while let Some(out) = next.take() {
            let frame = match out {
                Out::Reply(id) => Frame::SynReply {
                    stream_id: id,
                    flags: 0,
                    block: headers.compress(&Headers::default()),
                },
                Out::Data { id, data, fin } => Frame::Data {
                    stream_id: id,
                    flags: if fin { frame::FLAG_FIN } else { 0 },
                    data,
                },
                Out::Rst { id, status } => Frame::RstStream {
                    stream_id: id,
                    status,
                },
                Out::Ping(id) => Frame::Ping { id },
                Out::WindowUpdate { id, delta } => Frame::WindowUpdate {
                    stream_id: id,
                    delta,
                },
                Out::GoAway { last, status } => {
                    going_away = true;
                    Frame::GoAway {
                        last_good_stream_id: last,
                        status,
                    }
                }
            };
            frame.encode(&mut buf);
            if going_away || buf.len() >= MAX_DATA {
                break;
            }
            next = rx.try_recv().ok();
        }
        w.write_all(&buf).await?;
        buf.clear();
        activity.touch();
        if going_away {
            break;
        }
    }
    w.flush().await?;
    w.shutdown().await
}
