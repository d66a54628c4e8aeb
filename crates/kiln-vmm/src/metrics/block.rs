//! One virtio-blk drive's counters, and the host I/O errors it met: how many, how many
//! of them were ENOSPC (the host filesystem under the disk image is full) and the last
//! one's text, so a guest whose disk fails on the host side is seen from outside. The
//! first error asks for a prompt flush ([`super::pacer`]), so readers of the metrics
//! file learn of it within a fraction of a second, not at the next periodic line.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::{inc, Relaxed};

/// The longest `last_io_error` kept (bytes; cut at a character boundary).
pub const MAX_ERROR_TEXT: usize = 256;

/// One drive. Bytes are data bytes of successful requests; `errors` counts every
/// request completed with an error status (a malformed request from the guest too);
/// `io_errors` only those the host failed (a read, write or fdatasync of the image
/// returned an error), `enospc` those of them with ENOSPC.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    pub read_ops: AtomicU64,
    pub write_ops: AtomicU64,
    pub flush_ops: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub errors: AtomicU64,
    pub io_errors: AtomicU64,
    pub enospc: AtomicU64,
    /// How often the drive's rate limiter stopped its queue.
    pub throttled: AtomicU64,
    /// The text of the last host I/O error (None before the first).
    last_io_error: Mutex<Option<String>>,
}

impl BlockMetrics {
    pub const fn new() -> Self {
        Self {
            read_ops: AtomicU64::new(0),
            write_ops: AtomicU64::new(0),
            flush_ops: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            write_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            io_errors: AtomicU64::new(0),
            enospc: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            last_io_error: Mutex::new(None),
        }
    }

    /// Counts a host I/O error (`errno` from the failed call, when there was one) with
    /// its text, and asks for a prompt metrics flush.
    pub fn io_error(&self, errno: Option<i32>, text: &str) {
        inc(&self.io_errors);
        if errno == Some(libc::ENOSPC) {
            inc(&self.enospc);
        }
        let mut cut = text.len().min(MAX_ERROR_TEXT);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        *self.last_io_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text[..cut].into());
        super::pacer::request_flush();
    }

    /// The text of the last host I/O error.
    pub fn last_io_error(&self) -> Option<String> {
        self.last_io_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Serialize for BlockMetrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("BlockMetrics", 10)?;
        for (name, c) in [
            ("read_ops", &self.read_ops),
            ("write_ops", &self.write_ops),
            ("flush_ops", &self.flush_ops),
            ("read_bytes", &self.read_bytes),
            ("write_bytes", &self.write_bytes),
            ("errors", &self.errors),
            ("io_errors", &self.io_errors),
            ("enospc", &self.enospc),
            ("throttled", &self.throttled),
        ] {
            st.serialize_field(name, &c.load(Relaxed))?;
        }
        st.serialize_field("last_io_error", &self.last_io_error())?;
        st.end()
    }
}
