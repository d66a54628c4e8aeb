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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vm_memory::mmap::{MmapRegion, MmapRegionBuilder};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::memory::{data_extents, io_err, open_layout, page_size, MemFileError};

/// A fault is served with the aligned block around it (clamped to the region): sequential
/// access takes 16x fewer faults, for a few neighbouring pages populated early.
const FAULT_BLOCK: u64 = 64 << 10;

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr // _IOWR(UFFDIO, nr, size)
}
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: u64 = iowr(0x3F, size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = iowr(0x00, size_of::<UffdioRegister>());
const UFFDIO_COPY: u64 = iowr(0x03, size_of::<UffdioCopy>());
const UFFDIO_ZEROPAGE: u64 = iowr(0x04, size_of::<UffdioZeropage>());
/// _IO(0xAA, 0) on /dev/userfaultfd.
const USERFAULTFD_IOC_NEW: u64 = 0xAA00;
// The values of the kernel header (x86_64 and aarch64 share the _IOC encoding).
const _: () = assert!(UFFDIO_API == 0xc018_aa3f && UFFDIO_REGISTER == 0xc020_aa00);
const _: () = assert!(UFFDIO_COPY == 0xc028_aa03 && UFFDIO_ZEROPAGE == 0xc020_aa04);
const MODE_MISSING: u64 = 1;
const NEEDED_IOCTLS: u64 = (1 << 0x03) | (1 << 0x04); // COPY, ZEROPAGE
const EVENT_PAGEFAULT: u8 = 0x12;
const MSG_SIZE: usize = 32; // struct uffd_msg; the fault address is at byte 16

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}
#[repr(C)]
#[derive(Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// # Safety
/// `req` must be a userfaultfd ioctl whose argument is a `T`.
unsafe fn ioctl<T>(fd: RawFd, req: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: the caller guarantees `req` takes a `T`; `arg` is valid and writable.
    match unsafe { libc::ioctl(fd, req as _, arg as *mut T) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

fn uffd_err(op: &'static str) -> impl Fn(io::Error) -> MemFileError {
    move |source| MemFileError::Uffd { op, source }
}

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
        let read =
            File::open(path).and_then(|f| f.take((total / self.page) * 8).read_to_end(&mut raw));
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

fn open_uffd() -> Result<File, MemFileError> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: userfaultfd(2) takes only flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    let err = io::Error::last_os_error();
    let fd = match fd {
        -1 => {
            // Linux 6.1+: /dev/userfaultfd, governed by its file permissions instead of the sysctl.
            let dev = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open("/dev/userfaultfd");
            let fd = dev.map_or(-1, |dev| {
                // SAFETY: USERFAULTFD_IOC_NEW takes the flags as a plain int argument.
                unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, flags) }
            });
            if fd < 0 {
                return Err(uffd_err(
                    "cannot create a userfaultfd (needs root, CAP_SYS_PTRACE, access to /dev/userfaultfd or vm.unprivileged_userfaultfd=1; else restore with the File backend)",
                )(err));
            }
            fd
        }
        fd => fd as RawFd,
    };
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
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
        .spawn(move || run(&s, &st));
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
    /// empty and read as zeros). Call it before [`dump`](super::memory::dump) of memory served
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
mod tests {
    use super::*;
    use crate::snapshot::memory::tests::{ranges, sample_file, TempPath};
    use crate::snapshot::memory::{dump, MemFileError};
    use vm_memory::Bytes;

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    #[test]
    fn uffd_serves_records_and_prefetches() {
        let file = sample_file("uffd-mem");
        let ws = TempPath::new("uffd-ws");
        let (mem, u) = match map_uffd(&file.0, &ranges(), None, Some(&ws.0)) {
            Err(MemFileError::Uffd { source, .. })
                if matches!(source.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) =>
            {
                return eprintln!("skipping: userfaultfd unavailable: {source}");
            }
            r => r.unwrap(),
        };
        let check = |mem: &GuestMemoryMmap| {
            assert_eq!(read(mem, 0x3000, 4096), vec![0xAB; 4096]);
            assert_eq!(read(mem, 0x1000_7000, 10), b"region one");
            assert_eq!(read(mem, 0x8_0000, 4096), vec![0; 4096]);
        };
        check(&mem);
        assert_eq!((u.faults(), u.prefetched()), (3, 0));
        let pages = u.save_working_set().unwrap();
        assert_eq!(pages as u64, 3 * FAULT_BLOCK / page_size() as u64);
        let saved = std::fs::read(&ws.0).unwrap();
        assert_eq!((saved.len(), &saved[..8]), (pages * 8, &[0u8; 8][..]));
        drop((mem, u));
        let mut f = OpenOptions::new().append(true).open(&ws.0).unwrap();
        f.write_all(&[0x123u64.to_le_bytes(), (1u64 << 40).to_le_bytes()].concat())
            .unwrap();

        let (mem, u) = map_uffd(&file.0, &ranges(), Some(&ws.0), None).unwrap();
        assert_eq!(u.prefetched(), pages as u64);
        check(&mem);
        assert_eq!(u.faults(), 0);
        assert_eq!(read(&mem, 0x1008_0000, 8), vec![0; 8]);
        assert_eq!(u.faults(), 1);
        assert!(matches!(
            u.save_working_set(),
            Err(MemFileError::NotRecording)
        ));

        u.populate_all().unwrap();
        let out = TempPath::new("uffd-dump");
        dump(&mem, &out.0).unwrap();
        assert!(std::fs::read(&out.0).unwrap() == std::fs::read(&file.0).unwrap());
    }
}
