//! Unpacking one layer tar into a directory of its own, converting OCI
//! whiteouts to the overlayfs form, without ever writing outside that
//! directory. The directory is private to the unpacker (a fresh temp dir),
//! so checking a path with lstat and then using it is not racy.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use tar::{Archive, EntryType};

use crate::fsops::{self, NodeKind};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const XATTR_PAX_PREFIX: &str = "SCHILY.xattr.";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {entry:?} is unsafe: {reason}")]
    Unsafe { entry: String, reason: String },
    /// Reading the archive failed: a malformed tar, or an error of the
    /// stream below it (decompression, digest, size bound).
    #[error("read layer: {0}")]
    Read(io::Error),
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

impl UnpackError {
    /// The I/O error behind this one, if any.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            Self::Read(e) | Self::Write { source: e, .. } => Some(e),
            Self::Unsafe { .. } => None,
        }
    }
}

/// What the unpacker may do beyond plain files.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// chown entries and create device nodes: only possible as root.
    pub privileged: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            privileged: fsops::is_privileged(),
        }
    }
}

/// Unpacks the tar stream `reader` into the existing, empty directory `dest`.
///
/// A stream may end right after its last entry's data, without the padding
/// to a 512-byte block and without the two zero blocks that close an
/// archive: umoci 0.4 writes layers that way, and Go's `archive/tar`
/// (containerd, CRI-O) reads them. Such an end is accepted. A stream that
/// ends anywhere else, inside an entry's data or inside a header, is still a
/// read error.
pub fn unpack(reader: impl Read, dest: &Path, opts: UnpackOptions) -> Result<(), UnpackError> {
    let end = StreamEnd::default();
    let mut archive = Archive::new(Counted {
        inner: reader,
        end: &end,
    });
    let mut unpacker = Unpacker {
        dest,
        opts,
        known_dirs: HashSet::new(),
        dirs: Vec::new(),
        buf: vec![0; 128 * 1024],
    };
    let mut padding = None;
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(_) if end.within(padding) => break,
            Err(e) => return Err(UnpackError::Read(e)),
        };
        padding = padding_of(&entry);
        unpacker.entry(entry)?;
    }
    // Directory times and modes last: writing into a directory changes its
    // mtime, and a read-only mode would stop an unprivileged unpacker.
    for (path, mode, mtime) in unpacker.dirs.iter().rev() {
        let wrap = |source| UnpackError::Write {
            path: path.clone(),
            source,
        };
        fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(wrap)?;
        fsops::set_mtime(path, *mtime).map_err(wrap)?;
    }
    Ok(())
}

/// How far the tar reader got into the stream, and whether the stream ended.
#[derive(Default)]
struct StreamEnd {
    read: Cell<u64>,
    ended: Cell<bool>,
}

impl StreamEnd {
    /// Whether the stream ended inside `padding`, the bytes between the
    /// last entry's data and the next block boundary: all of that entry's
    /// data arrived, and only filler is missing.
    fn within(&self, padding: Option<(u64, u64)>) -> bool {
        let read = self.read.get();
        padding.is_some_and(|(start, end)| self.ended.get() && start <= read && read < end)
    }
}

/// Where an entry's padding lies in the stream, as `[start, end)` offsets,
/// or `None` where its data fills whole blocks. GNU sparse entries report
/// their expanded size rather than the stored one, so they get none: an
/// archive that ends right after one must be complete.
fn padding_of<R: Read>(entry: &tar::Entry<'_, R>) -> Option<(u64, u64)> {
    if entry.header().entry_type().is_gnu_sparse() {
        return None;
    }
    let start = entry.raw_file_position().checked_add(entry.size())?;
    let end = start.checked_next_multiple_of(512)?;
    (start < end).then_some((start, end))
}

/// A reader that records into a [`StreamEnd`] how much it passed on.
struct Counted<'a, R> {
    inner: R,
    end: &'a StreamEnd,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.end.ended.set(true);
        }
        self.end.read.set(self.end.read.get() + n as u64);
        Ok(n)
    }
}

struct Unpacker<'a> {
    dest: &'a Path,
    opts: UnpackOptions,
    /// Relative paths checked to be real directories (not symlinks).
    known_dirs: HashSet<PathBuf>,
    /// Directories whose mode and mtime are applied at the end.
    dirs: Vec<(PathBuf, u32, i64)>,
    buf: Vec<u8>,
}

