//! The userfaultfd memory backend: guest RAM starts empty (anonymous, registered MISSING) and a
//! handler thread fills each page from the memory file on first touch, after an optional
//! prefetch of a recorded working set. Raw ioctls (linux/userfaultfd.h) rather than the
//! `userfaultfd` crate: four small structs, and no extra dependency in the jailed VMM.
//!
//! KVM reaches guest memory through get_user_pages, which faults through the userfaultfd too:
//! the handler must be running (it is once [`map_uffd`] returns) before vCPUs start or devices
//! touch memory, and the [`UffdMemory`] must outlive every use of the guest memory (once it is
//! dropped, pages never served read as zeros).

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vm_memory::mmap::{MmapRegion, MmapRegionBuilder};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

mod sys;

use super::mem_file::{data_extents, io_err, open_layout, page_size, MemFileError};
use crate::host_file::{self, Accept};
use sys::*;

/// A fault is served with the aligned block around it (clamped to the region): sequential
/// access takes 16x fewer faults, for a few neighbouring pages populated early.
const FAULT_BLOCK: u64 = 64 << 10;

/// One registered region: host address, length, offset in the memory file.
struct Region {
    host: u64,
    len: u64,
    off: u64,
}

struct Shared {
    uffd: File,
    /// The memory file mapped read-only: the source of UFFDIO_COPY.
    src: MmapRegion,
    regions: Vec<Region>,
    /// Page-aligned, merged data extents of the memory file; the rest reads as zeros.
    data: Vec<(u64, u64)>,
    page: u64,
    faults: AtomicU64,
    prefetched: AtomicU64,
    /// Working-set file and a bitmap of the pages touched since start.
    record: Option<(PathBuf, Mutex<Vec<u64>>)>,
    save_lock: Mutex<()>,
}

