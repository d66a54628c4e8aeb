//! Room on the state directory's filesystem: free space, and a small reserve file
//! (`<state dir>/.reserve`, [`RESERVE_BYTES`]) kept allocated so that the store can
//! still commit on a full disk. When SQLite reports the disk full (or cannot open its
//! `-wal`/`-shm` files), the store deletes the reserve and retries once; the reserve is
//! allocated again (with `fallocate`) when a store is opened or a sandbox is removed
//! while at least twice its size is free, so it never takes the last free bytes.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The reserve's size: enough for SQLite to open its WAL and shared memory and commit
/// a removal.
pub const RESERVE_BYTES: u64 = 8 << 20;

/// The reserve's file name in the state directory (not a sandbox, not a leftover).
pub const RESERVE_FILE: &str = ".reserve";

/// The reserve file of the state directory that holds `db`.
pub fn reserve_path(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new(".")).join(RESERVE_FILE)
}

/// Bytes an unprivileged process may still allocate on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into the struct we own; c is a valid C string.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Allocates the reserve at `path` if it is missing or short and at least twice its
/// size is free. Returns whether a full reserve is in place.
pub fn ensure(path: &Path) -> bool {
    let have = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if have >= RESERVE_BYTES {
        return true;
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if free_bytes(dir).unwrap_or(0) < 2 * RESERVE_BYTES {
        return false;
    }
    let Ok(mut f) = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
    else {
        return false;
    };
    // SAFETY: fallocate on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, RESERVE_BYTES as libc::off_t) };
    if r == 0 {
        return true;
    }
    // A filesystem without fallocate: write the bytes instead.
    let zeros = vec![0u8; 1 << 20];
    let written = (0..RESERVE_BYTES >> 20).try_for_each(|_| f.write_all(&zeros));
    if written.and_then(|()| f.sync_all()).is_ok() {
        return true;
    }
    let _ = std::fs::remove_file(path);
    false
}

/// Deletes the reserve, giving its space to whoever needs it now. Returns whether there
/// was one.
pub fn release(path: &Path) -> bool {
    let had = std::fs::remove_file(path).is_ok();
    if had {
        tracing::warn!(
            "the state directory's filesystem is full: released the {} MiB reserve {} so the \
             state store can commit; free space there",
            RESERVE_BYTES >> 20,
            path.display()
        );
    }
    had
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_allocated_released_and_reallocated() {
        let dir = std::env::temp_dir().join(format!("kiln-reserve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = reserve_path(&dir.join("kiln.db"));
        assert_eq!(p, dir.join(".reserve"));
        if free_bytes(&dir).unwrap() >= 2 * RESERVE_BYTES {
            assert!(ensure(&p));
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(m.len(), RESERVE_BYTES);
            // Allocated, not sparse.
            use std::os::unix::fs::MetadataExt;
            assert!(m.blocks() * 512 >= RESERVE_BYTES, "{} blocks", m.blocks());
            assert!(release(&p));
            assert!(!p.exists());
            assert!(!release(&p));
            assert!(ensure(&p));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
