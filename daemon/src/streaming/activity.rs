//! When a streaming connection last moved a byte, for the idle timeout.
//! Reads and writes both count: `tail -f` that only prints is not idle.
//! The codecs report traffic through [`pier_streamcodec::Activity`]; the
//! clock and the policy stay here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl pier_streamcodec::Activity for Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = self.start + last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use pier_streamcodec::Activity as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn touching_postpones_the_timeout() {
        let a = Activity::default();
        let limit = Duration::from_secs(10);
        tokio::time::sleep(Duration::from_secs(8)).await;
        a.touch();
        let began = Instant::now();
        a.idle_for(limit).await;
        assert_eq!(began.elapsed(), Duration::from_secs(10));
    }
}