impl Shared {
    /// Places `[off, off+len)` of the file at `dst` (page-aligned, inside one region).
    fn place(&self, zero: bool, dst: u64, off: u64, len: u64) -> io::Result<()> {
        let (fd, mut done, mut stalls) = (self.uffd.as_raw_fd(), 0u64, 0u32);
        while done < len {
            let (start, n) = (dst + done, len - done);
            let (res, moved) = if zero {
                let mut a = UffdioZeropage {
                    range: UffdioRange { start, len: n },
                    ..Default::default()
                };
                // SAFETY: UFFDIO_ZEROPAGE takes a struct uffdio_zeropage.
                (unsafe { ioctl(fd, UFFDIO_ZEROPAGE, &mut a) }, a.zeropage)
            } else {
                let src = self.src.as_ptr() as u64 + off + done;
                let mut a = UffdioCopy {
                    dst: start,
                    src,
                    len: n,
                    ..Default::default()
                };
                // SAFETY: UFFDIO_COPY takes a struct uffdio_copy; `src` lies in our file mapping.
                (unsafe { ioctl(fd, UFFDIO_COPY, &mut a) }, a.copy)
            };
            let Err(e) = res else { return Ok(()) };
            match e.raw_os_error() {
                Some(libc::EAGAIN) if moved > 0 => (done, stalls) = (done + moved as u64, 0),
                Some(libc::EAGAIN) if stalls < 1000 => {
                    stalls += 1;
                    std::thread::yield_now();
                }
                Some(libc::EEXIST) => done += self.page, // the first page is already there
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// Fills `[off, off+len)` of region `r`: data by copy, holes by zero page if `holes`.
    fn fill(&self, r: &Region, off: u64, len: u64, holes: bool) -> io::Result<()> {
        let (mut pos, end) = (off, off + len);
        while pos < end {
            let i = self.data.partition_point(|&(_, b)| b <= pos);
            let (data, next) = match self.data.get(i) {
                Some(&(a, b)) if a <= pos => (true, b.min(end)),
                Some(&(a, _)) => (false, a.min(end)),
                None => (false, end),
            };
            if data || holes {
                self.place(!data, r.host + (pos - r.off), pos, next - pos)?;
            }
            pos = next;
        }
        Ok(())
    }

    /// Fills the file range `[off, off+len)`, which may span regions.
    fn fill_file(&self, off: u64, len: u64, holes: bool) -> io::Result<()> {
        for r in &self.regions {
            let (s, e) = (off.max(r.off), (off + len).min(r.off + r.len));
            if s < e {
                self.fill(r, s, e - s, holes)?;
            }
        }
        Ok(())
    }

    fn mark(&self, off: u64, len: u64) {
        if let Some((_, bits)) = &self.record {
            let mut bits = bits.lock().unwrap_or_else(|p| p.into_inner());
            for p in off / self.page..(off + len) / self.page {
                if let Some(w) = bits.get_mut((p / 64) as usize) {
                    *w |= 1 << (p % 64);
                }
            }
        }
    }

    fn on_fault(&self, addr: u64) {
        let Some(r) = self
            .regions
            .iter()
            .find(|r| addr >= r.host && addr - r.host < r.len)
        else {
            tracing::warn!("userfaultfd: ignored a fault at {addr:#x}, outside guest memory");
            return;
        };
        let rel = (addr - r.host) & !(FAULT_BLOCK.max(self.page) - 1);
        let len = FAULT_BLOCK.max(self.page).min(r.len - rel);
        // Counted and marked first: the faulting thread runs on as soon as its page is in.
        self.faults.fetch_add(1, Relaxed);
        self.mark(r.off + rel, len);
        if let Err(e) = self.fill(r, r.off + rel, len, true) {
            tracing::error!(
                "userfaultfd: cannot serve file offset {:#x}: {e}",
                r.off + rel
            );
        }
    }

    fn save(&self) -> Result<usize, MemFileError> {
        let Some((path, bits)) = &self.record else {
            return Err(MemFileError::NotRecording);
        };
        let _guard = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        let words = bits.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Vec::new();
        for (i, mut w) in words.into_iter().enumerate() {
            while w != 0 {
                out.extend_from_slice(
                    &((i as u64 * 64 + u64::from(w.trailing_zeros())) * self.page).to_le_bytes(),
                );
                w &= w - 1;
            }
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NONBLOCK) // a planted FIFO fails, never blocks
                .open(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err("cannot write working-set file", path)(e)
        })?;
        Ok(out.len() / 8)
    }

    /// Copies in the pages listed in the working-set file; unaligned or out-of-range offsets are
    /// ignored, and an unreadable file only costs the prefetch.
    fn prefetch(&self, path: &Path) -> Result<(), MemFileError> {
        let total: u64 = self.regions.iter().map(|r| r.len).sum();
        let mut raw = Vec::new();
        let read = host_file::open(path, false, Accept::File)
            .and_then(|f| f.take((total / self.page) * 8).read_to_end(&mut raw));
        if let Err(e) = read {
            tracing::warn!("working set {} not prefetched: {e}", path.display());
            return Ok(());
        }
        let mut offs: Vec<u64> = (raw
            .chunks_exact(8)
            .filter_map(|c| c.try_into().ok())
            .map(u64::from_le_bytes))
        .filter(|&o| o.is_multiple_of(self.page) && o < total)
        .collect();
        offs.sort_unstable();
        offs.dedup();
        let mut i = 0;
        while i < offs.len() {
            let start = i;
            while i + 1 < offs.len() && offs[i + 1] == offs[i] + self.page {
                i += 1;
            }
            i += 1;
            let (off, len) = (offs[start], (i - start) as u64 * self.page);
            self.fill_file(off, len, true)
                .map_err(uffd_err("cannot prefetch guest memory"))?;
            self.mark(off, len);
        }
        self.prefetched.store(offs.len() as u64, Relaxed);
        Ok(())
    }
}

/// Serves faults until `stop` is signalled, then saves the working set if recording.
fn run(shared: &Shared, stop: &EventFd) {
    let pfd = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [pfd(shared.uffd.as_raw_fd()), pfd(stop.as_raw_fd())];
    let mut buf = [0u8; MSG_SIZE * 16];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd structs.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            match io::Error::last_os_error() {
                e if e.kind() == ErrorKind::Interrupted => continue,
                e => {
                    tracing::error!("userfaultfd handler: poll: {e}");
                    break;
                }
            }
        }
        if fds[1].revents != 0 {
            break;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            tracing::error!(
                "userfaultfd handler: the userfaultfd failed; guest memory is no longer served"
            );
            break;
        }
        loop {
            match (&shared.uffd).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => buf[..n]
                    .chunks_exact(MSG_SIZE)
                    .filter(|m| m[0] == EVENT_PAGEFAULT)
                    .for_each(|m| {
                        shared
                            .on_fault(u64::from_ne_bytes(m[16..24].try_into().unwrap_or_default()));
                    }),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::error!("userfaultfd handler: read: {e}");
                    break;
                }
            }
        }
    }
    match shared.save() {
        Ok(_) | Err(MemFileError::NotRecording) => {}
        Err(e) => tracing::error!("userfaultfd handler: {e}"),
    }
}

