//! Giving memory back to the node after bursts of work. glibc's allocator
//! keeps what a burst freed (the buffers of a pull, the many small
//! allocations of a hundred creates made at once) in its arenas, below
//! chunks still in use, where its own trimming of the heap's top never
//! reaches: a pierd that pulled images and filled a node sat at twice the
//! memory of one restarted on the same containers (25 MB against 12.5 MB
//! PSS, docs/benchmarks.md). Kubelet calls pierd every second, so there is
//! no quiet moment to wait for: every few seconds pierd asks how much free
//! memory the allocator holds and, past a threshold, has it returned.
//!
//! Other allocators (musl's) return memory on their own: there this is a
//! no-op.

use std::time::Duration;

/// How often the allocator's free memory is looked at.
const INTERVAL: Duration = Duration::from_secs(5);

/// Free memory held back by the allocator worth a trim.
const THRESHOLD: usize = 1 << 20;

/// glibc gives each thread that meets contention an arena of its own, up
/// to eight per core, and a chunk freed by another thread goes back to the
/// arena it came from: with tokio's blocking threads handing buffers to the
/// async workers, every arena ends up holding scattered free chunks that no
/// trim can return. Two arenas (one per async worker's side) keep that in
/// check; pierd's allocations are few and small next to its I/O. Call it
/// before any thread starts.
#[cfg(target_env = "gnu")]
pub fn limit_arenas() {
    // SAFETY: mallopt only changes the allocator's tuning; no thread
    // allocates concurrently this early.
    unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2) };
}

#[cfg(not(target_env = "gnu"))]
pub fn limit_arenas() {}

/// Runs for as long as pierd does.
pub async fn trim_periodically() {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A trim walks every arena: not on an async worker.
        let trimmed = tokio::task::spawn_blocking(|| trim_if_worth_it(THRESHOLD)).await;
        if let Ok(Some(freed)) = trimmed {
            tracing::debug!(
                held_free_bytes = freed,
                "returned free heap memory to the node"
            );
        }
    }
}

/// Trims when the allocator holds at least `threshold` free bytes; returns
/// how many it held.
#[cfg(target_env = "gnu")]
pub fn trim_if_worth_it(threshold: usize) -> Option<usize> {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { nix::libc::mallinfo2() };
    if info.fordblks < threshold {
        return None;
    }
    // SAFETY: malloc_trim releases free pages and takes the allocator's
    // locks like any malloc call; 0 keeps no extra pad at the heap top.
    unsafe { nix::libc::malloc_trim(0) };
    Some(info.fordblks)
}

#[cfg(not(target_env = "gnu"))]
pub fn trim_if_worth_it(_threshold: usize) -> Option<usize> {
    None
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident pages of this process, in bytes.
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    #[test]
    fn free_memory_below_a_live_chunk_goes_back() {
        // Held on one thread so they share one arena; the last one pins
        // the top, so freeing the rest leaves 64 MB free below it.
        let measured = std::thread::spawn(|| {
            let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![(i as u8) | 1; 4096]).collect();
            let pin = vec![1u8; 4096];
            drop(blocks);
            let before = resident();
            let held = trim_if_worth_it(THRESHOLD);
            let after = resident();
            drop(pin);
            (before, held, after)
        })
        .join()
        .unwrap_or_else(|_| panic!("the allocating thread panicked"));
        let (before, held, after) = measured;
        assert!(held.is_some_and(|h| h >= 60 << 20), "held {held:?}");
        assert!(
            before.saturating_sub(after) >= 48 << 20,
            "resident {before} -> {after}"
        );
        assert_eq!(trim_if_worth_it(usize::MAX), None, "under the threshold");
    }
}
