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
mod tests {
    use super::*;

    fn log_with(max_line: usize, max_size: u64) -> (tempfile::TempDir, CriLog) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = CriLog::open(&dir.path().join("sub/c.log"), max_line, max_size)
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, log)
    }

    fn contents(log: &CriLog) -> String {
        String::from_utf8_lossy(&fs::read(&log.path).unwrap_or_default()).into_owned()
    }

    const TS: &str = "1970-01-01T00:00:00.000000005Z";

    #[test]
    fn splits_lines_into_f_and_p_records() {
        let (_d, mut log) = log_with(4, 0);
        log.push(Stream::Stdout, b"ab\n\nabcdefghij\nabcd\nxy", 5);
        log.push(Stream::Stderr, b"z\n", 5);
        log.flush();
        let want = [
            "stdout F ab",
            "stdout F ",
            "stdout P abcd",
            "stdout P efgh",
            "stdout F ij",
            "stdout F abcd",
            "stdout P xy",
            "stderr F z",
        ]
        .iter()
        .map(|r| format!("{TS} {r}\n"))
        .collect::<String>();
        assert_eq!(contents(&log), want);
    }

    /// Whatever the reads and the maximum, the records give back each
    /// stream byte for byte, every newline as the end of an F record, and
    /// no record is longer than the maximum.
    #[test]
    fn records_rebuild_the_output_for_any_reads_and_maximum() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let max_line = 1 + next(20) as usize;
            let (_d, mut log) = log_with(max_line, 0);
            let mut sent: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..1 + next(30) {
                let stream = if next(3) == 0 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                let data: Vec<u8> = (0..next(60))
                    .map(|_| {
                        if next(8) == 0 {
                            b'\n'
                        } else {
                            b'a' + next(26) as u8
                        }
                    })
                    .collect();
                log.push(stream, &data, 5);
                sent[stream as usize].extend_from_slice(&data);
            }
            log.flush();
            let text = fs::read(&log.path).unwrap_or_default();
            let mut got: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
            for rec in text.split_inclusive(|&b| b == b'\n') {
                let rest = rec
                    .strip_prefix(format!("{TS} ").as_bytes())
                    .unwrap_or_else(|| panic!("round {round}: bad record {rec:?}"));
                let (stream, rest) = match rest.split_at(7) {
                    (b"stdout ", r) => (0, r),
                    (b"stderr ", r) => (1, r),
                    _ => panic!("round {round}: bad stream in {rec:?}"),
                };
                let (kind, content) = (rest[0], &rest[2..rest.len() - 1]);
                assert_eq!(rest[1], b' ');
                assert!(content.len() <= max_line, "round {round}: {rec:?}");
                assert!(!content.contains(&b'\n'), "round {round}: {rec:?}");
                got[stream].extend_from_slice(content);
                match kind {
                    b'F' => got[stream].push(b'\n'),
                    b'P' => {}
                    _ => panic!("round {round}: bad kind in {rec:?}"),
                }
            }
            assert_eq!(got, sent, "round {round}, max {max_line}");
        }
    }

    #[test]
    fn counts_written_and_split_into_the_stats_file() {
        let (d, mut log) = log_with(4, 0);
        let stats = d.path().join("log-stats");
        log.keep_stats(&stats).unwrap_or_else(|e| panic!("{e}"));
        log.push(Stream::Stdout, b"ab\nabcdefghij\n", 5);
        log.flush();
        // Within a second of the last write: not yet on disk.
        assert_eq!(
            LogStats::read(&stats).ok().flatten(),
            Some(LogStats::default())
        );
        log.release_buffers();
        let written = contents(&log).len() as u64;
        let want = LogStats {
            written_bytes: written,
            dropped_bytes: 0,
            split_lines: 1,
        };
        assert_eq!(LogStats::read(&stats).ok().flatten(), Some(want));
        // A second later, a flush writes the counters on its own.
        log.push(Stream::Stdout, b"x\n", 5 + STATS_EVERY_NS);
        log.flush();
        let got = LogStats::read(&stats).ok().flatten().unwrap_or_default();
        assert_eq!(got.written_bytes, contents(&log).len() as u64);
    }

    #[test]
    fn a_long_line_counts_once_however_the_reads_cut_it() {
        let (_d, mut log) = log_with(4, 0);
        // 3 + 3 bytes of one line over two reads, then its end: split once.
        log.push(Stream::Stdout, b"abc", 5);
        log.push(Stream::Stderr, b"xy\n", 5);
        log.push(Stream::Stdout, b"def", 5);
        log.push(Stream::Stdout, b"gh\nabcd\n", 5);
        assert_eq!(log.stats.split_lines, 1);
    }

    #[test]
    fn bytes_lost_to_a_full_disk_are_counted_and_marked_once_writes_succeed() {
        let (_d, mut log) = log_with(100, 0);
        log.push(Stream::Stdout, b"before\n", 5);
        log.flush();
        let real = log.file.take();
        log.file = Some(
            OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap_or_else(|e| panic!("{e}")),
        );
        log.push(Stream::Stdout, b"lost one\n", 5);
        log.flush();
        log.push(Stream::Stderr, b"lost two\n", 5);
        log.flush();
        let lost = 2 * (TS.len() as u64 + 10 + "lost one\n".len() as u64);
        assert_eq!(log.dropped(), lost);
        assert_eq!(log.stats.dropped_bytes, lost);
        log.file = real;
        log.push(Stream::Stdout, b"after\n", 5);
        log.flush();
        let text = contents(&log);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], format!("{TS} stdout F before"));
        assert!(
            lines[1].starts_with(&format!(
                "{TS} stderr F pier: {lost} bytes of log records were lost"
            )),
            "{text}"
        );
        assert!(lines[1].contains("No space left on device"), "{text}");
        assert_eq!(lines[2], format!("{TS} stdout F after"));
        assert_eq!(log.stats.written_bytes, text.len() as u64);
        // One marker per gap: the next write adds no other.
        log.push(Stream::Stdout, b"later\n", 5);
        log.flush();
        assert_eq!(contents(&log).matches("were lost").count(), 1);
    }

    /// Records of ten-byte lines until the file holds at least `bytes`, one
    /// flush per 66 kB of output, as the monitor flushes once per wakeup.
    fn fill(log: &mut CriLog, bytes: u64) {
        let chunk = b"0123456789\n".repeat(6000);
        while log.size < bytes {
            log.push(Stream::Stdout, &chunk, 5);
            log.flush();
        }
    }

    #[test]
    fn writeback_is_started_every_few_mib_as_the_log_grows() {
        let (_d, mut log) = log_with(100, 0);
        fill(&mut log, crate::writeback::EVERY / 2);
        assert_eq!(log.writeback.state(), (0, true));
        fill(&mut log, 2 * crate::writeback::EVERY + 1);
        let (started_to, on) = log.writeback.state();
        assert!(on, "writeback start failed on a regular file");
        // Started, and nothing older than the last few MiB is left for the
        // fsync at exit.
        assert!(
            started_to >= crate::writeback::EVERY
                && started_to + crate::writeback::EVERY > log.size
                && started_to <= log.size,
            "started to {started_to} of {}",
            log.size
        );
        // Rotation: the new file is counted from its own start.
        let rotated = log.path.with_extension("1");
        fs::rename(&log.path, &rotated).unwrap_or_else(|e| panic!("{e}"));
        log.reopen().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(log.writeback.state(), (0, true));
    }

    #[test]
    fn a_log_that_is_not_a_regular_file_gets_no_writeback_and_still_works() {
        let mut log =
            CriLog::open(Path::new("/dev/null"), 100, 0).unwrap_or_else(|e| panic!("{e}"));
        fill(&mut log, crate::writeback::EVERY + 1);
        assert!(!log.writeback.state().1);
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn passes_invalid_utf8_through_unchanged() {
        let (_d, mut log) = log_with(100, 0);
        log.push(Stream::Stdout, b"\xff\xfe\x00ok\n", 5);
        log.flush();
        let raw = fs::read(&log.path).unwrap_or_default();
        assert!(raw.ends_with(b"stdout F \xff\xfe\x00ok\n"));
    }

    #[test]
    fn reopen_after_rename_loses_and_repeats_nothing() {
        let (d, mut log) = log_with(100, 0);
        log.push(Stream::Stdout, b"one\n", 5);
        log.flush();
        let rotated = d.path().join("sub/c.log.1");
        fs::rename(&log.path, &rotated).unwrap_or_else(|e| panic!("{e}"));
        log.push(Stream::Stdout, b"two\n", 5);
        log.reopen().unwrap_or_else(|e| panic!("{e}"));
        log.push(Stream::Stdout, b"three\n", 5);
        log.flush();
        let old = fs::read_to_string(&rotated).unwrap_or_default();
        assert_eq!(old, format!("{TS} stdout F one\n{TS} stdout F two\n"));
        assert_eq!(contents(&log), format!("{TS} stdout F three\n"));
    }

    #[test]
    fn size_limit_keeps_the_newest_whole_records() {
        let (_d, mut log) = log_with(100, 400);
        for i in 0..40 {
            log.push(Stream::Stdout, format!("line {i:03}\n").as_bytes(), 5);
            log.flush();
        }
        let text = contents(&log);
        assert!(text.len() as u64 <= 400, "{}", text.len());
        assert!(text.ends_with(&format!("{TS} stdout F line 039\n")));
        // Starts on a record boundary.
        assert!(text.starts_with(TS), "{text}");
    }
}