/// Owns the userfaultfd, the memory file and the handler thread; dropping it stops the thread
/// (which then saves the working set, if recording).
pub struct UffdMemory {
    shared: Arc<Shared>,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// Creates anonymous guest memory for `ranges`, registers it with a userfaultfd (MISSING mode)
/// and starts a handler thread that serves each fault from the memory file at `path` (copying
/// data, mapping the zero page for holes), in aligned 64 KiB blocks.
///
/// `prefetch`: a working-set file (page-aligned memory-file offsets, u64 LE) whose pages are
/// copied in before this returns, which is what makes the restore fast; it is untrusted, bad
/// entries are ignored. `record`: the handler tracks every page it serves and
/// [`UffdMemory::save_working_set`] (and the handler's exit) writes the pages touched since start
/// (prefetched + faulted, sorted, deduplicated) there atomically. Start vCPUs only after this
/// returns; see the module docs.
pub fn map_uffd(
    path: &Path,
    ranges: &[(GuestAddress, usize)],
    prefetch: Option<&Path>,
    record: Option<&Path>,
) -> Result<(GuestMemoryMmap, UffdMemory), MemFileError> {
    let (file, total) = open_layout(path, ranges)?;
    let page = page_size() as u64;
    let mut data: Vec<(u64, u64)> = Vec::new();
    for (a, b) in data_extents(&file, 0, total).map_err(io_err("SEEK_DATA on memory file", path))? {
        let (a, b) = (a / page * page, b.div_ceil(page) * page);
        match data.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => data.push((a, b)),
        }
    }
    let src = MmapRegionBuilder::new(total as usize)
        .with_file_offset(FileOffset::new(file, 0))
        .with_mmap_prot(libc::PROT_READ)
        .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
        .build()
        .map_err(|source| MemFileError::Map {
            path: path.to_path_buf(),
            source,
        })?;
    let mem = GuestMemoryMmap::from_ranges(ranges).map_err(MemFileError::Alloc)?;
    let uffd = open_uffd()?;
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    // SAFETY: UFFDIO_API takes a struct uffdio_api.
    unsafe { ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) }.map_err(uffd_err(
        "userfaultfd handshake (UFFDIO_API) failed; the kernel is too old",
    ))?;
    let (mut regions, mut off) = (Vec::new(), 0u64);
    for r in mem.iter() {
        let (host, len) = (r.as_ptr() as u64, r.size() as u64);
        let mut reg = UffdioRegister {
            range: UffdioRange { start: host, len },
            mode: MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER takes a struct uffdio_register; the range is our own mapping.
        unsafe { ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) }.map_err(uffd_err(
            "cannot register guest memory with the userfaultfd",
        ))?;
        if reg.ioctls & NEEDED_IOCTLS != NEEDED_IOCTLS {
            return Err(uffd_err(
                "cannot register guest memory with the userfaultfd",
            )(io::Error::other(
                "the kernel lacks UFFDIO_COPY/UFFDIO_ZEROPAGE",
            )));
        }
        regions.push(Region { host, len, off });
        off += len;
    }
    let bits = Mutex::new(vec![0u64; (total / page).div_ceil(64) as usize]);
    let shared = Arc::new(Shared {
        uffd,
        src,
        regions,
        data,
        page,
        faults: AtomicU64::new(0),
        prefetched: AtomicU64::new(0),
        record: record.map(|p| (p.to_path_buf(), bits)),
        save_lock: Mutex::new(()),
    });
    let stop = EventFd::new(EFD_NONBLOCK)
        .map_err(uffd_err("cannot create the userfaultfd handler's eventfd"))?;
    let (s, st) = (
        shared.clone(),
        stop.try_clone()
            .map_err(uffd_err("cannot create the userfaultfd handler's eventfd"))?,
    );
    let thread = std::thread::Builder::new()
        .name("kiln-uffd".into())
        .spawn(move || {
            crate::seccomp::enter("uffd");
            run(&s, &st)
        });
    let thread = thread.map_err(uffd_err("cannot start the userfaultfd handler thread"))?;
    let um = UffdMemory {
        shared,
        stop,
        thread: Some(thread),
    };
    if let Some(ws) = prefetch {
        um.shared.prefetch(ws)?;
    }
    Ok((mem, um))
}

impl UffdMemory {
    /// Writes the working set (pages prefetched or faulted since start) to the record path
    /// atomically; returns the number of pages.
    pub fn save_working_set(&self) -> Result<usize, MemFileError> {
        self.shared.save()
    }

    /// Faults served by the handler so far.
    pub fn faults(&self) -> u64 {
        self.shared.faults.load(Relaxed)
    }

    /// Pages copied in from the working-set file.
    pub fn prefetched(&self) -> u64 {
        self.shared.prefetched.load(Relaxed)
    }

    /// Copies every data page of the memory file that is not yet in guest memory (holes stay
    /// empty and read as zeros). Call it before [`dump`](super::mem_file::dump) of memory served
    /// by this backend: `dump` only sees pages present in the mapping. Not recorded.
    pub fn populate_all(&self) -> Result<(), MemFileError> {
        for &(a, b) in &self.shared.data {
            self.shared
                .fill_file(a, b - a, false)
                .map_err(uffd_err("cannot populate guest memory"))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for UffdMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UffdMemory")
            .field("faults", &self.faults())
            .field("prefetched", &self.prefetched())
            .finish()
    }
}

impl Drop for UffdMemory {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            tracing::error!("cannot stop the userfaultfd handler: {e}");
        } else if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
