//! SPDY/3 header blocks (section 2.6.10): a count, then length-prefixed
//! name/value pairs, compressed with zlib and the SPDY dictionary. Each
//! direction of a connection has one zlib stream that carries every block in
//! order, each block ending on a sync flush.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;

/// Largest header block accepted once decompressed; the streams here carry
/// three or four short headers.
const MAX_BLOCK: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header block does not decompress: {0}")]
    Inflate(String),
    #[error("header block larger than {MAX_BLOCK} bytes")]
    TooLarge,
    #[error("header block is malformed")]
    Malformed,
}

/// A stream's headers, names lower case as SPDY requires. A value holding
/// several values separates them with NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.split('\0').next())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u32(self.0.len() as u32);
        for (name, value) in &self.0 {
            for s in [name.to_ascii_lowercase().as_bytes(), value.as_bytes()] {
                out.put_u32(s.len() as u32);
                out.put_slice(s);
            }
        }
        out.to_vec()
    }

    fn decode(mut raw: &[u8]) -> Result<Self, HeaderError> {
        let take = |raw: &mut &[u8]| -> Result<String, HeaderError> {
            if raw.remaining() < 4 {
                return Err(HeaderError::Malformed);
            }
            let len = raw.get_u32() as usize;
            if raw.remaining() < len {
                return Err(HeaderError::Malformed);
            }
            let s = String::from_utf8_lossy(&raw[..len]).into_owned();
            raw.advance(len);
            Ok(s)
        };
        if raw.remaining() < 4 {
            return Err(HeaderError::Malformed);
        }
        let count = raw.get_u32() as usize;
        // Each pair takes at least eight bytes: a count beyond that is a lie.
        if count > raw.remaining() / 8 {
            return Err(HeaderError::Malformed);
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take(&mut raw)?;
            let value = take(&mut raw)?;
            pairs.push((name.to_ascii_lowercase(), value));
        }
        Ok(Self(pairs))
    }
}

/// The sending side's zlib stream.
pub struct Compressor {
    z: Compress,
    primed: bool,
}

impl Default for Compressor {
    fn default() -> Self {
        Self {
            z: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl Compressor {
    pub fn compress(&mut self, headers: &Headers) -> Bytes {
        if !self.primed {
            // Only fails if called after data went through, which `primed` rules out.
            let _ = self.z.set_dictionary(DICTIONARY);
            self.primed = true;
        }
        let raw = headers.encode();
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            // zlib never fails on a sane stream; a failure would only leave
            // the block short, which the peer reports.
            if self
                .z
                .compress_vec(&raw[done..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                break;
            }
            // A sync flush is complete once all input is in and the output
            // did not fill up.
            if (self.z.total_in() - start) as usize == raw.len() && out.len() < out.capacity() {
                break;
            }
        }
        Bytes::from(out)
    }
}

/// The receiving side's zlib stream.
pub struct Decompressor {
    z: Decompress,
}

impl Default for Decompressor {
    fn default() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }
}

impl Decompressor {
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.z.total_in();
        loop {
            let used = (self.z.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve(out.len());
            }
            match self
                .z
                .decompress_vec(&block[used..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => return Err(HeaderError::Malformed),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| HeaderError::Inflate(e.to_string()))?;
                }
                Err(e) => return Err(HeaderError::Inflate(e.to_string())),
            }
            let used = (self.z.total_in() - start) as usize;
            if used == block.len() && out.len() < out.capacity() {
                break;
            }
        }
        Headers::decode(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spdy::frame::Frame;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_default())
            .collect()
    }

    fn block_of(wire: &str) -> Bytes {
        let mut buf = BytesMut::from(&hex(wire)[..]);
        match Frame::decode(&mut buf) {
            Ok(Some(Frame::SynStream { block, .. })) => block,
            other => panic!("not a SYN_STREAM: {other:?}"),
        }
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut z = Compress::new(Compression::default(), true);
        assert_eq!(z.set_dictionary(DICTIONARY).ok(), Some(0xe3c6_a7c2));
    }

    /// Two SYN_STREAMs Go's spdy framer wrote on one connection: the second
    /// block only decompresses with the zlib state the first one left.
    #[test]
    fn reads_consecutive_blocks_written_by_go() {
        let first = block_of(concat!(
            "800300010000002b0000000100000000000078f9e3c6a7c2626060",
            "6004a7b392a2d4c45c6851c2565c92925f5a02000000ffff"
        ));
        let second = block_of(concat!(
            "80030001010000230000000300000000000002e51c0c39d6545024",
            "408aec2270eeb030b03000000000ffff"
        ));
        let mut d = Decompressor::default();
        let h = d.decompress(&first).unwrap_or_default();
        assert_eq!(h.get("streamtype"), Some("stdout"));
        let h = d.decompress(&second).unwrap_or_default();
        assert_eq!(h.get("streamtype"), Some("error"));
        assert_eq!(h.get("port"), Some("8080"));
        assert_eq!(h.0.len(), 2);
    }

    #[test]
    fn round_trips_through_one_stream_per_direction() {
        let mut c = Compressor::default();
        let mut d = Decompressor::default();
        for i in 0..50 {
            let h = Headers(vec![
                ("streamType".into(), "data".into()),
                ("requestid".into(), i.to_string()),
                ("multi".into(), "a\0b".into()),
            ]);
            let block = c.compress(&h);
            let got = d.decompress(&block).unwrap_or_default();
            assert_eq!(got.get("streamtype"), Some("data"));
            assert_eq!(got.get("requestid"), Some(i.to_string().as_str()));
            assert_eq!(got.get("multi"), Some("a"));
        }
    }

    /// The uncompressed block as section 2.6.10 lays it out: a count, then
    /// length-prefixed names (lower-cased) and values.
    #[test]
    fn blocks_are_length_prefixed_pairs() {
        let h = Headers(vec![
            ("streamType".into(), "error".into()),
            ("port".into(), "80".into()),
        ]);
        let raw = h.encode();
        assert_eq!(
            raw,
            b"\x00\x00\x00\x02\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error\
              \x00\x00\x00\x04port\x00\x00\x00\x0280"
        );
        let back = Headers::decode(&raw).unwrap_or_default();
        assert_eq!(back.get("streamtype"), Some("error"));
        assert_eq!(back.get("port"), Some("80"));
        assert_eq!(
            back.get("streamType"),
            None,
            "names are looked up lower case"
        );
        assert_eq!(
            Headers::decode(b"\x00\x00\x00\x00").ok(),
            Some(Headers::default())
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Decompressor::default();
        assert!(d.decompress(b"\x78\x9c\xff\xff\xff").is_err());
        assert!(Headers::decode(b"\xff\xff\xff\xff").is_err());
        assert!(Headers::decode(b"\x00\x00\x00\x01\x00\x00\x00\x09ab").is_err());
    }
}
