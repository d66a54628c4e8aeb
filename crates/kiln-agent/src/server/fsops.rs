//! Filesystem metadata operations: mkdir, list_dir, stat, remove, rename.
//!
//! Paths are absolute guest paths (a relative one is taken from `/`); symlinks are
//! not followed by stat, list_dir or remove. Every error reply carries the request
//! path it is about and the kind its errno maps to.

use std::ffi::CString;
use std::fs::{self, DirBuilder, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use kiln_proto::{DirEntry, ErrorReply, FileKind, FileStat, Reply};

use super::routes::Op;
use super::sys::{errno_error, invalid, io_error};

/// A request path as a filesystem path: non-empty, without NUL, from `/`.
pub fn req_path(p: &str) -> Result<PathBuf, ErrorReply> {
    if p.is_empty() {
        return Err(invalid("empty path", Some(p)));
    }
    if p.contains('\0') {
        return Err(invalid("path contains a NUL byte", Some(p)));
    }
    Ok(Path::new("/").join(p))
}

pub fn file_stat(m: &Metadata) -> FileStat {
    let t = m.file_type();
    let kind = if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileStat {
        kind,
        size: m.len(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
    }
}

/// `mkdir -p dir` with `mode` for the directories it creates. An existing
/// non-directory is ENOTDIR where a parent is expected and EEXIST as `dir` itself.
/// Returns whether `dir` itself was created.
pub fn mkdir_p(dir: &Path, mode: u32) -> Result<bool, i32> {
    let mut prefix = PathBuf::new();
    let comps: Vec<Component> = dir.components().collect();
    let mut created_last = false;
    for (i, c) in comps.iter().enumerate() {
        prefix.push(c);
        if matches!(
            c,
            Component::RootDir | Component::CurDir | Component::ParentDir
        ) {
            continue;
        }
        let last = i + 1 == comps.len();
        let cpath = CString::new(prefix.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
        // SAFETY: cpath is NUL-terminated.
        if unsafe { libc::mkdir(cpath.as_ptr(), mode) } == 0 {
            created_last = last;
            continue;
        }
        let e = crate::console::errno();
        match fs::metadata(&prefix) {
            // Exists as a directory (or a link to one): fine, whatever mkdir said.
            Ok(m) if m.is_dir() => created_last = false,
            Ok(_) if last => return Err(libc::EEXIST),
            Ok(_) => return Err(libc::ENOTDIR),
            Err(_) => return Err(e),
        }
    }
    Ok(created_last)
}

pub fn mkdir(op: Op, path: &str, parents: bool, mode: Option<u32>) {
    let result = (|| {
        let p = req_path(path)?;
        let bits = mode.unwrap_or(0o755) & 0o7777;
        let created = if parents {
            mkdir_p(&p, bits).map_err(|e| errno_error(e, "mkdir", path))?
        } else {
            DirBuilder::new()
                .mode(bits)
                .create(&p)
                .map_err(|e| io_error(&e, "mkdir", path))?;
            true
        };
        // An explicit mode is exact (the umask does not apply).
        if created && mode.is_some() {
            fs::set_permissions(&p, fs::Permissions::from_mode(bits))
                .map_err(|e| io_error(&e, "chmod", path))?;
        }
        Ok(Reply::Done)
    })();
    finish(op, result)
}

pub fn list_dir(op: Op, path: &str) {
    let result = (|| {
        let p = req_path(path)?;
        let rd = fs::read_dir(&p).map_err(|e| io_error(&e, "list", path))?;
        let mut entries = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| io_error(&e, "list", path))?;
            // An entry removed since readdir is simply not listed.
            let Ok(m) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            entries.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                stat: file_stat(&m),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Reply::Entries { entries })
    })();
    finish(op, result)
}

pub fn stat(op: Op, path: &str) {
    let result = req_path(path).and_then(|p| {
        fs::symlink_metadata(&p)
            .map(|m| Reply::Stat(file_stat(&m)))
            .map_err(|e| io_error(&e, "stat", path))
    });
    finish(op, result)
}

pub fn remove(op: Op, path: &str, recursive: bool) {
    let result = (|| {
        let p = req_path(path)?;
        if p == Path::new("/") {
            return Err(invalid("refusing to remove /", Some(path)));
        }
        let m = fs::symlink_metadata(&p).map_err(|e| io_error(&e, "remove", path))?;
        let r = match (m.is_dir(), recursive) {
            (true, true) => fs::remove_dir_all(&p),
            (true, false) => fs::remove_dir(&p),
            (false, _) => fs::remove_file(&p),
        };
        r.map_err(|e| match e.raw_os_error() {
            // Some filesystems say EEXIST for a non-empty directory.
            Some(libc::EEXIST) if m.is_dir() => errno_error(libc::ENOTEMPTY, "remove", path),
            _ => io_error(&e, "remove", path),
        })?;
        Ok(Reply::Done)
    })();
    finish(op, result)
}

pub fn rename(op: Op, from: &str, to: &str) {
    let result = (|| {
        let (f, t) = (req_path(from)?, req_path(to)?);
        fs::rename(&f, &t).map_err(|e| {
            // Blame the source if it is missing, else the destination.
            let path = if fs::symlink_metadata(&f).is_err() {
                from
            } else {
                to
            };
            io_error(&e, &format!("rename {from} to {to}"), path)
        })?;
        Ok(Reply::Done)
    })();
    finish(op, result)
}

/// Sends the final reply of a one-shot operation.
pub fn finish(op: Op, result: Result<Reply, ErrorReply>) {
    match result {
        Ok(r) => op.finish(r),
        Err(e) => op.fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_p_reports_enotdir_for_a_file_in_the_way() {
        let base = std::env::temp_dir().join(format!("kiln-fsops-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        assert_eq!(mkdir_p(&base.join("a/b"), 0o755), Ok(true));
        assert_eq!(mkdir_p(&base.join("a/b"), 0o755), Ok(false));
        assert_eq!(mkdir_p(&base.join("a/b/"), 0o755), Ok(false));
        fs::write(base.join("f"), b"").unwrap();
        assert_eq!(mkdir_p(&base.join("f/x"), 0o755), Err(libc::ENOTDIR));
        assert_eq!(mkdir_p(&base.join("f"), 0o755), Err(libc::EEXIST));
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn request_paths() {
        assert_eq!(req_path("/a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(req_path("a/b").unwrap(), PathBuf::from("/a/b"));
        assert!(req_path("").is_err());
        assert!(req_path("a\0b").is_err());
    }
}
