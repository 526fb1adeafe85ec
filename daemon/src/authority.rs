//! HTTP/2 `:authority` repair on the CRI socket.
//!
//! gRPC clients that dial a Unix socket put something in `:authority`, and
//! what they put there varies: crictl < 1.30, kubelet < 1.26, grpc-java and
//! Python's grpcio send the socket path (`/run/pier/pier.sock`), others send
//! `localhost` or nothing. A path is no valid URI authority, and the h2 crate
//! under tonic answers such a request with `RST_STREAM(PROTOCOL_ERROR)`, a
//! stance its maintainers keep (hyperium/h2#442, hyperium/hyper#3750), while
//! containerd and CRI-O (grpc-go servers) ignore the authority. pierd serves
//! one socket and never routes by authority, so the value carries nothing.
//!
//! [`AuthorityRepair`] sits between the socket and h2 and rewrites only the
//! client's header blocks: it decodes each one with its own HPACK decoder
//! (which tracks the client's dynamic table), replaces an `:authority` that
//! is not a valid authority with `localhost`, and re-encodes the block with
//! literals that never touch h2's dynamic table, so the two decoders cannot
//! drift apart. Every other frame, and every byte from h2 to the client,
//! passes through untouched. It depends on the HTTP/2 and HPACK RFCs only,
//! not on h2's internals, so it keeps working across h2 releases.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// What every HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer must accept; re-encoded blocks are split
/// into frames no larger.
const MAX_FRAME_LEN: usize = 16_384;
/// A client header block larger than this ends the connection; h2's own
/// header list limit is 16 MiB, gRPC's metadata default 8 KiB.
const MAX_BLOCK_LEN: usize = 16 << 20;
/// The authority given to requests whose own is unusable.
const LOCAL_AUTHORITY: &[u8] = b"localhost";
const READ_CHUNK: usize = 16 * 1024;

/// A server-side connection whose client header blocks get a valid
/// `:authority`.
pub struct AuthorityRepair<S> {
    io: S,
    /// Bytes read from the client and not yet looked at.
    input: BytesMut,
    /// Bytes ready for h2.
    output: BytesMut,
    state: State,
    decoder: loona_hpack::Decoder<'static>,
    /// A header block whose CONTINUATION frames are still to come.
    block: Option<Block>,
    eof: bool,
}

enum State {
    /// Inside the connection preface, this many bytes matched.
    Preface(usize),
    /// At a frame boundary.
    Frames,
    /// Inside a frame passed on as it is, this many payload bytes left.
    Forward(usize),
    /// Not HTTP/2 with prior knowledge: everything passes, h2 will refuse it.
    Raw,
}

struct Block {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

impl<S> AuthorityRepair<S> {
    pub fn new(io: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        // pierd never raises SETTINGS_HEADER_TABLE_SIZE above the default,
        // so no client may use a larger table.
        decoder.set_max_allowed_table_size(4096);
        Self {
            io,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::new(),
            state: State::Preface(0),
            decoder,
            block: None,
            eof: false,
        }
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> Result<(), RepairError> {
        loop {
            match self.state {
                State::Raw => {
                    let rest = self.input.split();
                    self.output.unsplit(rest);
                    return Ok(());
                }
                State::Preface(matched) => {
                    let take = (PREFACE.len() - matched).min(self.input.len());
                    if take == 0 {
                        return Ok(());
                    }
                    if self.input[..take] != PREFACE[matched..matched + take] {
                        self.state = State::Raw;
                        continue;
                    }
                    self.output.unsplit(self.input.split_to(take));
                    self.state = if matched + take == PREFACE.len() {
                        State::Frames
                    } else {
                        State::Preface(matched + take)
                    };
                }
                State::Forward(0) => self.state = State::Frames,
                State::Forward(left) => {
                    let take = left.min(self.input.len());
                    if take == 0 {
                        return Ok(());
                    }
                    self.output.unsplit(self.input.split_to(take));
                    self.state = State::Forward(left - take);
                }
                State::Frames => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]])
                        as usize;
                    let kind = self.input[3];
                    let carries_headers = kind == HEADERS || kind == CONTINUATION;
                    if !carries_headers && self.block.is_none() {
                        self.output.unsplit(self.input.split_to(FRAME_HEADER_LEN));
                        self.state = State::Forward(len);
                        continue;
                    }
                    if !carries_headers {
                        return Err(RepairError::Interrupted { kind });
                    }
                    if len > MAX_BLOCK_LEN {
                        return Err(RepairError::TooLarge);
                    }
                    if self.input.len() < FRAME_HEADER_LEN + len {
                        return Ok(());
                    }
                    let header = self.input.split_to(FRAME_HEADER_LEN);
                    let payload = self.input.split_to(len);
                    self.header_frame(&header, &payload)?;
                }
            }
        }
    }

    /// Takes in a HEADERS or CONTINUATION frame, and emits the repaired
    /// block once it is whole.
    fn header_frame(&mut self, header: &[u8], payload: &[u8]) -> Result<(), RepairError> {
        let (kind, flags) = (header[3], header[4]);
        let stream: [u8; 4] = [header[5], header[6], header[7], header[8]];
        if kind == HEADERS {
            if self.block.is_some() {
                return Err(RepairError::Interrupted { kind });
            }
            let mut rest = payload;
            let mut padding = 0;
            if flags & PADDED != 0 {
                let (&pad, after) = rest.split_first().ok_or(RepairError::Malformed)?;
                padding = usize::from(pad);
                rest = after;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let (fields, after) = rest.split_at_checked(5).ok_or(RepairError::Malformed)?;
                priority = Some(<[u8; 5]>::try_from(fields).map_err(|_| RepairError::Malformed)?);
                rest = after;
            }
            let fragment = rest
                .get(
                    ..rest
                        .len()
                        .checked_sub(padding)
                        .ok_or(RepairError::Malformed)?,
                )
                .ok_or(RepairError::Malformed)?;
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: fragment.to_vec(),
            });
        } else {
            let block = self
                .block
                .as_mut()
                .filter(|b| b.stream == stream)
                .ok_or(RepairError::Interrupted { kind })?;
            if block.fragment.len() + payload.len() > MAX_BLOCK_LEN {
                return Err(RepairError::TooLarge);
            }
            block.fragment.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            let repaired = self.repair(&block.fragment)?;
            emit(&mut self.output, &block, &repaired);
        }
        Ok(())
    }

    /// Decodes a whole header block and re-encodes it with a usable
    /// `:authority`, as literals that h2 does not index.
    fn repair(&mut self, fragment: &[u8]) -> Result<Vec<u8>, RepairError> {
        let mut out = Vec::with_capacity(fragment.len() + 64);
        let mut failed = None;
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                let value: &[u8] = if &name[..] == b":authority" && !usable_authority(&value) {
                    LOCAL_AUTHORITY
                } else {
                    &value
                };
                if let Err(e) = literal(&mut out, &name, value) {
                    failed = Some(e);
                }
            })
            .map_err(|e| RepairError::Hpack(format!("{e:?}")))?;
        match failed {
            Some(e) => Err(RepairError::Hpack(e.to_string())),
            None => Ok(out),
        }
    }
}

