//! Length-delimited prost messages over blocking streams.

use std::io::{self, Read, Write};

use prost::Message;

/// Upper bound on a response the client accepts: exec output plus headroom.
pub const RESPONSE_MAX: usize = crate::EXEC_OUTPUT_MAX + (1 << 20);

#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("message of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("malformed length prefix")]
    BadLength,
    #[error("cannot decode message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Write one message with its varint length prefix, in one write call.
pub fn write_message<M: Message>(w: &mut impl Write, msg: &M) -> io::Result<()> {
    w.write_all(&msg.encode_length_delimited_to_vec())?;
    w.flush()
}

/// Read one length-delimited message; `max` bounds its size.
pub fn read_message<M: Message + Default>(
    r: &mut impl Read,
    max: usize,
) -> Result<M, FramingError> {
    let len = read_varint(r)?;
    let len = usize::try_from(len).map_err(|_| FramingError::BadLength)?;
    if len > max {
        return Err(FramingError::TooLarge(len, max));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FramingError::Closed,
        _ => FramingError::Io(e),
    })?;
    Ok(M::decode(buf.as_slice())?)
}

fn read_varint(r: &mut impl Read) -> Result<u64, FramingError> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut b = [0u8; 1];
        loop {
            match r.read(&mut b) {
                Ok(0) => return Err(FramingError::Closed),
                Ok(_) => break,
                // Retry the same byte; an interrupted read consumed nothing.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        value |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(FramingError::BadLength)
}

/// Outcome of looking for one complete message at the start of `buf`
/// (the monitor's non-blocking side uses this on its receive buffer).
#[derive(Debug, PartialEq, Eq)]
pub enum Split {
    /// Not enough bytes yet.
    Incomplete,
    /// The message body is `buf[start..end]`; consume `end` bytes.
    Complete { start: usize, end: usize },
    /// The prefix is malformed or announces more than `max` bytes.
    Invalid,
}

/// Find the first length-delimited message in `buf` without consuming it.
pub fn split_message(buf: &[u8], max: usize) -> Split {
    let mut len = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let Ok(len) = usize::try_from(len) else {
                return Split::Invalid;
            };
            if len > max {
                return Split::Invalid;
            }
            let start = i + 1;
            let end = start + len;
            return if buf.len() >= end {
                Split::Complete { start, end }
            } else {
                Split::Incomplete
            };
        }
    }
    if buf.len() >= 10 {
        Split::Invalid
    } else {
        Split::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{ControlRequest, Resize, control_request::Request};

    #[test]
    fn split_finds_message_only_when_complete() {
        let req = ControlRequest {
            request: Some(Request::Resize(Resize {
                rows: 40,
                cols: 120,
                exec_id: 0,
            })),
        };
        let bytes = req.encode_length_delimited_to_vec();
        for cut in 0..bytes.len() {
            assert_eq!(split_message(&bytes[..cut], 1024), Split::Incomplete);
        }
        let Split::Complete { start, end } = split_message(&bytes, 1024) else {
            panic!("expected a complete message");
        };
        assert_eq!(ControlRequest::decode(&bytes[start..end]).ok(), Some(req));
    }

    #[test]
    fn split_rejects_oversized_and_endless_prefixes() {
        assert_eq!(split_message(&[0xff, 0xff, 0x7f], 1024), Split::Invalid);
        assert_eq!(split_message(&[0xff; 12], usize::MAX), Split::Invalid);
    }

    #[test]
    fn read_message_round_trips_and_reports_eof() {
        let req = ControlRequest {
            request: Some(Request::Resize(Resize {
                rows: 1,
                cols: 2,
                exec_id: 0,
            })),
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &req).ok();
        let got: ControlRequest = read_message(&mut buf.as_slice(), 1024)
            .ok()
            .unwrap_or_default();
        assert_eq!(got, req);
        let half = &buf[..buf.len() - 1];
        assert!(matches!(
            read_message::<ControlRequest>(&mut &half[..], 1024),
            Err(FramingError::Closed)
        ));
    }
}
