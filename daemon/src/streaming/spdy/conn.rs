//! The server side of one SPDY/3.1 connection, as kubelet's clients use it:
//! the client opens every stream (odd ids), the server replies to each at
//! once and then reads and writes data on it.
//!
//! One task reads frames and routes DATA to the stream's channel; one task
//! owns the socket's write half and the header compressor and writes what
//! every stream queues, in order, so a SYN_REPLY always precedes the data on
//! its stream.
//!
//! Flow control: the peer's receive window is not enforced. Go's spdystream,
//! which kubectl, crictl and the API server use, never sends WINDOW_UPDATE,
//! so honouring the initial 64 KiB window would stall every stream after
//! 64 KiB; TCP's own window is the back-pressure. WINDOW_UPDATE is sent for
//! what the server has taken in, so a strict 3.1 peer is never stalled
//! either.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Frame};
use super::headers::{Compressor, Decompressor, Headers};
use crate::streaming::activity::Activity;

/// Data chunks queued per stream before the reader waits for the consumer.
const STREAM_QUEUE: usize = 16;
/// Largest DATA frame written.
const MAX_DATA: usize = 32 << 10;
/// Received bytes on a stream before a WINDOW_UPDATE goes out.
const WINDOW_ACK: u32 = 32 << 10;
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

enum Out {
    Reply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Rst { id: u32, status: u32 },
    Ping(u32),
    WindowUpdate { id: u32, delta: u32 },
    GoAway { last: u32, status: u32 },
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
    pub fn start<IO>(io: IO, activity: Arc<Activity>, idle: Duration) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(64);
        let (streams_tx, streams) = mpsc::channel(8);
        let gone = CancellationToken::new();
        let last_stream = Arc::new(AtomicU32::new(0));
        let reader = Reader {
            out: out.clone(),
            streams: streams_tx,
            open: HashMap::new(),
            headers: Decompressor::default(),
            last_stream: Arc::clone(&last_stream),
            activity: Arc::clone(&activity),
        };
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

/// An open stream as the reader sees it.
struct Open {
    /// `None` once the client half-closed.
    data: Option<mpsc::Sender<Bytes>>,
    unacked: u32,
}

struct Reader {
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<Stream>,
    open: HashMap<u32, Open>,
    headers: Decompressor,
    last_stream: Arc<AtomicU32>,
    activity: Arc<Activity>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(
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
                    writer: StreamWriter {
                        id: stream_id,
                        out: self.out.clone(),
                    },
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

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Out>,
    activity: Arc<Activity>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// A client written against the frame and header modules, enough to
    /// drive the server side; the independent client is Go's, in the
    /// end-to-end tests.
    struct Client {
        io: DuplexStream,
        buf: BytesMut,
        c: Compressor,
        d: Decompressor,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            frame.encode(&mut out);
            let _ = self.io.write_all(&out).await;
        }

        async fn open(&mut self, id: u32, kind: &str, fin: bool) {
            let block = self
                .c
                .compress(&Headers(vec![("streamType".into(), kind.into())]));
            self.send(Frame::SynStream {
                stream_id: id,
                associated_id: 0,
                priority: 0,
                flags: if fin { frame::FLAG_FIN } else { 0 },
                block,
            })
            .await;
        }

        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Ok(Some(f)) = Frame::decode(&mut self.buf) {
                    if let Frame::SynReply { block, .. } = &f {
                        assert!(self.d.decompress(block).is_ok());
                    }
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        }
    }

    fn pair() -> (Connection, Client) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let conn = Connection::start(a, Arc::default(), Duration::from_secs(60));
        let client = Client {
            io: b,
            buf: BytesMut::new(),
            c: Compressor::default(),
            d: Decompressor::default(),
        };
        (conn, client)
    }

    #[tokio::test]
    async fn streams_are_replied_to_and_carry_data_both_ways() {
        let (mut conn, mut client) = pair();
        client.open(1, "stdin", false).await;
        let Some(mut stream) = conn.streams.recv().await else {
            panic!("no stream");
        };
        assert_eq!(stream.headers.get("streamtype"), Some("stdin"));
        assert!(matches!(
            client.next().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        client
            .send(Frame::Data {
                stream_id: 1,
                flags: frame::FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            })
            .await;
        assert_eq!(stream.data.recv().await.as_deref(), Some(&b"hello"[..]));
        assert_eq!(stream.data.recv().await, None, "FIN ends the data");
        assert!(stream.writer.write(b"out").await.is_ok());
        assert!(stream.writer.finish().await.is_ok());
        assert_eq!(
            client.next().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"out")
            })
        );
        assert_eq!(
            client.next().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: frame::FLAG_FIN,
                data: Bytes::new()
            })
        );
        client.send(Frame::Ping { id: 3 }).await;
        assert_eq!(client.next().await, Some(Frame::Ping { id: 3 }));
        // Closing: GOAWAY naming the last stream, then EOF.
        let gone = conn.gone();
        let closing = tokio::spawn(conn.close());
        assert_eq!(
            client.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                status: frame::GOAWAY_OK
            })
        );
        assert_eq!(client.next().await, None);
        drop(client);
        assert!(closing.await.is_ok());
        assert!(gone.is_cancelled());
    }

    #[tokio::test]
    async fn bad_stream_ids_are_refused_and_big_uploads_acknowledged() {
        let (mut conn, mut client) = pair();
        client.open(2, "data", false).await;
        assert_eq!(
            client.next().await,
            Some(Frame::RstStream {
                stream_id: 2,
                status: frame::RST_PROTOCOL_ERROR
            })
        );
        // The refused stream's block went through the zlib stream: the
        // next one still inflates.
        client.open(3, "data", false).await;
        let Some(mut stream) = conn.streams.recv().await else {
            panic!("no stream");
        };
        assert_eq!(stream.id, 3);
        assert!(matches!(client.next().await, Some(Frame::SynReply { .. })));
        let chunk = Bytes::from(vec![7u8; 16 << 10]);
        for _ in 0..2 {
            client
                .send(Frame::Data {
                    stream_id: 3,
                    flags: 0,
                    data: chunk.clone(),
                })
                .await;
        }
        let mut got = 0;
        while got < 32 << 10 {
            got += stream.data.recv().await.map_or(0, |d| d.len());
        }
        assert_eq!(
            client.next().await,
            Some(Frame::WindowUpdate {
                stream_id: 3,
                delta: 32 << 10
            })
        );
    }

    #[tokio::test]
    async fn peer_going_away_cancels_and_garbage_ends_the_connection() {
        let (conn, mut client) = pair();
        let gone = conn.gone();
        client.io.write_all(b"GET / HTTP/1.1\r\n\r\n").await.ok();
        tokio::time::timeout(Duration::from_secs(5), gone.cancelled())
            .await
            .ok();
        assert!(gone.is_cancelled());
        assert_eq!(
            client.next().await,
            Some(Frame::GoAway {
                last_good_stream_id: 0,
                status: frame::GOAWAY_PROTOCOL_ERROR
            })
        );
        drop(conn);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() {
        let (a, _b) = tokio::io::duplex(1024);
        let conn = Connection::start(a, Arc::default(), Duration::from_secs(30));
        let gone = conn.gone();
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!gone.is_cancelled());
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        assert!(gone.is_cancelled());
    }
}
