//! SPDY/3.1 frames on the wire: the fixed layouts of SPDY/3.1 section 2.2
//! and 2.6. Header blocks stay compressed here; [`super::headers`] owns the
//! zlib contexts, which are per connection and must see every block in order.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const VERSION: u16 = 3;

/// Control frame types (section 2.6).
pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

/// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and DATA.
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here (section 2.4.2).
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// GOAWAY status codes (section 2.6.6).
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// Every frame header is eight bytes.
pub const HEADER_LEN: usize = 8;

/// Largest frame accepted from a peer. Data frames here carry terminal
/// and socket chunks (32 KiB from Go's io.Copy), header blocks a handful of
/// headers: anything near the 16 MiB the length field allows is an attack.
pub const MAX_FRAME_LEN: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        flags: u8,
        block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        block: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type this version does not define; the spec says to
    /// ignore it.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN} byte limit")]
    TooLarge(usize),
    #[error("control frame type {kind} with {len} bytes is malformed")]
    Malformed { kind: u16, len: usize },
}

const STREAM_ID_MASK: u32 = 0x7fff_ffff;

impl Frame {
    /// Takes one whole frame off the front of `buf`; `None` while it holds
    /// only part of one.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge(len));
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let control = buf[0] & 0x80 != 0;
        let flags = buf[4];
        if !control {
            let stream_id = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) & STREAM_ID_MASK;
            buf.advance(HEADER_LEN);
            let data = buf.split_to(len).freeze();
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data,
            }));
        }
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        buf.advance(HEADER_LEN);
        let mut body = buf.split_to(len).freeze();
        let malformed = FrameError::Malformed { kind, len };
        let need = |n: usize| {
            if len < n {
                Err(malformed.clone())
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                let stream_id = body.get_u32() & STREAM_ID_MASK;
                let associated_id = body.get_u32() & STREAM_ID_MASK;
                let priority = body.get_u8() >> 5;
                body.advance(1); // credential slot, unused in 3.1
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    flags,
                    block: body,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let stream_id = body.get_u32() & STREAM_ID_MASK;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        block: body,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        block: body,
                    }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & STREAM_ID_MASK,
                    status: body.get_u32(),
                }
            }
            SETTINGS => {
                need(4)?;
                let count = body.get_u32() as usize;
                if body.remaining() != count.saturating_mul(8) {
                    return Err(malformed);
                }
                let entries = (0..count)
                    .map(|_| {
                        let flags_id = body.get_u32();
                        Setting {
                            flags: (flags_id >> 24) as u8,
                            id: flags_id & 0x00ff_ffff,
                            value: body.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need(8)?;
                Frame::GoAway {
                    last_good_stream_id: body.get_u32() & STREAM_ID_MASK,
                    status: body.get_u32(),
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & STREAM_ID_MASK,
                    delta: body.get_u32() & STREAM_ID_MASK,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.put_u32(stream_id & STREAM_ID_MASK);
                put_flags_len(out, *flags, data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                block,
            } => {
                control(out, SYN_STREAM, *flags, 10 + block.len());
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(associated_id & STREAM_ID_MASK);
                out.put_u8(priority << 5);
                out.put_u8(0);
                out.put_slice(block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                block,
            } => {
                control(out, SYN_REPLY, *flags, 4 + block.len());
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_slice(block);
            }
            Frame::Headers {
                stream_id,
                flags,
                block,
            } => {
                control(out, HEADERS, *flags, 4 + block.len());
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_slice(block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, RST_STREAM, 0, 8);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control(out, SETTINGS, *flags, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for e in entries {
                    out.put_u32((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff));
                    out.put_u32(e.value);
                }
            }
            Frame::Ping { id } => {
                control(out, PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, GOAWAY, 0, 8);
                out.put_u32(last_good_stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, WINDOW_UPDATE, 0, 8);
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(delta & STREAM_ID_MASK);
            }
            Frame::Unknown { kind } => control(out, *kind, 0, 0),
        }
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    put_flags_len(out, flags, len);
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    let len = (len as u32).to_be_bytes();
    out.put_slice(&[flags, len[1], len[2], len[3]]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> BytesMut {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_default())
            .collect();
        BytesMut::from(&bytes[..])
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        out.to_vec()
    }

    /// Control frames laid out field by field as SPDY/3.1 section 2.6 draws
    /// them, and as Go's spdy framer (the one kubectl uses) writes them.
    #[test]
    fn control_frames_match_the_spec_layouts() {
        let cases = [
            (
                Frame::RstStream {
                    stream_id: 5,
                    status: RST_CANCEL,
                },
                "80030003 00000008 00000005 00000005",
            ),
            (Frame::Ping { id: 7 }, "80030006 00000004 00000007"),
            (
                Frame::GoAway {
                    last_good_stream_id: 9,
                    status: GOAWAY_OK,
                },
                "80030007 00000008 00000009 00000000",
            ),
            (
                Frame::WindowUpdate {
                    stream_id: 1,
                    delta: 65536,
                },
                "80030009 00000008 00000001 00010000",
            ),
            (
                Frame::Settings {
                    flags: 0,
                    entries: vec![Setting {
                        flags: 0,
                        id: 7,
                        value: 65536,
                    }],
                },
                "80030004 0000000c 00000001 00000007 00010000",
            ),
            (
                Frame::Data {
                    stream_id: 3,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"hi"),
                },
                "00000003 01000002 6869",
            ),
            (
                Frame::SynReply {
                    stream_id: 1,
                    flags: 0,
                    block: Bytes::from_static(b"\xaa"),
                },
                "80030002 00000005 00000001 aa",
            ),
        ];
        for (frame, wire) in cases {
            let wire = hex(wire);
            assert_eq!(encoded(&frame), wire.to_vec(), "{frame:?}");
            let mut buf = wire.clone();
            assert_eq!(Frame::decode(&mut buf), Ok(Some(frame)));
            assert!(buf.is_empty());
        }
    }

    /// Every frame decodes to what was encoded, back to back in one buffer,
    /// stream ids and deltas cut to their 31 bits.
    #[test]
    fn every_frame_round_trips() {
        let block = Bytes::from_static(b"\x78\xf9compressed");
        let frames = vec![
            Frame::SynStream {
                stream_id: 7,
                associated_id: 3,
                priority: 5,
                flags: FLAG_FIN,
                block: block.clone(),
            },
            Frame::SynReply {
                stream_id: 7,
                flags: 0,
                block: block.clone(),
            },
            Frame::RstStream {
                stream_id: 9,
                status: RST_REFUSED_STREAM,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: 4,
                        value: 100,
                    },
                    Setting {
                        flags: 0,
                        id: 0x00ff_ffff,
                        value: u32::MAX,
                    },
                ],
            },
            Frame::Settings {
                flags: 0,
                entries: Vec::new(),
            },
            Frame::Ping { id: u32::MAX },
            Frame::GoAway {
                last_good_stream_id: 11,
                status: GOAWAY_PROTOCOL_ERROR,
            },
            Frame::Headers {
                stream_id: 7,
                flags: FLAG_FIN,
                block,
            },
            Frame::WindowUpdate {
                stream_id: 7,
                delta: 1,
            },
            Frame::Data {
                stream_id: 0x7fff_ffff,
                flags: 0,
                data: Bytes::from(vec![1u8; 70_000]),
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::Unknown { kind: 42 },
        ];
        let mut buf = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut buf);
        }
        for frame in frames {
            assert_eq!(Frame::decode(&mut buf), Ok(Some(frame)));
        }
        assert!(buf.is_empty());
        let mut high = BytesMut::new();
        Frame::WindowUpdate {
            stream_id: 0x8000_0001,
            delta: 0xffff_ffff,
        }
        .encode(&mut high);
        assert_eq!(
            Frame::decode(&mut high),
            Ok(Some(Frame::WindowUpdate {
                stream_id: 1,
                delta: 0x7fff_ffff
            }))
        );
    }

    /// A SYN_STREAM as Go's spdy framer wrote it (stream 1, headers
    /// `streamtype: stdout`), header block still compressed.
    #[test]
    fn decodes_a_syn_stream_written_by_go() {
        let mut buf = hex(concat!(
            "800300010000002b0000000100000000000078f9e3c6a7c2626060",
            "6004a7b392a2d4c45c6851c2565c92925f5a02000000ffff"
        ));
        let Ok(Some(Frame::SynStream {
            stream_id,
            associated_id,
            priority,
            flags,
            block,
        })) = Frame::decode(&mut buf)
        else {
            panic!("not a SYN_STREAM");
        };
        assert_eq!((stream_id, associated_id, priority, flags), (1, 0, 0, 0));
        assert_eq!(block.len(), 0x2b - 10);
        // 0x78 0xf9: a zlib header announcing a preset dictionary, whose
        // Adler-32 follows: the SPDY/3 dictionary's.
        assert_eq!(&block[..6], b"\x78\xf9\xe3\xc6\xa7\xc2");
    }

    #[test]
    fn waits_for_a_whole_frame_and_leaves_the_next_one() {
        let whole = hex("8003000600000004000000070000000101000001");
        for cut in 0..12 {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(Frame::decode(&mut part), Ok(None), "cut at {cut}");
        }
        let mut buf = whole.clone();
        assert_eq!(Frame::decode(&mut buf), Ok(Some(Frame::Ping { id: 7 })));
        assert_eq!(buf.len(), 8);
    }

    #[test]
    fn refuses_other_versions_oversized_and_short_frames() {
        let mut v2 = hex("80020006 00000004 00000007");
        assert_eq!(Frame::decode(&mut v2), Err(FrameError::Version(2)));
        let mut huge = hex("00000001 00ffffff");
        assert_eq!(
            Frame::decode(&mut huge),
            Err(FrameError::TooLarge(0xffffff))
        );
        let mut short = hex("80030003 00000004 00000001");
        assert!(matches!(
            Frame::decode(&mut short),
            Err(FrameError::Malformed { kind: 3, len: 4 })
        ));
        let mut unknown = hex("8003000a 00000000");
        assert_eq!(
            Frame::decode(&mut unknown),
            Ok(Some(Frame::Unknown { kind: 10 }))
        );
    }
}
