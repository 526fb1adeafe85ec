//! A connection driven end to end over an in-memory socket by a client
//! written against the frame and header modules; the independent client
//! is Go's, in pier's end-to-end tests.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::Connection;
use crate::activity::manual::Manual;
use crate::spdy::frame::{self, Frame};
use crate::spdy::headers::{Compressor, Decompressor, Headers};

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

fn pair() -> (Connection, Client, Arc<Manual>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let activity = Arc::new(Manual::default());
    let conn = Connection::start(a, Arc::clone(&activity), Duration::from_secs(60));
    let client = Client {
        io: b,
        buf: BytesMut::new(),
        c: Compressor::default(),
        d: Decompressor::default(),
    };
    (conn, client, activity)
}

#[tokio::test]
async fn streams_are_replied_to_and_carry_data_both_ways() {
    let (mut conn, mut client, activity) = pair();
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
    assert!(activity.touches() >= 2, "reads and writes are reported");
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
async fn a_stream_opened_with_fin_has_no_data_and_a_reset_one_ends() {
    let (mut conn, mut client, _) = pair();
    client.open(1, "error", true).await;
    client.open(3, "stdin", false).await;
    let (Some(mut error), Some(mut stdin)) = (conn.streams.recv().await, conn.streams.recv().await)
    else {
        panic!("no streams");
    };
    assert_eq!((error.id, stdin.id), (1, 3));
    assert_eq!(error.data.recv().await, None, "FIN on SYN_STREAM");
    client
        .send(Frame::RstStream {
            stream_id: 3,
            status: frame::RST_CANCEL,
        })
        .await;
    assert_eq!(stdin.data.recv().await, None, "RST_STREAM ends the data");
    // The server abandoning a stream resets it on the wire.
    error.writer.reset().await;
    for id in [1, 3] {
        assert!(matches!(
            client.next().await,
            Some(Frame::SynReply { stream_id, .. }) if stream_id == id
        ));
    }
    assert_eq!(
        client.next().await,
        Some(Frame::RstStream {
            stream_id: 1,
            status: frame::RST_CANCEL
        })
    );
}

#[tokio::test]
async fn big_writes_go_out_in_bounded_data_frames() {
    let (mut conn, mut client, _) = pair();
    client.open(1, "stdout", false).await;
    let Some(stream) = conn.streams.recv().await else {
        panic!("no stream");
    };
    let payload: Vec<u8> = (0..80_000u32).map(|i| i as u8).collect();
    assert!(stream.writer.write(&payload).await.is_ok());
    assert!(matches!(client.next().await, Some(Frame::SynReply { .. })));
    let mut got = Vec::new();
    while got.len() < payload.len() {
        let Some(Frame::Data {
            stream_id: 1, data, ..
        }) = client.next().await
        else {
            panic!("not a DATA frame");
        };
        assert!(data.len() <= 32 << 10);
        got.extend_from_slice(&data);
    }
    assert_eq!(got, payload);
}

#[tokio::test]
async fn streams_nobody_takes_are_refused() {
    let (mut conn, mut client, _) = pair();
    conn.streams.close();
    client.open(1, "data", false).await;
    assert!(matches!(client.next().await, Some(Frame::SynReply { .. })));
    assert_eq!(
        client.next().await,
        Some(Frame::RstStream {
            stream_id: 1,
            status: frame::RST_REFUSED_STREAM
        })
    );
}

#[tokio::test]
async fn bad_stream_ids_are_refused_and_big_uploads_acknowledged() {
    let (mut conn, mut client, _) = pair();
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
    let (conn, mut client, _) = pair();
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

#[tokio::test]
async fn a_connection_its_owner_calls_idle_is_closed() {
    let (a, _b) = tokio::io::duplex(1024);
    let activity = Arc::new(Manual::default());
    let conn = Connection::start(a, Arc::clone(&activity), Duration::from_secs(30));
    let gone = conn.gone();
    for _ in 0..100 {
        if activity.limit().is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(!gone.is_cancelled());
    assert_eq!(activity.limit(), Some(Duration::from_secs(30)));
    activity.go_idle();
    tokio::time::timeout(Duration::from_secs(5), gone.cancelled())
        .await
        .ok();
    assert!(gone.is_cancelled());
}
