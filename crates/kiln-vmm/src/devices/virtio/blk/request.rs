//! Parsing, validation and execution of one virtio-blk request (virtio 1.1 §5.2.6).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, ReadVolatile,
    VolatileMemoryError, VolatileSlice, WriteVolatile,
};

use super::QUEUE_SIZE;
use crate::metrics::{add, inc, BlockMetrics};

/// Bytes per sector; capacities and request sectors are in these units.
pub const SECTOR_SIZE: u64 = 512;
/// Most data descriptors in one request (config `seg_max`): the queue minus header+status.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest data descriptor a driver may use (config `size_max`).
pub const SIZE_MAX: u32 = 256 * 1024;
/// Most data bytes in one request; larger requests fail with `VIRTIO_BLK_S_IOERR`.
pub const MAX_DATA_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Length of the drive id returned by `VIRTIO_BLK_T_GET_ID`.
pub(super) const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

/// Size of the request header: `le32 type, le32 reserved, le64 sector`.
const HEADER_LEN: u32 = 16;

// Status codes fit in the one status byte.
const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// One data descriptor of a request.
#[derive(Clone, Copy, Debug)]
pub(super) struct Segment {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

impl From<Descriptor> for Segment {
    fn from(d: Descriptor) -> Self {
        Segment {
            addr: d.addr(),
            len: d.len(),
            writable: d.is_write_only(),
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
enum ReqError {
    #[error("header descriptor is not a readable buffer of at least 16 bytes in memory")]
    BadHeader,
    #[error("more than {SEG_MAX} data descriptors")]
    TooManySegments,
    #[error("data descriptor has the wrong direction for the request type")]
    WrongDirection,
    #[error("data descriptor is not in guest memory")]
    BadBuffer,
    #[error("data length {0} is not a multiple of 512")]
    Unaligned(u64),
    #[error("data length {0} exceeds {MAX_DATA_BYTES}")]
    TooLarge(u64),
    #[error("{len} bytes at sector {sector} are beyond the end of the disk")]
    OutOfRange { sector: u64, len: u64 },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("GET_ID without a data buffer")]
    NoIdBuffer,
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// The host failed the I/O (`errno` from the failed call, when there was one).
    #[error("{text}")]
    Io { text: String, errno: Option<i32> },
}

/// A failed read or write of the image at byte `offset`.
fn io_failed(what: &str, offset: u64, e: &GuestMemoryError) -> ReqError {
    let errno = match e {
        GuestMemoryError::IOError(io) => io.raw_os_error(),
        _ => None,
    };
    ReqError::Io {
        text: format!("{what} at byte {offset}: {e}"),
        errno,
    }
}

impl ReqError {
    fn status(&self) -> u8 {
        match self {
            ReqError::Unsupported(_) => S_UNSUPP,
            _ => S_IOERR,
        }
    }
}

/// The backing image and what the requests need to know about it.
pub(super) struct Disk {
    pub file: File,
    /// Size in sectors.
    pub capacity: u64,
    pub read_only: bool,
    /// Sync after every write (the driver did not accept `VIRTIO_BLK_F_FLUSH`).
    pub write_through: bool,
    pub id: [u8; ID_BYTES],
    /// This drive's counters (shared with the metrics line).
    pub metrics: Arc<BlockMetrics>,
}

impl Disk {
    /// Validates and executes one chain, writes its status byte and returns the used
    /// length (bytes written to guest memory). `segs` is scratch space reused across
    /// requests; it never grows past `SEG_MAX` entries.
    pub fn handle_chain(
        &self,
        mem: &GuestMemoryMmap,
        mut chain: DescriptorChain<&GuestMemoryMmap>,
        segs: &mut Vec<Segment>,
    ) -> u32 {
        segs.clear();
        let Some(header) = chain.next() else {
            tracing::debug!("virtio-blk: empty descriptor chain");
            return 0;
        };
        // The last descriptor is the status; everything between is data.
        let mut last: Option<Descriptor> = None;
        let mut too_many = false;
        for desc in chain {
            if let Some(prev) = last.replace(desc) {
                if segs.len() < SEG_MAX as usize {
                    segs.push(prev.into());
                } else {
                    too_many = true;
                }
            }
        }
        let Some(status) = last else {
            tracing::debug!("virtio-blk: chain has no status descriptor");
            return 0;
        };
        if !status.is_write_only() || status.len() < 1 || !mem.check_range(status.addr(), 1) {
            tracing::debug!("virtio-blk: unusable status descriptor {status:?}");
            return 0;
        }

        let mut written = 0u32;
        let result = if too_many {
            Err(ReqError::TooManySegments)
        } else {
            self.execute(mem, &header, segs, &mut written)
        };
        if result.is_err() {
            inc(&self.metrics.errors);
        }
        let code = match result {
            Ok(()) => S_OK,
            Err(ReqError::Io { text, errno }) => {
                tracing::error!("virtio-blk: I/O error: {text}");
                self.metrics.io_error(errno, &text);
                S_IOERR
            }
            Err(e) => {
                tracing::debug!("virtio-blk: request failed: {e}");
                e.status()
            }
        };
        if let Err(e) = mem.write_obj(code, status.addr()) {
            tracing::warn!("virtio-blk: cannot write status byte: {e}");
            return 0;
        }
        written.saturating_add(1)
    }

    /// Runs a request whose status descriptor is valid. `written` counts the data bytes
    /// stored into guest memory, including by a request that fails part-way.
    fn execute(
        &self,
        mem: &GuestMemoryMmap,
        header: &Descriptor,
        segs: &[Segment],
        written: &mut u32,
    ) -> Result<(), ReqError> {
        if header.is_write_only() || header.len() < HEADER_LEN {
            return Err(ReqError::BadHeader);
        }
        let mut raw = [0u8; HEADER_LEN as usize];
        mem.read_slice(&mut raw, header.addr())
            .map_err(|_| ReqError::BadHeader)?;
        let (ty, sector) = parse_header(&raw);

        match ty {
            VIRTIO_BLK_T_IN => {
                let start = self.data_offset(mem, segs, sector, true)?;
                let mut offset = start;
                for s in segs {
                    let mut src = FileAt::new(&self.file, offset);
                    mem.read_exact_volatile_from(s.addr, &mut src, s.len as usize)
                        .map_err(|e| io_failed("read", offset, &e))?;
                    offset += u64::from(s.len);
                    *written = written.saturating_add(s.len);
                }
                inc(&self.metrics.read_ops);
                add(&self.metrics.read_bytes, offset - start);
                Ok(())
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(ReqError::ReadOnly);
                }
                let start = self.data_offset(mem, segs, sector, false)?;
                let mut offset = start;
                for s in segs {
                    let mut dst = FileAt::new(&self.file, offset);
                    mem.write_all_volatile_to(s.addr, &mut dst, s.len as usize)
                        .map_err(|e| io_failed("write", offset, &e))?;
                    offset += u64::from(s.len);
                }
                if self.write_through {
                    self.sync()?;
                }
                inc(&self.metrics.write_ops);
                add(&self.metrics.write_bytes, offset - start);
                Ok(())
            }
            VIRTIO_BLK_T_FLUSH => {
                self.sync()?;
                inc(&self.metrics.flush_ops);
                Ok(())
            }
            VIRTIO_BLK_T_GET_ID => {
                total_len(segs, true)?;
                check_in_memory(mem, segs)?;
                if segs.is_empty() {
                    return Err(ReqError::NoIdBuffer);
                }
                let mut id = &self.id[..];
                for s in segs {
                    let n = id.len().min(s.len as usize);
                    mem.write_slice(&id[..n], s.addr)
                        .map_err(|_| ReqError::BadBuffer)?;
                    id = &id[n..];
                    // n <= ID_BYTES.
                    *written += n as u32;
                }
                Ok(())
            }
            other => Err(ReqError::Unsupported(other)),
        }
    }

    /// Validates the data descriptors of a read (`writable`) or write request at `sector`;
    /// returns the byte offset in the image.
    fn data_offset(
        &self,
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        sector: u64,
        writable: bool,
    ) -> Result<u64, ReqError> {
        let total = total_len(segs, writable)?;
        if total > MAX_DATA_BYTES {
            return Err(ReqError::TooLarge(total));
        }
        if !total.is_multiple_of(SECTOR_SIZE) {
            return Err(ReqError::Unaligned(total));
        }
        let out_of_range = ReqError::OutOfRange { sector, len: total };
        match sector.checked_add(total / SECTOR_SIZE) {
            Some(end) if end <= self.capacity => {}
            _ => return Err(out_of_range),
        }
        let offset = sector.checked_mul(SECTOR_SIZE).ok_or(out_of_range)?;
        check_in_memory(mem, segs)?;
        Ok(offset)
    }

    fn sync(&self) -> Result<(), ReqError> {
        self.file.sync_data().map_err(|e| ReqError::Io {
            text: format!("fdatasync: {e}"),
            errno: e.raw_os_error(),
        })
    }
}

/// Returns `(type, sector)` from a little-endian request header.
fn parse_header(raw: &[u8; HEADER_LEN as usize]) -> (u32, u64) {
    let [t0, t1, t2, t3, _, _, _, _, s @ ..] = *raw;
    (u32::from_le_bytes([t0, t1, t2, t3]), u64::from_le_bytes(s))
}

/// Checks that every segment has the wanted direction (device-`writable` or not);
/// returns their total length.
fn total_len(segs: &[Segment], writable: bool) -> Result<u64, ReqError> {
    let mut total = 0u64;
    for s in segs {
        if s.writable != writable {
            return Err(ReqError::WrongDirection);
        }
        // At most SEG_MAX segments of at most u32::MAX bytes: no overflow.
        total += u64::from(s.len);
    }
    Ok(total)
}

/// Checks that every segment lies entirely in guest memory, so no I/O starts on a
/// request that cannot complete.
fn check_in_memory(mem: &GuestMemoryMmap, segs: &[Segment]) -> Result<(), ReqError> {
    if segs.iter().all(|s| mem.check_range(s.addr, s.len as usize)) {
        Ok(())
    } else {
        Err(ReqError::BadBuffer)
    }
}

/// The image file at a byte offset, as a source/sink for guest-memory I/O with
/// `pread`/`pwrite` (the file position is never used).
struct FileAt<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> FileAt<'a> {
    fn new(file: &'a File, offset: u64) -> Self {
        FileAt { file, offset }
    }

