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
    let mut log = CriLog::open(Path::new("/dev/null"), 100, 0).unwrap_or_else(|e| panic!("{e}"));
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
