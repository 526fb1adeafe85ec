//! Layer unpacking: safety against crafted tars, whiteouts, links, metadata.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::TarLayer;
use pier_storage::fsops;
use pier_storage::unpack::{UnpackError, UnpackOptions, unpack};
use tar::EntryType;

fn unpack_into(tar: &[u8], dest: &Path) -> Result<(), UnpackError> {
    unpack(tar, dest, UnpackOptions::default())
}

fn expect_unsafe(result: Result<(), UnpackError>, needle: &str) {
    match result {
        Err(UnpackError::Unsafe { entry, reason }) => {
            assert!(
                entry.contains(needle) || reason.contains(needle),
                "unexpected: {entry:?}: {reason}"
            );
        }
        other => panic!("expected an unsafe entry error, got {other:?}"),
    }
}

#[test]
fn dotdot_entry_is_refused_and_writes_nothing_outside() {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let tar = TarLayer::new().file("../escaped", b"x").finish();
    expect_unsafe(unpack_into(&tar, &dest), "..");
    assert!(!outer.path().join("escaped").exists());

    let tar = TarLayer::new().file("a/../../escaped", b"x").finish();
    expect_unsafe(unpack_into(&tar, &dest), "..");
    assert!(!outer.path().join("escaped").exists());
}

#[test]
fn absolute_path_is_contained_in_the_layer() {
    let dest = tempfile::tempdir().unwrap();
    let name = format!("/tmp/pier-absolute-{}", std::process::id());
    let tar = TarLayer::new().file(&name, b"inside").finish();
    unpack_into(&tar, dest.path()).unwrap();
    assert_eq!(
        fs::read(dest.path().join(name.trim_start_matches('/'))).unwrap(),
        b"inside"
    );
    assert!(!Path::new(&name).exists());
}

#[test]
fn entry_through_a_symlink_pointing_out_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let tar = TarLayer::new()
        .symlink("escape", outside.path().to_str().unwrap())
        .file("escape/pwned", b"x")
        .finish();
    expect_unsafe(unpack_into(&tar, dest.path()), "symlink");
    assert!(common::list_dir(outside.path()).is_empty());

    // Relative symlinks climbing out are no different.
    let tar = TarLayer::new()
        .symlink("up", "../../../../..")
        .file("up/tmp/pwned", b"x")
        .finish();
    let dest = tempfile::tempdir().unwrap();
    expect_unsafe(unpack_into(&tar, dest.path()), "symlink");
}