    fn off_t(&self) -> Result<libc::off_t, VolatileMemoryError> {
        libc::off_t::try_from(self.offset).map_err(|_| {
            VolatileMemoryError::IOError(io::Error::from_raw_os_error(libc::EOVERFLOW))
        })
    }

    /// Advances past `n` transferred bytes; returns `n`.
    fn advance(&mut self, n: isize) -> Result<usize, VolatileMemoryError> {
        if n < 0 {
            return Err(VolatileMemoryError::IOError(io::Error::last_os_error()));
        }
        let n = n.unsigned_abs();
        self.offset += n as u64;
        Ok(n)
    }
}

impl ReadVolatile for FileAt<'_> {
    /// Fills `buf` unless end of file or an error comes first.
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let guard = buf.ptr_guard_mut();
        let mut done = 0usize;
        while done < buf.len() {
            let off = self.off_t()?;
            // SAFETY: `guard` keeps `buf`'s memory mapped; `done < buf.len()`, so the
            // destination range `[ptr + done, ptr + buf.len())` lies inside `buf`, which
            // is valid for writes by the `VolatileSlice` invariants. The fd is owned by
            // the borrowed `File`.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    guard.as_ptr().add(done).cast(),
                    buf.len() - done,
                    off,
                )
            };
            match self.advance(n) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(VolatileMemoryError::IOError(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    buf.bitmap().mark_dirty(0, buf.len());
                    return Err(e);
                }
            }
        }
        buf.bitmap().mark_dirty(0, done);
        Ok(done)
    }
}

impl WriteVolatile for FileAt<'_> {
    fn write_volatile<B: BitmapSlice>(
        &mut self,
        buf: &VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let off = self.off_t()?;
        let guard = buf.ptr_guard();
        // SAFETY: `guard` keeps `buf`'s memory mapped and valid for reads of `buf.len()`
        // bytes (`VolatileSlice` invariants). The fd is owned by the borrowed `File`.
        let n =
            unsafe { libc::pwrite(self.file.as_raw_fd(), guard.as_ptr().cast(), buf.len(), off) };
        self.advance(n)
    }
}
