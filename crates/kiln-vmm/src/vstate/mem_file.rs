//! Guest memory files (`memory.bin`): the regions of guest RAM concatenated in guest-address
//! order (region i starts at the sum of the lengths before it; size = total RAM), written
//! sparsely by [`dump`], identified by [`digest`] and [`stamp`], mapped back by [`map_private`].

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::host_file::{self, Accept};
use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress,
};

/// Page size of the digest definition; fixed so digests do not depend on the host.
const DIGEST_PAGE: usize = 4096;

/// Errors reading, writing or mapping guest memory files.
#[derive(Debug, thiserror::Error)]
pub enum MemFileError {
    #[error("memory file {path} already exists; snapshot into a new directory or remove it")]
    Exists { path: PathBuf },
    #[error("memory file {path} does not exist; the snapshot is incomplete, take it again")]
    Missing { path: PathBuf },
    #[error(
        "memory file {path} is {actual} bytes, the snapshot's memory layout needs {expected}; the snapshot is truncated or from another machine size"
    )]
    SizeMismatch {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("invalid guest memory layout ({0}); the snapshot's state.json is corrupt")]
    Layout(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot map memory file {path}: {source}; check the address-space limit (ulimit -v)")]
    Map {
        path: PathBuf,
        source: MmapRegionError,
    },
    #[error("cannot allocate guest memory: {0}; check the memory limit of the VMM process")]
    Alloc(#[source] vm_memory::mmap::FromRangesError),
    #[error("{op}: {source}")]
    Uffd { op: &'static str, source: io::Error },
    #[error("no working set is being recorded; restore with a working-set record path first")]
    NotRecording,
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl Fn(io::Error) -> MemFileError + Copy + 'a {
    move |source| MemFileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn missing_or<'a>(op: &'static str, path: &'a Path) -> impl Fn(io::Error) -> MemFileError + 'a {
    move |e| match e.kind() {
        ErrorKind::NotFound => MemFileError::Missing {
            path: path.to_path_buf(),
        },
        _ => io_err(op, path)(e),
    }
}

/// Opens a memory file for reading; a FIFO or device is refused without blocking (see
/// [`crate::host_file`]).
fn open_memory_file(path: &Path) -> Result<File, MemFileError> {
    host_file::open(path, false, Accept::File).map_err(missing_or("cannot open memory file", path))
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(ps).unwrap_or(4096)
}

pub(crate) fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// Data extents of `file` inside `[start, end)` (SEEK_DATA/SEEK_HOLE), clamped to the range.
/// A filesystem without SEEK_DATA support reports everything as data, which is still correct.
pub(crate) fn data_extents(file: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let seek = |pos: u64, whence| -> io::Result<Option<u64>> {
        let pos =
            libc::off_t::try_from(pos).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
        // SAFETY: lseek only moves the file position of a descriptor we own; we use pread/pwrite.
        match unsafe { libc::lseek(file.as_raw_fd(), pos, whence) } {
            -1 => match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
                e => Err(e),
            },
            n => Ok(Some(n as u64)),
        }
    };
    let (mut out, mut pos) = (Vec::new(), start);
    while pos < end {
        let Some(data) = seek(pos, libc::SEEK_DATA)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        out.push((data, hole));
        pos = hole.max(data + 1);
    }
    Ok(out)
}

/// Validates `ranges`, opens `path` read-only and checks its size is their sum; returns the file
/// and the total size. Regions must be non-empty, page-multiples, sorted and non-overlapping.
pub(crate) fn open_layout(
    path: &Path,
    ranges: &[(GuestAddress, usize)],
) -> Result<(File, u64), MemFileError> {
    let (ps, mut total, mut next) = (page_size() as u64, 0u64, 0u64);
    for &(addr, len) in ranges {
        let len = len as u64;
        let end = addr.0.checked_add(len);
        if len == 0
            || !len.is_multiple_of(ps)
            || !addr.0.is_multiple_of(ps)
            || addr.0 < next
            || end.is_none()
        {
            return Err(MemFileError::Layout(format!(
                "region {:#x}+{len:#x}",
                addr.0
            )));
        }
        (next, total) = (end.unwrap_or(u64::MAX), total.saturating_add(len));
    }
    if total == 0 {
        return Err(MemFileError::Layout("no memory regions".into()));
    }
    let file = open_memory_file(path)?;
    let actual = file
        .metadata()
        .map_err(io_err("cannot stat memory file", path))?
        .len();
    if actual != total {
        return Err(MemFileError::SizeMismatch {
            path: path.to_path_buf(),
            actual,
            expected: total,
        });
    }
    Ok((file, total))
}

/// Writes guest RAM to `path` (must not exist; created 0600) as a sparse file of exactly the
/// RAM size, and returns the number of bytes written.
///
/// Only pages that may hold non-zero data are written: pages mincore(2) reports resident, plus,
/// for a file-backed region (a VM restored with [`map_private`]), every page inside a data
/// extent of the backing file. Runs are coalesced into large pwrite(2) calls. No hashing: this
/// runs while the VM is paused. mincore cannot see swapped-out anonymous pages, so when the
/// host has swap enabled the other pages are read too and written unless all-zero. The kernel
/// reports every page of a file mapping resident unless this process could write the file
/// (owner or write permission): then all of it is written, correct but not sparse.
///
/// Memory served by userfaultfd must be completed first with
/// [`UffdMemory::populate_all`](super::uffd::UffdMemory::populate_all). The file is not
/// fsynced: sync it after resuming the VM if the snapshot must survive a host crash. On error
/// the partial file is removed.
pub fn dump(mem: &GuestMemoryMmap, path: &Path) -> Result<u64, MemFileError> {
    dump_inner(mem, path, swap_enabled())
}

fn swap_enabled() -> bool {
    // SAFETY: sysinfo fills the zeroed struct we pass and touches nothing else.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    let rc = unsafe { libc::sysinfo(&mut info) };
    rc != 0 || info.totalswap > 0
}

fn dump_inner(mem: &GuestMemoryMmap, path: &Path, scan: bool) -> Result<u64, MemFileError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    let file = file.map_err(|e| match e.kind() {
        ErrorKind::AlreadyExists => MemFileError::Exists {
            path: path.to_path_buf(),
        },
        _ => io_err("cannot create memory file", path)(e),
    })?;
    let res = write_regions(mem, &file, path, scan);
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

fn write_regions(
    mem: &GuestMemoryMmap,
    file: &File,
    path: &Path,
    scan: bool,
) -> Result<u64, MemFileError> {
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    file.set_len(total)
        .map_err(io_err("cannot size memory file", path))?;
    let (ps, wr) = (page_size(), io_err("cannot write memory file", path));
    let (mut file_off, mut written, mut buf) = (0u64, 0u64, Vec::new());
    for region in mem.iter() {
        let (base, len) = (region.as_ptr(), region.size());
        let pages = len.div_ceil(ps);
        // Bit 0 set: the page may hold data (resident, or file data), it is written as is.
        let mut keep = vec![0u8; pages];
        // SAFETY: base..base+len is this region's live mapping (kept alive by `mem`) and `keep`
        // has one byte per page, as mincore requires.
        if unsafe { libc::mincore(base.cast(), len, keep.as_mut_ptr()) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io_err(
                "mincore(2) on guest memory failed while writing",
                path,
            )(e));
        }
        if let Some(fo) = region.file_offset() {
            let end = fo.start() + len as u64;
            let ext = data_extents(fo.file(), fo.start(), end).map_err(io_err(
                "SEEK_DATA on the file backing",
                Path::new("guest memory"),
            ))?;
            for (a, b) in ext {
                let (a, b) = (
                    (a - fo.start()) as usize / ps,
                    ((b - fo.start()) as usize).div_ceil(ps),
                );
                keep[a..b].iter_mut().for_each(|k| *k |= 1);
            }
        }
        let mut p = 0;
        while p < pages {
            let (s, kept) = (p, keep[p] & 1 != 0);
            while p < pages && (keep[p] & 1 != 0) == kept {
                p += 1;
            }
            let (off, n) = (s * ps, (p * ps).min(len) - s * ps);
            if kept {
                pwrite_all(file, base as usize + off, n, file_off + off as u64).map_err(wr)?;
                written += n as u64;
            } else if scan {
                written += scan_write(region, file, off, n, file_off, &mut buf).map_err(wr)?;
            }
        }
        file_off += len as u64;
    }
    Ok(written)
}

/// Reads `[off, off+n)` of `region` in chunks and writes its non-zero pages.
fn scan_write(
    region: &GuestRegionMmap,
    file: &File,
    off: usize,
    n: usize,
    file_off: u64,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    let mut written = 0;
    for start in (off..off + n).step_by(1 << 20) {
        let len = (1 << 20).min(off + n - start);
        buf.resize(len, 0);
        region
            .read_slice(buf, MemoryRegionAddress(start as u64))
            .map_err(io::Error::other)?;
        for (i, page) in buf
            .chunks(DIGEST_PAGE)
            .enumerate()
            .filter(|(_, p)| !is_zero(p))
        {
            file.write_all_at(page, file_off + (start + i * DIGEST_PAGE) as u64)?;
            written += page.len() as u64;
        }
    }
    Ok(written)
}

fn pwrite_all(file: &File, mut addr: usize, mut len: usize, mut off: u64) -> io::Result<()> {
    while len > 0 {
        let pos =
            libc::off_t::try_from(off).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
        // SAFETY: addr..addr+len lies inside a live guest-memory mapping; the kernel only reads
        // it (a bad page fails the call with EFAULT instead of faulting this process).
        let n = unsafe { libc::pwrite(file.as_raw_fd(), addr as *const libc::c_void, len, pos) };
        match n {
            n if n > 0 => (addr, len, off) = (addr + n as usize, len - n as usize, off + n as u64),
            0 => return Err(ErrorKind::WriteZero.into()),
            _ if io::Error::last_os_error().kind() == ErrorKind::Interrupted => {}
            _ => return Err(io::Error::last_os_error()),
        }
    }
    Ok(())
}

/// The memory digest stored in `state.json` (lower-case hex SHA-256), defined on content only,
/// so holes and written zeros give the same digest:
///
/// the file is split into 4 KiB pages (the last one may be short); all-zero pages are skipped;
/// each maximal run of consecutive non-zero pages contributes the 48-byte record
/// `offset: u64 LE, length: u64 LE, SHA-256(run bytes)`; after the records comes the file size
/// as u64 LE. Only data extents (SEEK_DATA/SEEK_HOLE) are read.
pub fn digest(path: &Path) -> Result<String, MemFileError> {
    let file = open_memory_file(path)?;
    let rd = io_err("cannot read memory file", path);
    let size = file.metadata().map_err(rd)?.len();
    let (page, mut done) = (DIGEST_PAGE as u64, 0u64);
    let (mut outer, mut run) = (Sha256::new(), None::<(u64, u64, Sha256)>);
    let finish = |run: Option<(u64, u64, Sha256)>, outer: &mut Sha256| {
        if let Some((start, end, h)) = run {
            outer.update(start.to_le_bytes());
            outer.update((end - start).to_le_bytes());
            outer.update(h.finalize());
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    for (a, b) in data_extents(&file, 0, size).map_err(rd)? {
        let (mut pos, end) = (
            (a / page * page).max(done),
            b.div_ceil(page).saturating_mul(page).min(size),
        );
        while pos < end {
            let n = (buf.len() as u64).min(end - pos) as usize;
            file.read_exact_at(&mut buf[..n], pos).map_err(rd)?;
            for (i, chunk) in buf[..n].chunks(DIGEST_PAGE).enumerate() {
                let off = pos + (i * DIGEST_PAGE) as u64;
                if is_zero(chunk) {
                    finish(run.take(), &mut outer);
                } else if let Some((_, e, h)) = run.as_mut().filter(|r| r.1 == off) {
                    h.update(chunk);
                    *e += chunk.len() as u64;
                } else {
                    finish(run.take(), &mut outer);
                    run = Some((
                        off,
                        off + chunk.len() as u64,
                        Sha256::new_with_prefix(chunk),
                    ));
                }
            }
            pos += n as u64;
        }
        done = done.max(end);
    }
    finish(run.take(), &mut outer);
    outer.update(size.to_le_bytes());
    Ok(format!("{:x}", outer.finalize()))
}

/// A stamp of a file's identity, so a verified, unchanged file can be trusted without
/// re-hashing. Timestamps have the filesystem's granularity: a same-size rewrite within one
/// timestamp tick of the stamp may go unnoticed, so stamp only files that are done being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// Returns the [`FileStamp`] of `path` (following symlinks).
pub fn stamp(path: &Path) -> Result<FileStamp, MemFileError> {
    let m = std::fs::metadata(path).map_err(missing_or("cannot stat memory file", path))?;
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    Ok(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
    })
}

/// Maps `path` `MAP_PRIVATE` (lazy, copy-on-write; the page cache is shared between VMs restored
/// from the same file) as guest memory with the given ranges, read-write. The file must not be
/// modified or truncated while mapped. Refuses, with nothing mapped, a missing file, an invalid
/// layout, or a file whose size is not the sum of the ranges.
pub fn map_private(
    path: &Path,
    ranges: &[(GuestAddress, usize)],
) -> Result<GuestMemoryMmap, MemFileError> {
    let (file, _) = open_layout(path, ranges)?;
    let (file, mut off, mut regions) = (Arc::new(file), 0u64, Vec::with_capacity(ranges.len()));
    for &(addr, len) in ranges {
        let mapping = MmapRegionBuilder::new(len)
            .with_file_offset(FileOffset::from_arc(file.clone(), off))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_NORESERVE | libc::MAP_PRIVATE)
            .build()
            .map_err(|source| MemFileError::Map {
                path: path.to_path_buf(),
                source,
            })?;
        let region = GuestRegionMmap::new(mapping, addr);
        regions.push(
            region.ok_or_else(|| {
                MemFileError::Layout(format!("region at {:#x} overflows", addr.0))
            })?,
        );
        off += len as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemFileError::Layout(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests;
