//! A small tmpfs a test mounts to run a part of the node out of space, and
//! unmounts (and removes) when dropped, also when the test fails.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tempfile::TempDir;

/// A tmpfs of a fixed size mounted on a temp dir of its own.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (rounded up to pages by the kernel).
    pub fn mount(bytes: u64) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pier-tmpfs")
            .tempdir_in("/tmp")
            .expect("tempdir for a tmpfs");
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={bytes},mode=0755").as_str()),
        )
        .expect("mount a tmpfs");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the tmpfs.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Changes the size in place: files stay, free space comes or goes.
    pub fn resize(&self, bytes: u64) {
        mount(
            None::<&str>,
            self.dir.path(),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={bytes}").as_str()),
        )
        .expect("resize the tmpfs");
    }

    /// Bytes in use and bytes free, as statfs reports them.
    pub fn usage(&self) -> (u64, u64) {
        let fs = nix::sys::statvfs::statvfs(self.dir.path()).expect("statvfs the tmpfs");
        let block = fs.fragment_size();
        let used = (fs.blocks() - fs.blocks_free()) * block;
        (used, fs.blocks_available() * block)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Mounts a test made inside it go with it.
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}