/// What h2 itself accepts as an authority.
fn usable_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// One header as a "literal header field without indexing, new name"
/// (RFC 7541, 6.2.2), with plain (not Huffman) strings.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> io::Result<()> {
    out.push(0x00);
    for s in [name, value] {
        loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out)?;
        out.extend_from_slice(s);
    }
    Ok(())
}

/// Writes a block as one HEADERS frame and as many CONTINUATION frames as
/// its size needs.
fn emit(output: &mut BytesMut, block: &Block, encoded: &[u8]) {
    let priority: &[u8] = block.priority.as_ref().map_or(&[], |p| &p[..]);
    let first = encoded.len().min(MAX_FRAME_LEN - priority.len());
    let (head, mut rest) = encoded.split_at(first);
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if !priority.is_empty() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(
        output,
        priority.len() + head.len(),
        HEADERS,
        flags,
        block.stream,
    );
    output.put_slice(priority);
    output.put_slice(head);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME_LEN));
        let flags = if after.is_empty() { END_HEADERS } else { 0 };
        frame_header(output, chunk.len(), CONTINUATION, flags, block.stream);
        output.put_slice(chunk);
        rest = after;
    }
}

fn frame_header(output: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: [u8; 4]) {
    let len = (len as u32).to_be_bytes();
    output.put_slice(&len[1..]);
    output.put_u8(kind);
    output.put_u8(flags);
    output.put_slice(&stream);
}

