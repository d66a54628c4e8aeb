//! virtio-blk: a block device backed by a raw image file (virtio 1.1 §5.2).
//!
//! One request queue of 256 entries. Each request is a descriptor chain: a 16-byte
//! device-readable header (type, reserved, sector), the data descriptors, and a
//! device-writable status byte in the last descriptor. Data moves between the image and
//! guest memory with `pread`/`pwrite` straight into/out of guest memory, synchronously on
//! the event-loop thread; nothing is allocated per request.
//!
//! Offered features: `FLUSH`, `SEG_MAX`, `SIZE_MAX`, `BLK_SIZE`, and `RO` for read-only
//! drives. `SEG_MAX` × `SIZE_MAX` bounds the data of one request, so a conforming driver
//! never exceeds [`MAX_DATA_BYTES`]. If the driver does not accept `FLUSH`, every write is
//! followed by `fdatasync` (write-through), as the spec requires.
//!
//! Every chain is validated before any I/O; a malformed one completes with
//! `VIRTIO_BLK_S_IOERR` when it has a usable status byte, or with a used length of 0
//! otherwise. Guest input never panics the VMM or stalls the queue.

mod device;
mod request;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use device::{Block, BlockState, BlockStateError};
pub use request::{MAX_DATA_BYTES, SECTOR_SIZE, SEG_MAX, SIZE_MAX};

/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;

/// The device kind, as snapshot messages name it.
pub const KIND: &str = "virtio-blk";

/// Why a drive could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(
        "cannot open drive image {} {}: {source}; check path_on_host{}",
        path.display(),
        if *read_only { "read-only" } else { "read-write" },
        if *read_only { "" } else { " (or set is_read_only if the file must not be written)" }
    )]
    Open {
        path: PathBuf,
        read_only: bool,
        source: std::io::Error,
    },
    #[error("drive image {} is {kind}; path_on_host must name a raw disk image file or a block device", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("cannot determine the size of drive image {}: {source}", path.display())]
    Size {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "drive image {} is {size} bytes, which is not a multiple of 512; pad it to whole \
         512-byte sectors (e.g. `truncate -s %512 {}`)",
        path.display(),
        path.display()
    )]
    UnalignedSize { path: PathBuf, size: u64 },
    #[error("cannot create the drive's rate limiter timer: {0}")]
    Limiter(std::io::Error),
}
