//! Timestamps as the CRI carries them: one clock for daemon and storage.

pub use pier_storage::time::now_ns;
