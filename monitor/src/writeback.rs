//! When to start writing the CRI log back to disk while output flows.
//!
//! Left alone, a burst of output stays dirty in the page cache until the
//! kernel's flusher gets to it (30 s later, or once a tenth of memory is
//! dirty), and the fsync at exit, which comes before the exit file, then
//! waits for all of it: about 0.6 s per GB of log on a fast disk, seconds
//! on a slow one, all added to the time before the container's exit is
//! reported. Starting the writeback of every few MiB as they are written
//! (sync_file_range with SYNC_FILE_RANGE_WRITE: the I/O is queued, not
//! waited for) lets the disk work while the monitor drains, so the fsync
//! at exit finds only the last few MiB.
//!
//! Queueing still blocks when the disk's queue is full. A start that took
//! that long means the disk, not the monitor, is what limits the log; then
//! no writeback is started for a while, and what is written meanwhile is
//! left to the page cache and the kernel's flusher, as without this: a
//! burst of output must not be slowed to the disk's pace.

use std::time::{Duration, Instant};

/// Writeback is started once this much has been written since its last
/// start.
pub const EVERY: u64 = 8 << 20;
/// A start that blocked this long found the disk's queue full.
const SLOW: Duration = Duration::from_millis(20);
/// No writeback is started for this long after a slow start.
const PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Writeback {
    /// The file's bytes before this offset had their writeback started, or
    /// were left to the kernel.
    done_to: u64,
    paused_until: Option<Instant>,
    /// Starting failed on this file: no more tries until it is reopened.
    off: bool,
}

impl Writeback {
    /// For a file whose first `end` bytes are already there.
    pub fn new(end: u64) -> Self {
        Self {
            done_to: end,
            paused_until: None,
            off: false,
        }
    }

    /// The file was replaced or reopened, and is `end` bytes long.
    pub fn reset(&mut self, end: u64) {
        self.done_to = end;
        self.off = false;
    }

    /// Now that the file is `end` bytes long: the range (offset, length) to
    /// start writing back, if one is due. It counts as started.
    pub fn due(&mut self, end: u64, now: Instant) -> Option<(u64, u64)> {
        if self.off || end.saturating_sub(self.done_to) < EVERY {
            return None;
        }
        let from = std::mem::replace(&mut self.done_to, end);
        if self.paused_until.is_some_and(|until| now < until) {
            return None;
        }
        self.paused_until = None;
        Some((from, end - from))
    }

    /// The start of the range [`due`](Self::due) gave, begun at `began`,
    /// returned at `now`.
    pub fn took(&mut self, began: Instant, now: Instant) {
        if now.saturating_duration_since(began) >= SLOW {
            self.paused_until = Some(now + PAUSE);
        }
    }

    /// Starting the writeback failed: stop trying on this file.
    pub fn failed(&mut self) {
        self.off = true;
    }

    /// Where the next start will begin, and whether starts are on.
    #[cfg(test)]
    pub fn state(&self) -> (u64, bool) {
        (self.done_to, !self.off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ranges_are_due_every_few_mib_and_follow_each_other() {
        let t = Instant::now();
        let mut wb = Writeback::new(100);
        assert_eq!(wb.due(100 + EVERY - 1, t), None);
        assert_eq!(wb.due(100 + EVERY + 5, t), Some((100, EVERY + 5)));
        wb.took(t, t + MS);
        assert_eq!(wb.due(100 + 2 * EVERY, t), None);
        assert_eq!(
            wb.due(105 + 2 * EVERY, t + MS),
            Some((100 + EVERY + 5, EVERY))
        );
    }

    #[test]
    fn a_slow_start_leaves_the_next_second_to_the_kernel() {
        let t = Instant::now();
        let mut wb = Writeback::new(0);
        assert_eq!(wb.due(EVERY, t), Some((0, EVERY)));
        wb.took(t, t + SLOW);
        // Written during the pause: skipped, not caught up on later.
        assert_eq!(wb.due(2 * EVERY, t + SLOW + MS), None);
        assert_eq!(wb.due(3 * EVERY, t + SLOW + PAUSE - MS), None);
        let after = t + SLOW + PAUSE;
        assert_eq!(wb.due(4 * EVERY, after), Some((3 * EVERY, EVERY)));
        wb.took(after, after + SLOW - MS);
        assert_eq!(wb.due(5 * EVERY, after + SLOW), Some((4 * EVERY, EVERY)));
    }

    #[test]
    fn a_failure_stops_the_starts_until_the_file_is_reopened() {
        let t = Instant::now();
        let mut wb = Writeback::new(0);
        assert!(wb.due(EVERY, t).is_some());
        wb.failed();
        assert_eq!(wb.due(5 * EVERY, t), None);
        // Reopened (or trimmed) to a shorter file: counted from its end.
        wb.reset(10);
        assert_eq!(wb.due(9 + EVERY, t), None);
        assert_eq!(wb.due(10 + EVERY, t), Some((10, EVERY)));
    }
}
