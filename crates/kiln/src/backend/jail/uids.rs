//! One uid (and gid, the same number) per jailed sandbox, from a host-wide range, so no
//! two VMMs, even of different state dirs, can signal or ptrace each other.
//!
//! A lease is a file `<uid dir>/<uid>` naming the sandbox's `vm/` folder, and that
//! folder is owned by the uid. Both happen under one lock, so a lease whose folder is
//! gone or owned by someone else is stale and taken again; nothing needs cleaning up
//! after a crash. [`release`] gives the folder back to kiln when the VMM is gone.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::state_dir::Dir;

/// `KILN_JAIL_UIDS=LOW-HIGH`: the uids jailed VMMs get (default 900000000-900065535;
/// choose a range no user, container or subuid mapping uses).
pub const UID_RANGE_ENV: &str = "KILN_JAIL_UIDS";
const DEFAULT_RANGE: (u32, u32) = (900_000_000, 900_065_535);

fn uid_dir() -> PathBuf {
    std::env::var_os("KILN_JAIL_UID_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/kiln-jail-uids"))
}

fn range() -> Result<(u32, u32)> {
    let Ok(v) = std::env::var(UID_RANGE_ENV) else {
        return Ok(DEFAULT_RANGE);
    };
    let parsed = v
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    match parsed {
        Some((lo, hi)) if lo > 0 && lo <= hi && hi < i32::MAX as u32 => Ok((lo, hi)),
        _ => Err(Error::InvalidInput(format!(
            "{UID_RANGE_ENV}={v}: expected LOW-HIGH, 0 < LOW <= HIGH < 2^31"
        ))),
    }
}

/// The registry's lock, held while the file is open.
fn lock(dir: &Path) -> Result<fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::host_io("cannot create", dir))?;
    let path = dir.join(".lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::host_io("cannot open", &path))?;
    // SAFETY: flock on an fd we own; blocks until the other holder is done.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::host_io("cannot lock", &path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f)
}

fn owner(p: &Path) -> Option<u32> {
    fs::symlink_metadata(p).ok().map(|m| m.uid())
}

/// Leases a free uid for `dir` and gives it the `vm/` folder and what is in it.
pub fn allocate(dir: &Dir) -> Result<u32> {
    let (lo, hi) = range()?;
    let reg = uid_dir();
    let _held = lock(&reg)?;
    let vm = fs::canonicalize(dir.vm()).map_err(Error::host_io("cannot find", dir.vm()))?;
    let span = u64::from(hi - lo) + 1;
    // Start where the id hashes, so leases spread and a free one is found at once.
    let start = dir
        .path
        .to_string_lossy()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
        % span;
    for i in 0..span {
        let uid = lo + ((start + i) % span) as u32;
        let lease = reg.join(uid.to_string());
        if let Ok(named) = fs::read_to_string(&lease) {
            let named = Path::new(named.trim());
            if named != vm && owner(named) == Some(uid) {
                continue;
            }
        }
        let mut f = fs::File::create(&lease).map_err(Error::host_io("cannot write", &lease))?;
        writeln!(f, "{}", vm.display()).map_err(Error::host_io("cannot write", &lease))?;
        give(&vm, Some(uid))?;
        return Ok(uid);
    }
    Err(Error::InvalidInput(format!(
        "every uid of {UID_RANGE_ENV} ({lo}-{hi}) is in use by a jailed sandbox; \
         remove sandboxes or widen the range"
    )))
}

/// Gives `vm` and its entries to `uid` (None: back to this process's user).
fn give(vm: &Path, uid: Option<u32>) -> Result<()> {
    // SAFETY: getters.
    let (me, my_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (u, g) = uid.map_or((me, my_gid), |u| (u, u));
    let mut paths = vec![vm.to_path_buf()];
    if let Ok(rd) = fs::read_dir(vm) {
        paths.extend(rd.flatten().map(|e| e.path()));
    }
    for p in paths {
        // lchown: a symlink the jailed user left is changed, never what it points to.
        match std::os::unix::fs::lchown(&p, Some(u), Some(g)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::host_io("cannot change the owner of", &p)(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The VMM of `dir` is gone: its `vm/` folder goes back to kiln and its uid is free.
pub fn release(dir: &Dir) {
    let Some(uid) = super::uid_of(dir) else {
        return;
    };
    let reg = uid_dir();
    let Ok(_held) = lock(&reg) else {
        return;
    };
    let _ = give(&dir.vm(), None);
    let lease = reg.join(uid.to_string());
    let vm = fs::canonicalize(dir.vm()).unwrap_or_else(|_| dir.vm());
    if fs::read_to_string(&lease).is_ok_and(|n| Path::new(n.trim()) == vm) {
        let _ = fs::remove_file(lease);
    }
}
