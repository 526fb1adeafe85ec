//! The CRI log file: `<timestamp> <stdout|stderr> <F|P> <content>\n`.
//!
//! One timestamp per read(2). Each complete line becomes an `F` record; a
//! line longer than `max_line` becomes `P` pieces then an `F`; bytes of a
//! read that end without a newline become a `P` record at once (so output
//! left unterminated when the container exits is already in the log as `P`,
//! which is what kubelet's reader expects). Records are batched in one
//! buffer and written with few write(2) calls; never fsync'd on the hot path.
//! Their writeback is started every few MiB ([`crate::writeback`]), so the
//! fsync at exit waits for little.
//!
//! Counters of what was written, dropped and split go to the log counters
//! file ([`pier_proto::log_stats`]) at most once a second while output
//! flows, and when it stops: one pwrite, never one per record.
//!
//! Maximum file size (off by default): when a write takes the file past the
//! limit, the newest half of the limit is kept, starting at the first record
//! boundary, by copying it to a temp file renamed over the log. Readers
//! that reopen by path see the newest records; nothing is truncated to zero.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pier_proto::log_stats::LogStats;

use crate::sys::{self, memchr};
use crate::timestamp;
use crate::writeback::Writeback;

/// Records are written once this much is batched.
const FLUSH_AT: usize = 256 * 1024;

/// `<timestamp> <stdout|stderr> <F|P> `: what precedes a record's content.
const HEAD_LEN: usize = timestamp::LEN + 10;

/// Least time between two writes of the counters file while output flows.
const STATS_EVERY_NS: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

pub struct CriLog {
    path: PathBuf,
    file: Option<File>,
    out: Vec<u8>,
    max_line: usize,
    max_size: u64,
    size: u64,
    dropped: u64,
    failing: bool,
    /// Bytes dropped since the log last took a write, and why the first of
    /// them failed: what the marker written once writes succeed reports.
    lost: u64,
    lost_cause: String,
    /// The last write stopped inside a record.
    torn: bool,
    /// Per stream (stdout, stderr): bytes of the line still open across
    /// reads, and whether it was already counted as split. A line's length
    /// is its own, whatever the read boundaries that delivered it.
    open_line: [(usize, bool); 2],
    stats: LogStats,
    stats_file: Option<File>,
    /// Timestamp of the newest output, and of the last counters write.
    last_ts: i64,
    stats_written_ts: i64,
    stats_dirty: bool,
    writeback: Writeback,
}

