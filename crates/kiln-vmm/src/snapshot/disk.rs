//! Copying disk layers without their holes: a snapshot keeps a copy of each writable
//! drive as it was at the paused instant, and every restore or fork child gets its own
//! copy of that. Only data extents move, so a 2 GiB scratch layer with a few MiB written
//! copies in milliseconds (and is reflinked where the filesystem can).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The data extents of `f` (offset, length) found with SEEK_DATA/SEEK_HOLE.
pub fn data_extents(f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: plain lseek on an fd the caller keeps open.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no more data.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        out.push((data as u64, (hole - data) as u64));
        pos = hole;
    }
    Ok(out)
}

/// Copies `len` bytes at `off` from `s` to the same offset of `d`: copy_file_range
/// (in-kernel, reflinks where the filesystem can), or read/write where it refuses
/// (different filesystems: EXDEV; old kernels: ENOSYS).
pub fn copy_range(s: &File, d: &File, mut off: u64, mut len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::new();
    while len > 0 {
        let (mut off_in, mut off_out) = (off as i64, off as i64);
        // SAFETY: the offsets point at our locals; both fds are open.
        let n = unsafe {
            libc::copy_file_range(
                s.as_raw_fd(),
                &mut off_in,
                d.as_raw_fd(),
                &mut off_out,
                len as usize,
                0,
            )
        };
        let n = if n > 0 {
            n as u64
        } else {
            let e = io::Error::last_os_error();
            if n == 0
                || !matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
                )
            {
                return Err(if n == 0 {
                    io::ErrorKind::UnexpectedEof.into()
                } else {
                    e
                });
            }
            buf.resize(len.min(1 << 20) as usize, 0);
            s.read_exact_at(&mut buf, off)?;
            d.write_all_at(&buf, off)?;
            buf.len() as u64
        };
        off += n;
        len -= n;
    }
    Ok(())
}

/// Copies `src` to a new file `dst` (never overwrites), keeping holes. On failure the
/// partial copy is removed.
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<u64> {
    // The drive was checked at its PUT; a FIFO put there since is refused, not waited on.
    let s = crate::host_file::open(src, false, crate::host_file::Accept::FileOrBlockDevice)?;
    let len = s.metadata()?.len();
    let d = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let result = (|| {
        d.set_len(len)?;
        let mut copied = 0;
        for (off, n) in data_extents(&s, len)? {
            copy_range(&s, &d, off, n)?;
            copied += n;
        }
        Ok(copied)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn copies_data_and_keeps_holes() {
        let dir = std::env::temp_dir().join(format!("kiln-vmm-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let mut f = File::create(&a).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let copied = sparse_copy(&a, &b).unwrap();
        assert!(copied < 1 << 20, "copied {copied} bytes of a sparse file");
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(sparse_copy(&a, &b).is_err(), "never overwrites");
        assert!(sparse_copy(&dir.join("missing"), &dir.join("c")).is_err());
        assert!(!dir.join("c").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