/// Turns a tar path into a relative path of normal components. `..` may only
/// climb back within the path; leading `/` and `.` are dropped, so an
/// absolute path is contained in the layer rather than refused.
fn clean(raw: &[u8]) -> Result<PathBuf, String> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err("path climbs out of the layer with ..".into());
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.iter().map(|p| OsStr::from_bytes(p)).collect())
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

impl Unpacker<'_> {
    fn unsafe_entry(raw: &[u8], reason: impl Into<String>) -> UnpackError {
        UnpackError::Unsafe {
            entry: lossy(raw),
            reason: reason.into(),
        }
    }

    fn write_err(&self, rel: &Path) -> impl FnOnce(io::Error) -> UnpackError + use<> {
        let path = self.dest.join(rel);
        move |source| UnpackError::Write { path, source }
    }

    /// Makes sure every component of `rel` is a real directory inside the
    /// layer, creating missing ones when `create`. A symlink on the way is
    /// refused: following it could lead anywhere.
    fn ensure_dir(&mut self, rel: &Path, raw: &[u8], create: bool) -> Result<(), UnpackError> {
        let mut current = PathBuf::new();
        for part in rel.components() {
            current.push(part);
            if self.known_dirs.contains(&current) {
                continue;
            }
            let full = self.dest.join(&current);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(Self::unsafe_entry(
                        raw,
                        format!("it goes through symlink {}", current.display()),
                    ));
                }
                Ok(_) => {
                    return Err(Self::unsafe_entry(
                        raw,
                        format!("{} is not a directory", current.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&full).map_err(self.write_err(&current))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Self::unsafe_entry(
                        raw,
                        format!("{} is not a file of this layer", current.display()),
                    ));
                }
                Err(e) => return Err(self.write_err(&current)(e)),
            }
            self.known_dirs.insert(current.clone());
        }
        Ok(())
    }

    /// Removes whatever is at `rel` so a new entry can take its place; an
    /// existing directory stays when the new entry is a directory too.
    fn clear(&mut self, rel: &Path, keep_dir: bool) -> Result<(), UnpackError> {
        let full = self.dest.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {
                if !keep_dir {
                    fs::remove_dir_all(&full).map_err(self.write_err(rel))?;
                    self.known_dirs.clear();
                }
            }
            Ok(_) => fs::remove_file(&full).map_err(self.write_err(rel))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.write_err(rel)(e)),
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let rel = clean(&raw).map_err(|reason| Self::unsafe_entry(&raw, reason))?;
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();

        if name == OPAQUE_MARKER {
            self.ensure_dir(&parent, &raw, true)?;
            let dir = self.dest.join(&parent);
            return fsops::set_opaque(&dir).map_err(self.write_err(&parent));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            // `.wh..wh.*` other than the opaque marker is aufs bookkeeping.
            if hidden.starts_with(WHITEOUT_PREFIX) {
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(Self::unsafe_entry(&raw, "whiteout of no name"));
            }
            self.ensure_dir(&parent, &raw, true)?;
            let target = parent.join(OsStr::from_bytes(hidden));
            self.clear(&target, false)?;
            let full = self.dest.join(&target);
            return fsops::make_whiteout(&full).map_err(self.write_err(&target));
        }

        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        let old = header.as_old();
        let uid = numeric(header.uid(), &old.uid)?;
        let gid = numeric(header.gid(), &old.gid)?;
        let mtime = numeric(header.mtime(), &old.mtime)? as i64;
        let device = (header.device_major(), header.device_minor());

        if rel.as_os_str().is_empty() {
            // The layer root itself: only a directory may describe it.
            if kind.is_dir() {
                self.dirs.push((self.dest.to_path_buf(), mode, mtime));
            }
            return Ok(());
        }
        self.ensure_dir(&parent, &raw, true)?;
        let full = self.dest.join(&rel);
        let wrap = self.write_err(&rel);

        match kind {
            EntryType::Directory => {
                self.clear(&rel, true)?;
                if !full.is_dir() {
                    fs::create_dir(&full).map_err(wrap)?;
                }
                self.known_dirs.insert(rel.clone());
                self.dirs.push((full.clone(), mode, mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(&rel, false)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&full)
                    .map_err(self.write_err(&rel))?;
                copy(&mut entry, &mut file, &mut self.buf).map_err(|e| match e {
                    CopyError::Read(e) => UnpackError::Read(e),
                    CopyError::Write(source) => UnpackError::Write {
                        path: full.clone(),
                        source,
                    },
                })?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Self::unsafe_entry(&raw, "symlink without target"))?
                    .into_owned();
                self.clear(&rel, false)?;
                // The target is stored as given: symlinks are never followed
                // while unpacking, and inside the container they resolve
                // against the container's root.
                symlink(OsStr::from_bytes(&target), &full).map_err(wrap)?;
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| Self::unsafe_entry(&raw, "hard link without target"))?
                    .into_owned();
                let target = clean(&target_raw)
                    .map_err(|reason| Self::unsafe_entry(&raw, format!("link target: {reason}")))?;
                if let Some(target_parent) = target.parent() {
                    self.ensure_dir(target_parent, &raw, false)?;
                }
                let target_full = self.dest.join(&target);
                match fs::symlink_metadata(&target_full) {
                    Ok(meta) if !meta.is_dir() => {}
                    _ => {
                        return Err(Self::unsafe_entry(
                            &raw,
                            format!(
                                "hard link target {} is not a file of this layer",
                                lossy(&target_raw)
                            ),
                        ));
                    }
                }
                if target == rel {
                    return Ok(());
                }
                self.clear(&rel, false)?;
                fs::hard_link(&target_full, &full).map_err(wrap)?;
                // A hard link shares the target's inode and metadata.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let node = match kind {
                    EntryType::Char => NodeKind::Char,
                    EntryType::Block => NodeKind::Block,
                    _ => NodeKind::Fifo,
                };
                if !self.opts.privileged && !matches!(node, NodeKind::Fifo) {
                    tracing::debug!(entry = %lossy(&raw), "skipping device node: not root");
                    return Ok(());
                }
                self.clear(&rel, false)?;
                let major = device.0.ok().flatten().unwrap_or(0) as u64;
                let minor = device.1.ok().flatten().unwrap_or(0) as u64;
                fsops::make_node(&full, node, mode, major, minor).map_err(wrap)?;
            }
            other => {
                tracing::debug!(entry = %lossy(&raw), kind = ?other, "skipping tar entry type");
                return Ok(());
            }
        }

        self.apply_metadata(&mut entry, &rel, kind, mode, uid, gid, mtime)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_metadata<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        kind: EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: i64,
    ) -> Result<(), UnpackError> {
        let full = self.dest.join(rel);
        if self.opts.privileged {
            std::os::unix::fs::lchown(&full, Some(uid as u32), Some(gid as u32))
                .map_err(self.write_err(rel))?;
        }
        if let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Read)? {
            for ext in extensions {
                let ext = ext.map_err(UnpackError::Read)?;
                let Some(name) = ext.key_bytes().strip_prefix(XATTR_PAX_PREFIX.as_bytes()) else {
                    continue;
                };
                if let Err(e) = fsops::lsetxattr(&full, OsStr::from_bytes(name), ext.value_bytes())
                {
                    // Filesystems differ in which namespaces they accept;
                    // a missing xattr must not fail an otherwise good pull.
                    tracing::debug!(path = %full.display(), xattr = %lossy(name), error = %e, "xattr not set");
                }
            }
        }
        if kind.is_dir() {
            return Ok(());
        }
        if !kind.is_symlink() {
            // After chown, which clears setuid/setgid bits.
            fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                .map_err(self.write_err(rel))?;
        }
        fsops::set_mtime(&full, mtime).map_err(self.write_err(rel))
    }
}

/// A numeric header field; a blank one (all NULs or spaces, as some tar
/// writers leave uid, gid or mtime) reads as 0, as Go's archive/tar does.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> Result<u64, UnpackError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(UnpackError::Read(e)),
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies keeping read and write errors apart: a read error is the layer's
/// fault (or the network's), a write error is the local disk's.
fn copy(from: &mut impl Read, to: &mut impl Write, buf: &mut [u8]) -> Result<(), CopyError> {
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
}

#[cfg(test)]
mod tests {
    use super::clean;
    use std::path::Path;

    #[test]
    fn clean_contains_absolute_and_refuses_escape() {
        assert_eq!(clean(b"/etc/passwd").unwrap(), Path::new("etc/passwd"));
        assert_eq!(clean(b"./a/../b/").unwrap(), Path::new("b"));
        assert!(clean(b"../x").is_err());
        assert!(clean(b"a/../../x").is_err());
        assert_eq!(clean(b"./").unwrap(), Path::new(""));
    }
}
