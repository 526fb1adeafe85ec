//! The monitor's log counters file ([`crate::files::LOG_STATS`]): what the
//! monitor wrote to the container's log, for the daemon's metrics.
//!
//! Three little-endian u64 after a version word, rewritten in place with one
//! `pwrite` at most once a second while output flows, and when it stops.
//! The daemon reads it whenever it refreshes its metrics, so the log path
//! itself pays nothing per record. A reader that catches a write half-done
//! sees a mix of two states of monotonic counters, each value still one the
//! monitor held; the next read sees the write whole.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const VERSION: u64 = 1;

/// Length of the file.
pub const LEN: usize = 32;

/// The counters of one container's log, since its monitor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Bytes written to the log file (records, with their prefixes).
    pub written_bytes: u64,
    /// Bytes of records that could not be written (disk full, I/O error).
    pub dropped_bytes: u64,
    /// Lines longer than the maximum line size, split into partial records.
    pub split_lines: u64,
}

impl LogStats {
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        for (slot, value) in out.chunks_exact_mut(8).zip([
            VERSION,
            self.written_bytes,
            self.dropped_bytes,
            self.split_lines,
        ]) {
            slot.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    /// `None` for a file of another version or length.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        if raw.len() != LEN {
            return None;
        }
        let mut words = raw
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()));
        if words.next()? != VERSION {
            return None;
        }
        Some(Self {
            written_bytes: words.next()?,
            dropped_bytes: words.next()?,
            split_lines: words.next()?,
        })
    }

    /// Writes the counters over the start of `file`.
    pub fn write_to(&self, file: &File) -> io::Result<()> {
        file.write_all_at(&self.encode(), 0)
    }

    /// Reads the counters file at `path`; `Ok(None)` when there is none or it
    /// is not one this version knows.
    pub fn read(path: &Path) -> io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut raw = [0u8; LEN];
        let mut read = 0;
        while read < LEN {
            match file.read_at(&mut raw[read..], read as u64)? {
                0 => break,
                n => read += n,
            }
        }
        Ok(Self::decode(&raw[..read]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log-stats");
        let file = File::create(&path).unwrap_or_else(|e| panic!("{e}"));
        let stats = LogStats {
            written_bytes: 1 << 40,
            dropped_bytes: 7,
            split_lines: 3,
        };
        stats.write_to(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(LogStats::read(&path).ok().flatten(), Some(stats));
    }

    #[test]
    fn refuses_other_versions_and_short_files() {
        let mut raw = LogStats::default().encode();
        raw[0] = 9;
        assert_eq!(LogStats::decode(&raw), None);
        assert_eq!(LogStats::decode(&raw[..16]), None);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            LogStats::read(&dir.path().join("none")).ok().flatten(),
            None
        );
    }
}
