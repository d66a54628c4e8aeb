//! Keeping the state directory private: it and every file kiln keeps in it (the token,
//! `kiln.sock`, `kiln.db` and its `-wal`/`-shm`, the sandbox folders) belong to the user
//! running kiln and are not writable by anyone else. A directory kiln creates is made
//! 0700; one that exists is checked on what was opened (`lstat` for a symlink's owner,
//! then `fstat` on the open directory), and kiln refuses, rather than use or repair,
//! what another user owns or may write to. What the user owns but leaves readable to
//! others (an older kiln made the dir 0755 and `kiln.db` 0644) is tightened.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What to do, said by every refusal.
const FIX: &str = "set KILN_STATE_DIR to a directory you own";

/// Why the state directory or a file in it is refused.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("refusing {what} {}: it is owned by uid {owner} (mode {mode:o}), not by you (uid {uid}), so that user controls it; remove it, `chown {uid}` it if you trust it, or {FIX}", path.display())]
    NotOwned {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        mode: u32,
        uid: u32,
    },
    #[error("refusing {what} {}: its mode {mode:o} (owner uid {owner}) lets group or others write to it; `chmod {want:o}` it after checking nothing was planted in it, or {FIX}", path.display())]
    Writable {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        mode: u32,
        want: u32,
    },
    #[error("refusing {what} {}: it is not a {want} (owner uid {owner}, mode {mode:o}); remove it or {FIX}", path.display())]
    WrongKind {
        what: &'static str,
        path: PathBuf,
        want: &'static str,
        owner: u32,
        mode: u32,
    },
    #[error("cannot {what} {}: {source}; {FIX}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateDirError + 'a {
    move |source| StateDirError::Io {
        what,
        path: path.into(),
        source,
    }
}

/// The effective uid: the owner of every file this process creates.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no failure mode and touches no memory.
    unsafe { libc::geteuid() }
}

/// Creates `path` (mode 0700; missing parents with the default mode) unless it exists,
/// then checks it: a directory owned by this user that group and others cannot write
/// to. A symlink is followed only if this user owns it. Access for group/others is
/// removed from a directory the user owns.
pub fn ensure_private_dir(path: &Path) -> Result<(), StateDirError> {
    const WHAT: &str = "the state directory";
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("create the parent of", path))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io_err("create the state directory", path)(e))
        }
        _ => {}
    }
    let link = fs::symlink_metadata(path).map_err(io_err("inspect the state directory", path))?;
    if link.file_type().is_symlink() {
        check_owner("the state directory (a symlink)", path, &link)?;
    }
    // Opened, then checked on the descriptor: a swap after the lstat is caught here.
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ENOTDIR) => StateDirError::WrongKind {
                what: WHAT,
                path: path.into(),
                want: "directory",
                owner: link.uid(),
                mode: link.mode() & 0o7777,
            },
            _ => io_err("open the state directory", path)(source),
        })?;
    let meta = dir
        .metadata()
        .map_err(io_err("inspect the state directory", path))?;
    check_owner(WHAT, path, &meta)?;
    check_not_writable(WHAT, path, &meta, 0o700)?;
    if meta.mode() & 0o077 != 0 {
        dir.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7700))
            .map_err(io_err("chmod 700 the state directory", path))?;
    }
    Ok(())
}

/// Checks a file kiln keeps in the state directory (a missing one passes): owned by
/// this user (a symlink, too, and what it points to) and not writable by group or
/// others; access for group/others is removed when `tighten`, else refused.
pub fn check_private_file(
    what: &'static str,
    path: &Path,
    tighten: bool,
) -> Result<(), StateDirError> {
    let link = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    check_owner(what, path, &link)?;
    let meta = if link.file_type().is_symlink() {
        fs::metadata(path).map_err(io_err("inspect", path))?
    } else {
        link
    };
    check_owner(what, path, &meta)?;
    check_not_writable(what, path, &meta, 0o600)?;
    if meta.mode() & 0o077 != 0 && tighten {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7700))
            .map_err(io_err("chmod 600", path))?;
    }
    Ok(())
}

/// Refuses what another user owns.
pub fn check_owner(
    what: &'static str,
    path: &Path,
    meta: &fs::Metadata,
) -> Result<(), StateDirError> {
    let uid = euid();
    if meta.uid() == uid {
        return Ok(());
    }
    Err(StateDirError::NotOwned {
        what,
        path: path.into(),
        owner: meta.uid(),
        mode: meta.mode() & 0o7777,
        uid,
    })
}

fn check_not_writable(
    what: &'static str,
    path: &Path,
    meta: &fs::Metadata,
    want: u32,
) -> Result<(), StateDirError> {
    if meta.mode() & 0o022 == 0 {
        return Ok(());
    }
    Err(StateDirError::Writable {
        what,
        path: path.into(),
        owner: meta.uid(),
        mode: meta.mode() & 0o7777,
        want,
    })
}

/// Creates `path` empty with mode 0600 unless it exists (so that a file another
/// library creates there, such as SQLite's database, starts private).
pub fn create_private_file(path: &Path) -> io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