impl CriLog {
    /// Open (create, append) the log at `path`, creating its directory.
    pub fn open(path: &Path, max_line: usize, max_size: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            out: Vec::new(),
            max_line: max_line.max(1),
            max_size,
            size,
            dropped: 0,
            failing: false,
            lost: 0,
            lost_cause: String::new(),
            torn: false,
            open_line: [(0, false); 2],
            stats: LogStats::default(),
            stats_file: None,
            last_ts: 0,
            stats_written_ts: 0,
            stats_dirty: false,
            writeback: Writeback::new(size),
        })
    }

    /// Keep the counters in `path` (created or truncated now). Without it
    /// the log works the same; only the daemon's metrics miss this log.
    pub fn keep_stats(&mut self, path: &Path) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        self.stats.write_to(&file)?;
        self.stats_file = Some(file);
        Ok(())
    }

    /// Bytes that could not be written (disk full, I/O error).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Write the counters file if anything changed since its last write.
    pub fn persist_stats(&mut self) {
        if !self.stats_dirty {
            return;
        }
        self.stats_dirty = false;
        self.stats_written_ts = self.last_ts;
        if let Some(file) = &self.stats_file
            && let Err(e) = self.stats.write_to(file)
        {
            crate::diag!("log counters: {e}");
            self.stats_file = None;
        }
    }

    /// Append the records for one read's worth of `data` from `stream`,
    /// stamped `ts_ns`.
    pub fn push(&mut self, stream: Stream, data: &[u8], ts_ns: i64) {
        if data.is_empty() {
            return;
        }
        // Every record of this read starts the same but for its F or P.
        let mut head = [b' '; HEAD_LEN];
        head[..timestamp::LEN].copy_from_slice(&timestamp::format(ts_ns));
        head[timestamp::LEN + 1..timestamp::LEN + 7].copy_from_slice(stream.tag());
        self.last_ts = ts_ns;
        let mut rest = data;
        while !rest.is_empty() {
            let (len, complete) = match memchr(b'\n', rest) {
                Some(i) => (i, true),
                None => (rest.len(), false),
            };
            let open = &mut self.open_line[stream as usize];
            open.0 = open.0.saturating_add(len);
            if open.0 > self.max_line && !open.1 {
                open.1 = true;
                self.stats.split_lines += 1;
                self.stats_dirty = true;
            }
            if complete {
                *open = (0, false);
            }
            let mut piece = &rest[..len];
            while piece.len() > self.max_line {
                let (part, tail) = piece.split_at(self.max_line);
                self.record(&mut head, b'P', part, false);
                piece = tail;
            }
            // An empty remainder after full-size pieces still ends the line;
            // its newline is copied with it.
            if complete {
                let end = len + 1;
                self.record(&mut head, b'F', &rest[end - 1 - piece.len()..end], true);
                rest = &rest[end..];
            } else {
                if !piece.is_empty() {
                    self.record(&mut head, b'P', piece, false);
                }
                rest = &[];
            }
        }
    }

    /// Append one record: `head` with its kind set, then `body`, which ends
    /// with the line's own newline when `has_newline`.
    fn record(&mut self, head: &mut [u8; HEAD_LEN], kind: u8, body: &[u8], has_newline: bool) {
        let need = HEAD_LEN + body.len() + 1;
        if self.out.len() + need > FLUSH_AT && !self.out.is_empty() {
            self.flush();
        }
        if self.out.capacity() == 0 {
            self.out.reserve(FLUSH_AT.max(need));
        }
        head[HEAD_LEN - 2] = kind;
        self.out.extend_from_slice(head);
        self.out.extend_from_slice(body);
        if !has_newline {
            self.out.push(b'\n');
        }
    }

    /// Write everything batched. On failure the batch is dropped and
    /// counted: a full disk must not stop the container or the monitor.
    /// The first write that succeeds afterwards is preceded by one marker
    /// record saying how many bytes were lost, so a reader of the log sees
    /// the gap.
    pub fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let mut res = Ok(());
        if self.lost > 0 {
            res = self.write_marker();
        }
        if res.is_ok() {
            let batch = std::mem::take(&mut self.out);
            res = self.write_all(&batch);
            self.out = batch;
        }
        self.stats_dirty = true;
        match res {
            Ok(()) => {
                self.stats.written_bytes += self.out.len() as u64;
                self.start_writeback();
                if self.failing {
                    self.failing = false;
                    crate::diag!("log {}: writes succeed again", self.path.display());
                }
            }
            Err(e) => {
                self.dropped += self.out.len() as u64;
                self.stats.dropped_bytes += self.out.len() as u64;
                if self.lost == 0 {
                    self.lost_cause = e.to_string();
                }
                self.lost += self.out.len() as u64;
                if !self.failing {
                    self.failing = true;
                    crate::diag!(
                        "log {}: write failed, dropping output: {e}",
                        self.path.display()
                    );
                }
            }
        }
        self.out.clear();
        if self.last_ts - self.stats_written_ts >= STATS_EVERY_NS {
            self.persist_stats();
        }
        if self.max_size > 0
            && self.size > self.max_size
            && let Err(e) = self.keep_newest()
        {
            crate::diag!(
                "log {}: cannot trim to the size limit: {e}",
                self.path.display()
            );
        }
    }

    /// Start the writeback of what the last flushes wrote, once enough has
    /// piled up.
    fn start_writeback(&mut self) {
        let Some(file) = &self.file else { return };
        let began = Instant::now();
        let Some((offset, len)) = self.writeback.due(self.size, began) else {
            return;
        };
        match sys::start_writeback(file, offset, len) {
            Ok(()) => self.writeback.took(began, Instant::now()),
            Err(e) => {
                // A log that is a pipe or a device has no pages to write back.
                if e.raw_os_error() != Some(libc::ESPIPE) {
                    crate::diag!(
                        "log {}: cannot start its writeback: {e}",
                        self.path.display()
                    );
                }
                self.writeback.failed();
            }
        }
    }

    /// The record that tells readers output is missing: written on the
    /// container's stderr stream, stamped with the newest output's time.
    fn write_marker(&mut self) -> io::Result<()> {
        let text = format!(
            "pier: {} bytes of log records were lost: the log could not be written ({})",
            self.lost, self.lost_cause
        );
        let mut record = Vec::with_capacity(HEAD_LEN + text.len() + 1);
        record.extend_from_slice(&timestamp::format(self.last_ts));
        record.extend_from_slice(b" stderr F ");
        record.extend_from_slice(text.as_bytes());
        record.push(b'\n');
        self.write_all(&record)?;
        self.stats.written_bytes += record.len() as u64;
        self.lost = 0;
        self.lost_cause.clear();
        Ok(())
    }

    /// Write `buf` whole; after a torn write (part of a batch went out
    /// before an error) start with a newline so the next record begins a
    /// line of its own and readers resynchronise.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("log file is not open"));
        };
        if self.torn {
            f.write_all(b"\n")?;
            self.size += 1;
            self.torn = false;
        }
        let mut done = 0;
        while done < buf.len() {
            match f.write(&buf[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    self.size += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.torn = done > 0;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Give the batch buffer back to the kernel while idle, and bring the
    /// counters file up to date.
    pub fn release_buffers(&mut self) {
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        self.persist_stats();
    }

    /// Reopen the log by path (after kubelet renamed it). Records already
    /// batched go to the old file first, so nothing is lost or repeated.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush();
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        self.writeback.reset(self.size);
        self.failing = false;
        self.torn = false;
        Ok(())
    }

    /// Flush and fsync once, at exit.
    pub fn finish(&mut self) {
        self.flush();
        self.persist_stats();
        if let Some(f) = &self.file
            && let Err(e) = f.sync_data()
        {
            crate::diag!("log {}: fsync at exit: {e}", self.path.display());
        }
    }

    /// Replace the file with its newest `max_size / 2` bytes, cut at a
    /// record boundary.
    fn keep_newest(&mut self) -> io::Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let len = file.metadata()?.len();
        let keep = self.max_size / 2;
        let mut start = len.saturating_sub(keep);
        if start > 0 {
            // Find the end of the record the cut falls in.
            let mut probe = vec![0u8; (self.max_line + 64).min(64 * 1024)];
            let n = file.read_at(&mut probe, start - 1)?;
            match memchr(b'\n', &probe[..n]) {
                Some(i) => start += i as u64,
                None => start = len,
            }
        }
        let tmp = self.path.with_extension("pier-trim");
        let mut dst = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut src = File::open(&self.path)?;
        src.seek(SeekFrom::Start(start))?;
        let copied = io::copy(&mut Read::by_ref(&mut src).take(len - start), &mut dst)?;
        drop(dst);
        fs::rename(&tmp, &self.path)?;
        self.file = Some(open_append(&self.path)?);
        self.size = copied;
        self.writeback.reset(copied);
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

#[cfg(test)]
mod tests;
