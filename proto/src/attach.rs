//! Attach framing: what flows on a control connection after an `Attach`
//! request was answered with `Ok`.
//!
//! Every frame is `kind: u8`, `len: u32 big endian`, then `len` bytes.
//! Monitor → client: [`STDOUT`], [`STDERR`] (raw container output, unchanged
//! bytes), and one final [`EXIT`] (payload: the exit code as i32 big endian)
//! before the monitor closes the connection when the container exits.
//! Client → monitor: [`STDIN`] (bytes for the container's stdin) and
//! [`STDIN_CLOSE`] (empty: close the container's stdin, for `stdinOnce`).
//! A client that stops reading is disconnected once its queue passes the
//! monitor's bound; it never slows the container or the log.

use std::io::{self, Read, Write};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const STDIN_CLOSE: u8 = 4;

/// Frame header length.
pub const HEADER: usize = 5;
/// Largest payload either side sends in one frame.
pub const FRAME_MAX: usize = 64 << 10;

/// Header bytes for a frame of `kind` carrying `len` bytes.
pub fn header(kind: u8, len: usize) -> [u8; HEADER] {
    let l = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

/// Write one frame (blocking).
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    for chunk in payload.chunks(FRAME_MAX) {
        w.write_all(&header(kind, chunk.len()))?;
        w.write_all(chunk)?;
    }
    if payload.is_empty() {
        w.write_all(&header(kind, 0))?;
    }
    w.flush()
}

/// Read one frame (blocking); `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > FRAME_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "attach frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((h[0], payload)))
}
