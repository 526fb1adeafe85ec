//! What a connection tells its owner about traffic, and asks it about
//! idleness. The owner keeps the clock and the policy (what counts as idle
//! for how long); a connection reports every byte it moves either way and
//! ends once the owner says nothing has moved for the connection's limit.

use std::future::Future;
use std::time::Duration;

/// The owner's view of a connection's traffic, shared by its reading and
/// writing halves.
pub trait Activity: Send + Sync + 'static {
    /// Bytes moved, read or written.
    fn touch(&self);

    /// Resolves once nothing has moved for `limit`.
    fn idle_for(&self, limit: Duration) -> impl Future<Output = ()> + Send;
}

/// An [`Activity`] the tests drive by hand: it counts touches, remembers the
/// limit it was asked about, and is idle once told so.
#[cfg(test)]
pub(crate) mod manual {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio_util::sync::CancellationToken;

    use super::*;

    #[derive(Default)]
    pub struct Manual {
        touches: AtomicUsize,
        limit: Mutex<Option<Duration>>,
        idle: CancellationToken,
    }

    impl Manual {
        pub fn touches(&self) -> usize {
            self.touches.load(Ordering::Relaxed)
        }

        /// The limit the connection last waited on.
        pub fn limit(&self) -> Option<Duration> {
            *self.limit.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub fn go_idle(&self) {
            self.idle.cancel();
        }
    }

    impl Activity for Manual {
        fn touch(&self) {
            self.touches.fetch_add(1, Ordering::Relaxed);
        }

        async fn idle_for(&self, limit: Duration) {
            *self.limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit);
            self.idle.cancelled().await;
        }
    }
}