/// Why a client's connection was cut: each is a connection error in HTTP/2
/// terms, which h2 would have answered with GOAWAY too.
#[derive(Debug, thiserror::Error)]
enum RepairError {
    #[error("frame of type {kind} where a header block's CONTINUATION was due")]
    Interrupted { kind: u8 },
    #[error("HEADERS frame with bad padding or priority fields")]
    Malformed,
    #[error("header block over {MAX_BLOCK_LEN} bytes")]
    TooLarge,
    #[error("header block does not decode: {0}")]
    Hpack(String),
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRepair<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.input.reserve(READ_CHUNK);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.input
            ))?;
            if n == 0 {
                this.eof = true;
                // A frame cut short by the client: h2 sees the same bytes.
                let rest = this.input.split();
                this.output.unsplit(rest);
                continue;
            }
            this.process().map_err(|e| {
                tracing::debug!(error = %e, "closing a CRI connection");
                io::Error::new(io::ErrorKind::InvalidData, e)
            })?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRepair<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityRepair<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame_header(&mut out, payload.len(), kind, flags, stream.to_be_bytes());
        out.put_slice(payload);
        out.to_vec()
    }

    /// Runs client bytes through the repair and returns what h2 would get.
    async fn through_repair(client: &[u8]) -> Vec<u8> {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        tokio::io::AsyncWriteExt::write_all(&mut a, client)
            .await
            .unwrap();
        drop(a);
        let mut repaired = Vec::new();
        AuthorityRepair::new(b)
            .read_to_end(&mut repaired)
            .await
            .unwrap();
        repaired
    }

    /// Splits h2-bound bytes into frames and decodes each whole header block.
    fn header_blocks(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = loona_hpack::Decoder::new();
        let (mut blocks, mut open) = (Vec::new(), Vec::new());
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
            if kind == HEADERS || kind == CONTINUATION {
                assert!(len <= MAX_FRAME_LEN);
                let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                open.extend_from_slice(&payload[if kind == HEADERS { skip } else { 0 }..]);
                if flags & END_HEADERS != 0 {
                    blocks.push(decoder.decode(&open).unwrap());
                    open.clear();
                }
            }
            rest = &rest[FRAME_HEADER_LEN + len..];
        }
        blocks
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
        block
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| &v[..])
    }

    fn request(encoder: &mut loona_hpack::Encoder<'_>, authority: &[u8]) -> Vec<u8> {
        let headers: [(&[u8], &[u8]); 6] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        encoder.encode(headers)
    }

    #[tokio::test]
    async fn a_socket_path_or_empty_authority_becomes_localhost_and_others_stay() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut client = PREFACE.to_vec();
        client.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let authorities: [&[u8]; 4] = [b"/run/pier/pier.sock", b"", b"localhost", b"pier:1"];
        for (i, authority) in authorities.iter().enumerate() {
            let block = request(&mut encoder, authority);
            client.extend(frame(HEADERS, END_HEADERS, 2 * i as u32 + 1, &block));
            client.extend(frame(0x0, END_STREAM, 2 * i as u32 + 1, b"\0\0\0\0\0"));
        }
        // The client's encoder indexed the path: a second request refers to
        // the table entry, which the repair must resolve on its own.
        let block = request(&mut encoder, b"/run/pier/pier.sock");
        client.extend(frame(HEADERS, END_HEADERS | END_STREAM, 11, &block));

        let repaired = through_repair(&client).await;
        let blocks = header_blocks(&repaired);
        let seen: Vec<_> = blocks.iter().map(|b| authority(b).unwrap()).collect();
        let expected: [&[u8]; 5] = [
            b"localhost",
            b"localhost",
            b"localhost",
            b"pier:1",
            b"localhost",
        ];
        assert_eq!(seen, expected);
        assert_eq!(blocks[0][2].1, b"/runtime.v1.RuntimeService/Version");
        // DATA frames are untouched.
        assert!(
            repaired
                .windows(14)
                .any(|w| w == frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"))
        );
    }

    #[tokio::test]
    async fn padded_prioritised_and_continued_blocks_are_reassembled() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = request(&mut encoder, b"/var/tmp/a/very/long/socket/path.sock");
        let (first, second) = block.split_at(10);
        let mut payload = vec![3u8]; // pad length
        payload.extend([0x80, 0, 0, 0, 15]); // exclusive dependency, weight
        payload.extend(first);
        payload.extend([0, 0, 0]);
        let mut client = PREFACE.to_vec();
        client.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        client.extend(frame(CONTINUATION, END_HEADERS, 1, second));

        let repaired = through_repair(&client).await;
        let head = &repaired[PREFACE.len()..];
        assert_eq!(head[3], HEADERS);
        assert_eq!(head[4], PRIORITY | END_STREAM | END_HEADERS);
        assert_eq!(&head[9..14], &[0x80, 0, 0, 0, 15]);
        let blocks = header_blocks(&repaired);
        assert_eq!(authority(&blocks[0]), Some(&b"localhost"[..]));
    }

    #[tokio::test]
    async fn a_block_larger_than_one_frame_is_split_into_continuations() {
        let mut encoder = loona_hpack::Encoder::new();
        let big = vec![b'v'; 40_000];
        let headers: [(&[u8], &[u8]); 3] = [
            (b":method", b"POST"),
            (b":authority", b"/run/x.sock"),
            (b"x-big", &big),
        ];
        let block = encoder.encode(headers);
        let mut client = PREFACE.to_vec();
        for (i, chunk) in block.chunks(MAX_FRAME_LEN).enumerate() {
            let last = (i + 1) * MAX_FRAME_LEN >= block.len();
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            client.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, chunk));
        }
        let blocks = header_blocks(&through_repair(&client).await);
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority(&blocks[0]), Some(&b"localhost"[..]));
        assert_eq!(blocks[0][2].1, big);
    }

    #[tokio::test]
    async fn a_frame_between_headers_and_continuation_ends_the_connection() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = request(&mut encoder, b"localhost");
        let mut client = PREFACE.to_vec();
        client.extend(frame(HEADERS, 0, 1, &block));
        client.extend(frame(0x0, 0, 1, b"data"));
        let (mut a, b) = tokio::io::duplex(1 << 16);
        tokio::io::AsyncWriteExt::write_all(&mut a, &client)
            .await
            .unwrap();
        drop(a);
        let err = AuthorityRepair::new(b)
            .read_to_end(&mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn what_is_not_http2_passes_through_for_h2_to_refuse() {
        let client = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(through_repair(client).await, client);
    }
}
