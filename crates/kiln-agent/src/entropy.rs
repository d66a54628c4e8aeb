//! Reseeding the kernel's RNG with entropy from the host (clone safety).
//!
//! Guests restored from one snapshot share the kernel's CRNG state: without a reseed
//! they hand out the same "random" bytes. `RNDADDENTROPY` mixes the host's bytes into
//! the input pool and credits them; `RNDRESEEDCRNG` then rekeys the CRNG from the pool
//! at once (otherwise that happens only on the kernel's own schedule, up to a minute
//! later). Both need CAP_SYS_ADMIN, which PID 1 has.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

use kiln_proto::identity::ENTROPY_LEN;

use crate::console::io_strerror;

/// `_IOC(dir, type, nr, size)` in the generic encoding (x86, arm64, riscv):
/// `dir << 30 | size << 16 | type << 8 | nr`.
const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    dir << 30 | (size as u64) << 16 | (ty as u64) << 8 | nr as u64
}
const IOC_NONE: u64 = 0;
const IOC_WRITE: u64 = 1;

/// `_IOW('R', 0x03, int[2])` from linux/random.h.
pub const RNDADDENTROPY: u64 = ioc(IOC_WRITE, b'R', 0x03, 2 * size_of::<libc::c_int>());
/// `_IO('R', 0x07)` from linux/random.h.
pub const RNDRESEEDCRNG: u64 = ioc(IOC_NONE, b'R', 0x07, 0);

/// `struct rand_pool_info` with its flexible `__u32 buf[]` sized for our entropy.
#[repr(C)]
struct RandPoolInfo {
    /// Bits credited.
    entropy_count: libc::c_int,
    /// Bytes in `buf`.
    buf_size: libc::c_int,
    buf: [u8; ENTROPY_LEN],
}

/// Adds `entropy` to the kernel's pool crediting 8 bits per byte, then reseeds the
/// CRNG. An error names the step that failed.
pub fn reseed(entropy: &[u8; ENTROPY_LEN]) -> io::Result<()> {
    let dev = OpenOptions::new()
        .write(true)
        .open("/dev/random")
        .map_err(|e| step_error("open /dev/random", e))?;
    let info = RandPoolInfo {
        entropy_count: (8 * ENTROPY_LEN) as libc::c_int,
        buf_size: ENTROPY_LEN as libc::c_int,
        buf: *entropy,
    };
    // SAFETY: RNDADDENTROPY reads a rand_pool_info header and `buf_size` bytes after
    // it; `info` is a live repr(C) value with exactly that layout and length.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), RNDADDENTROPY as _, &info) };
    if rc != 0 {
        return Err(step_error("RNDADDENTROPY", io::Error::last_os_error()));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument and touches no memory of ours.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), RNDRESEEDCRNG as _) };
    if rc != 0 {
        return Err(step_error("RNDRESEEDCRNG", io::Error::last_os_error()));
    }
    Ok(())
}

fn step_error(step: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{step}: {}", io_strerror(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_random_h() {
        // As printed by a C program including <linux/random.h> on x86_64.
        assert_eq!(RNDADDENTROPY, 0x4008_5203);
        assert_eq!(RNDRESEEDCRNG, 0x5207);
    }

    #[test]
    fn pool_info_is_the_kernel_header_then_the_bytes() {
        assert_eq!(std::mem::offset_of!(RandPoolInfo, buf), 8);
        assert_eq!(size_of::<RandPoolInfo>(), 8 + ENTROPY_LEN);
    }
}
