//! Whether pods with their own user namespace can run on this node, found
//! by doing once, on scratch files, what such a pod needs: a user namespace
//! with mappings (through the namespace helper), idmapped clones of the
//! filesystems pier takes files from (the layer store, the run root, a
//! tmpfs like the pod's `/dev/shm` and kubelet's secret volumes), and an
//! overlay over idmapped lower layers. kubelet reads the answer in
//! `Status` and only then sends `hostUsers: false` pods.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use pier_storage::idmap;

use super::{IdMap, Mappings};
use crate::host::Host;
use crate::pinns::PinRequest;

/// Host ids for the probe's throwaway namespace: no process runs as them
/// once the probe is done.
const PROBE_HOST_ID: u32 = 1_000_000_000;

/// Runs the probe. `Err` says what is missing, for the log and for a
/// RunPodSandbox that asks anyway.
pub async fn probe(host: &dyn Host, root: &Path, runroot: &Path) -> Result<(), String> {
    if !idmap::mount_setattr_supported() {
        return Err("the kernel has no mount_setattr (idmapped mounts need Linux 5.12)".into());
    }
    for dir in [root.join("containers"), runroot.to_owned()] {
        searchable_by_others(&dir)?;
    }
    let scratch = runroot.join("userns-probe");
    // What an interrupted earlier probe left.
    release(&scratch);
    let range = IdMap::parse_arg(&format!("0:{PROBE_HOST_ID}:65536"))?;
    let mappings = Mappings {
        uids: range.clone(),
        gids: range,
    };
    let pin = scratch.join("userns");
    let request = PinRequest {
        user: Some(pin.clone()),
        uid_map: Some(mappings.uids.clone()),
        gid_map: Some(mappings.gids.clone()),
        ..Default::default()
    };
    let made = host
        .pin_namespaces(&request)
        .await
        .map_err(|e| format!("create a user namespace: {e}"));
    let checked = match made {
        Ok(_) => {
            let (root, scratch, pin) = (root.to_owned(), scratch.clone(), pin.clone());
            tokio::task::spawn_blocking(move || check_mounts(&root, &scratch, &pin))
                .await
                .map_err(|e| e.to_string())
                .and_then(|checked| checked)
        }
        Err(e) => Err(e),
    };
    host.unpin_namespace(&pin);
    let scratch_dir = scratch.clone();
    let _ = tokio::task::spawn_blocking(move || release(&scratch_dir)).await;
    checked
}

/// A pod's root is an unprivileged id on the node: runc, in the pod's user
/// namespace, must walk down to the rootfs and the staged mounts, and
/// `pier-infra` into its chroot.
fn searchable_by_others(dir: &Path) -> Result<(), String> {
    for ancestor in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "{} is not searchable by others (mode o+x), which a pod's root, an \
                 unprivileged id on the node, needs to reach {}",
                ancestor.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

fn check_mounts(root: &Path, scratch: &Path, pin: &Path) -> Result<(), String> {
    let userns = std::fs::File::open(pin).map_err(|e| format!("open {}: {e}", pin.display()))?;
    let userns = userns.as_fd();
    for source in [root.join("layers"), scratch.to_owned()] {
        idmap::clone_idmapped(&source, userns, false)
            .map_err(|e| format!("idmap {}: {e}", source.display()))?;
    }
    let dir = |name: &str| -> Result<PathBuf, String> {
        let path = scratch.join(name);
        std::fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(path)
    };
    let tmpfs = dir("tmpfs")?;
    mount(
        Some("tmpfs"),
        &tmpfs,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=64k"),
    )
    .map_err(|e| format!("mount a tmpfs at {}: {e}", tmpfs.display()))?;
    idmap::clone_idmapped(&tmpfs, userns, false).map_err(|e| {
        format!("idmap a tmpfs (Linux 6.3 and later), as for the pod's /dev/shm: {e}")
    })?;
    let (lower, view, merged) = (dir("lower")?, dir("view")?, dir("merged")?);
    dir("lower/a")?;
    dir("lower/b")?;
    idmap::mount_idmapped(&lower, &view, userns, false)
        .map_err(|e| format!("attach an idmapped mount at {}: {e}", view.display()))?;
    let options = format!(
        "lowerdir={}:{}",
        view.join("a").display(),
        view.join("b").display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .map_err(|e| format!("mount overlayfs over idmapped layers (Linux 5.19 and later): {e}"))
}

/// Unmounts and deletes the scratch directory. Only empty directories are
/// removed after their mounts are gone, never a tree: a mount left in
/// place must not have its contents deleted.
fn release(scratch: &Path) {
    for name in ["merged", "view", "tmpfs", "userns"] {
        let path = scratch.join(name);
        while umount2(&path, MntFlags::MNT_DETACH).is_ok() {}
    }
    for name in ["lower/a", "lower/b", "lower", "merged", "view", "tmpfs"] {
        let _ = std::fs::remove_dir(scratch.join(name));
    }
    let _ = std::fs::remove_file(scratch.join("userns"));
    let _ = std::fs::remove_dir(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_directory_on_the_way_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("private");
        let below = private.join("run");
        std::fs::create_dir_all(&below).expect("mkdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = searchable_by_others(&below).expect_err("0700 on the way");
        assert!(err.contains(&private.display().to_string()), "{err}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        // The temp dir's own parents (/tmp) are searchable.
        assert_eq!(searchable_by_others(&below), Ok(()));
    }
}