#[test]
fn file_replacing_a_symlink_does_not_write_through_it() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"original").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let tar = TarLayer::new()
        .symlink("link", victim.to_str().unwrap())
        .file("link", b"replaced")
        .finish();
    unpack_into(&tar, dest.path()).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert_eq!(fs::read(dest.path().join("link")).unwrap(), b"replaced");
    assert!(
        !fs::symlink_metadata(dest.path().join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn hard_links_to_outside_targets_are_refused() {
    let dest = tempfile::tempdir().unwrap();
    let tar = TarLayer::new()
        .hardlink("passwd", "../../../../etc/passwd")
        .finish();
    expect_unsafe(unpack_into(&tar, dest.path()), "..");

    // An absolute target is looked up inside the layer, where it is missing.
    let tar = TarLayer::new().hardlink("passwd", "/etc/passwd").finish();
    expect_unsafe(unpack_into(&tar, dest.path()), "not a file of this layer");

    // Nor may a link target go through a symlink.
    let dest = tempfile::tempdir().unwrap();
    let tar = TarLayer::new()
        .symlink("etc", "/etc")
        .hardlink("passwd", "etc/passwd")
        .finish();
    expect_unsafe(unpack_into(&tar, dest.path()), "symlink");
    assert!(!dest.path().join("passwd").exists());
}

#[test]
fn hard_links_share_the_inode() {
    let dest = tempfile::tempdir().unwrap();
    let tar = TarLayer::new()
        .dir("bin")
        .file("bin/busybox", b"#!binary")
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("bin/ls", "./bin/busybox")
        .finish();
    unpack_into(&tar, dest.path()).unwrap();
    let a = fs::metadata(dest.path().join("bin/busybox")).unwrap();
    let b = fs::metadata(dest.path().join("bin/sh")).unwrap();
    let c = fs::metadata(dest.path().join("bin/ls")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 3));
    assert_eq!(a.ino(), c.ino());
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_opaque_dirs() {
    let dest = tempfile::tempdir().unwrap();
    let tar = TarLayer::new()
        .dir("etc")
        .file("etc/.wh.motd", b"")
        .dir("var/cache")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"n")
        .file(".wh..wh.plnk", b"")
        .finish();
    unpack_into(&tar, dest.path()).unwrap();
    let whiteout = fs::symlink_metadata(dest.path().join("etc/motd")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert!(!dest.path().join("etc/.wh.motd").exists());
    let opaque = fsops::lgetxattr(&dest.path().join("var/cache"), fsops::OPAQUE_XATTR).unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert!(dest.path().join("var/cache/new").exists());
    assert!(!dest.path().join("var/cache/.wh..wh..opq").exists());
    assert!(!dest.path().join(".wh..wh.plnk").exists());
}

#[test]
fn ownership_modes_mtimes_devices_and_xattrs_are_kept() {
    let dest = tempfile::tempdir().unwrap();
    let mut layer = TarLayer::new();
    let mut h = TarLayer::header_for("bin/su", EntryType::Regular, 2, 0o4755);
    h.set_uid(0);
    h.set_mtime(1_500_000_000);
    layer.dir("bin").raw(h, b"su");
    let mut h = TarLayer::header_for("home/app/data", EntryType::Regular, 1, 0o600);
    h.set_uid(1000);
    h.set_gid(1001);
    layer.raw(h, b"d");
    let mut h = TarLayer::header_for("ro", EntryType::Directory, 0, 0o555);
    h.set_mtime(1_400_000_000);
    layer.raw(h, &[]);
    let mut h = TarLayer::header_for("dev/null", EntryType::Char, 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    layer.raw(h, &[]);
    layer.raw(
        TarLayer::header_for("run/fifo", EntryType::Fifo, 0, 0o600),
        &[],
    );
    layer.symlink("bin/sh", "/bin/busybox");
    layer
        .pax(&[("SCHILY.xattr.user.pier", b"yes")])
        .file("tagged", b"t");
    unpack_into(&layer.finish(), dest.path()).unwrap();

    let su = fs::metadata(dest.path().join("bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(su.mtime(), 1_500_000_000);
    let data = fs::metadata(dest.path().join("home/app/data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o777),
        (1000, 1001, 0o600)
    );
    let ro = fs::metadata(dest.path().join("ro")).unwrap();
    assert_eq!((ro.mode() & 0o777, ro.mtime()), (0o555, 1_400_000_000));
    let null = fs::symlink_metadata(dest.path().join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(
        fs::symlink_metadata(dest.path().join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        fs::read_link(dest.path().join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    let xattr = fsops::lgetxattr(&dest.path().join("tagged"), "user.pier").unwrap();
    assert_eq!(xattr.as_deref(), Some(&b"yes"[..]));
}

#[test]
fn a_directory_entry_replaces_a_symlink_instead_of_following_it() {
    let outside = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let tar = TarLayer::new()
        .symlink("d", outside.path().to_str().unwrap())
        .dir("d")
        .file("d/f", b"inside")
        .finish();
    unpack_into(&tar, dest.path()).unwrap();
    assert!(dest.path().join("d/f").is_file());
    assert!(common::list_dir(outside.path()).is_empty());
}

#[test]
fn truncated_tar_is_a_read_error() {
    let dest = tempfile::tempdir().unwrap();
    let tar = TarLayer::new().file("big", &[7u8; 4096]).finish();
    let result = unpack_into(&tar[..1000], dest.path());
    assert!(matches!(result, Err(UnpackError::Read(_))), "{result:?}");
}

/// A layer as umoci 0.4 writes it: the stream stops right after the last
/// entry's data, with neither the padding to a block nor the end blocks.
fn unpadded(tar: &[u8], last_data_end: usize) -> &[u8] {
    &tar[..last_data_end]
}

#[test]
fn stream_ending_after_the_last_entrys_data_unpacks() {
    // dir header 0..512, file header 512..1024, data 1024..2024.
    let tar = TarLayer::new().dir("d").file("d/f", &[7u8; 1000]).finish();
    for cut in [2024, 2030, 2047] {
        let dest = tempfile::tempdir().unwrap();
        unpack_into(unpadded(&tar, cut), dest.path()).unwrap();
        assert_eq!(fs::read(dest.path().join("d/f")).unwrap(), [7u8; 1000]);
    }
    // Ending on a block boundary, without the end blocks, was always fine.
    let dest = tempfile::tempdir().unwrap();
    unpack_into(&tar[..2048], dest.path()).unwrap();
    assert_eq!(fs::metadata(dest.path().join("d/f")).unwrap().len(), 1000);
}

#[test]
fn stream_ending_inside_data_or_a_header_is_still_a_read_error() {
    let tar = TarLayer::new()
        .file("a", &[1u8; 100])
        .file("b", &[2u8; 1000])
        .finish();
    // a: header 0..512, data 512..612; b: header 1024..1536, data 1536..2536.
    for cut in [2535, 1600, 1536, 1100, 600] {
        let dest = tempfile::tempdir().unwrap();
        let result = unpack_into(&tar[..cut], dest.path());
        assert!(
            matches!(result, Err(UnpackError::Read(_))),
            "cut {cut}: {result:?}"
        );
    }
}

#[test]
fn blank_numeric_fields_read_as_zero() {
    let dest = tempfile::tempdir().unwrap();
    let mut h = TarLayer::header_for("f", EntryType::Regular, 1, 0o644);
    let old = h.as_old_mut();
    old.uid = [0; 8];
    old.gid = [0; 8];
    old.mtime = [0; 12];
    let tar = TarLayer::new().raw(h, b"x").finish();
    unpack_into(&tar, dest.path()).unwrap();
    assert_eq!(fs::read(dest.path().join("f")).unwrap(), b"x");
}
