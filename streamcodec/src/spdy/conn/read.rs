//! The receiving side of a connection: one task reads frames, keeps the
//! header decompressor and the table of open streams, hands each new
//! stream to the connection's owner and routes DATA to the stream's
//! channel. Whatever needs an answer on the wire (replies, resets, pings,
//! window updates, GOAWAY) it queues for the writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::write::{Out, StreamWriter};
use super::{ConnError, Stream};
use crate::Activity;
use crate::spdy::frame::{self, Frame};
use crate::spdy::headers::Decompressor;

/// Data chunks queued per stream before the reader waits for the consumer.
const STREAM_QUEUE: usize = 16;
/// Received bytes on a stream before a WINDOW_UPDATE goes out.
const WINDOW_ACK: u32 = 32 << 10;

/// An open stream as the reader sees it.
struct Open {
    /// `None` once the client half-closed.
    data: Option<mpsc::Sender<Bytes>>,
    unacked: u32,
}

pub(super) struct Reader<A> {
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<Stream>,
    open: HashMap<u32, Open>,
    headers: Decompressor,
    last_stream: Arc<AtomicU32>,
    activity: Arc<A>,
}

impl<A: Activity> Reader<A> {
    pub(super) fn new(
        out: mpsc::Sender<Out>,
        streams: mpsc::Sender<Stream>,
        last_stream: Arc<AtomicU32>,
        activity: Arc<A>,
    ) -> Self {
        Self {
            out,
            streams,
            open: HashMap::new(),
            headers: Decompressor::default(),
            last_stream,
            activity,
        }
    }

    /// Reads until EOF, a protocol error, or `idle` without traffic.
    pub(super) async fn run<R: AsyncRead + Unpin>(
        mut self,
        mut r: R,
        idle: Duration,
    ) -> Result<(), ConnError> {
        let mut buf = BytesMut::with_capacity(16 << 10);
        loop {
            loop {
                match Frame::decode(&mut buf) {
                    Ok(Some(frame)) => self.handle(frame).await?,
                    Ok(None) => break,
                    Err(e) => {
                        self.protocol_error().await;
                        return Err(e.into());
                    }
                }
            }
            let n = tokio::select! {
                n = r.read_buf(&mut buf) => n?,
                () = self.activity.idle_for(idle) => return Err(ConnError::Idle(idle)),
            };
            if n == 0 {
                return Ok(());
            }
            self.activity.touch();
        }
    }

    fn last(&self) -> u32 {
        self.last_stream.load(Ordering::Relaxed)
    }

    /// Tells the peer why the connection ends before it does.
    async fn protocol_error(&self) {
        self.send(Out::GoAway {
            last: self.last(),
            status: frame::GOAWAY_PROTOCOL_ERROR,
        })
        .await;
    }

    async fn send(&self, out: Out) {
        // Fails only when the writer is gone, which ends the connection anyway.
        let _ = self.out.send(out).await;
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), ConnError> {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                block,
                ..
            } => {
                // Every block goes through the one zlib stream, even for a
                // stream refused below, or later blocks would not inflate.
                let headers = match self.headers.decompress(&block) {
                    Ok(h) => h,
                    Err(e) => {
                        self.protocol_error().await;
                        return Err(e.into());
                    }
                };
                if stream_id % 2 == 0 || stream_id <= self.last() {
                    self.send(Out::Rst {
                        id: stream_id,
                        status: frame::RST_PROTOCOL_ERROR,
                    })
                    .await;
                    return Ok(());
                }
                self.last_stream.store(stream_id, Ordering::Relaxed);
                let (tx, data) = mpsc::channel(STREAM_QUEUE);
                let fin = flags & frame::FLAG_FIN != 0;
                self.open.insert(
                    stream_id,
                    Open {
                        data: (!fin).then_some(tx),
                        unacked: 0,
                    },
                );
                self.send(Out::Reply(stream_id)).await;
                let stream = Stream {
                    id: stream_id,
                    headers,
                    data,
                    writer: StreamWriter::new(stream_id, self.out.clone()),
                };
                if self.streams.send(stream).await.is_err() {
                    // Nobody takes streams any more: the session is over.
                    self.send(Out::Rst {
                        id: stream_id,
                        status: frame::RST_REFUSED_STREAM,
                    })
                    .await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let len = data.len() as u32;
                let Some(open) = self.open.get_mut(&stream_id) else {
                    return Ok(());
                };
                if let Some(tx) = &open.data
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    open.data = None;
                }
                open.unacked += len;
                let ack = (open.unacked >= WINDOW_ACK).then_some(open.unacked);
                if flags & frame::FLAG_FIN != 0 {
                    open.data = None;
                }
                if let Some(delta) = ack {
                    open.unacked = 0;
                    self.send(Out::WindowUpdate {
                        id: stream_id,
                        delta,
                    })
                    .await;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                self.open.remove(&stream_id);
            }
            Frame::Headers { block, .. } => {
                // Nothing here uses trailing headers, but the zlib stream must see them.
                self.headers.decompress(&block)?;
            }
            Frame::SynReply { block, .. } => {
                self.headers.decompress(&block)?;
            }
            // Odd ids are the client's pings, to be echoed; even ones would be
            // answers to pings this server never sends.
            Frame::Ping { id } if id % 2 == 1 => self.send(Out::Ping(id)).await,
            Frame::Ping { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::GoAway { .. }
            | Frame::Unknown { .. } => {}
        }
        Ok(())
    }
}
