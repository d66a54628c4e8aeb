//! A jailed VMM cannot see `.snapshots/`: it writes a snapshot into `vm/snapshot-out/`,
//! and kiln moves what it wrote (regular files only) into the snapshot's folder and
//! takes it back from the jail's uid. A tampered file after that is caught by the seal
//! (its SHA-256, or its stamp, is checked before every restore).

use std::fs;
use std::os::unix::fs::{lchown, DirBuilderExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::state_dir::Dir;

/// An empty `vm/snapshot-out/` owned by `uid` (a stale one, from a killed snapshot, is
/// removed first).
pub fn prepare(dir: &Dir, uid: u32) -> Result<PathBuf> {
    let out = dir.vm().join("snapshot-out");
    match fs::remove_dir_all(&out) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::host_io("cannot remove", &out)(e))
        }
        _ => {}
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&out)
        .map_err(Error::host_io("cannot create", &out))?;
    lchown(&out, Some(uid), Some(uid)).map_err(Error::host_io("cannot give", &out))?;
    Ok(out)
}

/// Moves the files in `out` into `dest`, owned by kiln's user, and removes `out`.
pub fn collect(out: &Path, dest: &Path) -> Result<()> {
    // SAFETY: getters.
    let (me, my_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let rd = fs::read_dir(out).map_err(Error::host_io("cannot read", out))?;
    for e in rd {
        let e = e.map_err(Error::host_io("cannot read", out))?;
        let from = e.path();
        let m = fs::symlink_metadata(&from).map_err(Error::host_io("cannot read", &from))?;
        if !m.file_type().is_file() {
            return Err(Error::InvalidInput(format!(
                "the VMM left {} in its snapshot, which is not a regular file; the snapshot \
                 is refused",
                from.display()
            )));
        }
        let to = dest.join(e.file_name());
        fs::rename(&from, &to).map_err(Error::host_io("cannot move", &from))?;
        lchown(&to, Some(me), Some(my_gid)).map_err(Error::host_io("cannot take back", &to))?;
    }
    fs::remove_dir(out).map_err(Error::host_io("cannot remove", out))
}
