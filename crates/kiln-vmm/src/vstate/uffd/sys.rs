//! The raw userfaultfd interface (linux/userfaultfd.h): ioctl numbers, argument structs,
//! and opening a userfaultfd.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::vstate::mem_file::MemFileError;

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (0xAA << 8) | nr // _IOWR(UFFDIO, nr, size)
}
pub(super) const UFFD_API: u64 = 0xAA;
pub(super) const UFFDIO_API: u64 = iowr(0x3F, size_of::<UffdioApi>());
pub(super) const UFFDIO_REGISTER: u64 = iowr(0x00, size_of::<UffdioRegister>());
pub(super) const UFFDIO_COPY: u64 = iowr(0x03, size_of::<UffdioCopy>());
pub(super) const UFFDIO_ZEROPAGE: u64 = iowr(0x04, size_of::<UffdioZeropage>());
/// _IO(0xAA, 0) on /dev/userfaultfd.
pub(super) const USERFAULTFD_IOC_NEW: u64 = 0xAA00;
// The values of the kernel header (x86_64 and aarch64 share the _IOC encoding).
const _: () = assert!(UFFDIO_API == 0xc018_aa3f && UFFDIO_REGISTER == 0xc020_aa00);
const _: () = assert!(UFFDIO_COPY == 0xc028_aa03 && UFFDIO_ZEROPAGE == 0xc020_aa04);
pub(super) const MODE_MISSING: u64 = 1;
pub(super) const NEEDED_IOCTLS: u64 = (1 << 0x03) | (1 << 0x04); // COPY, ZEROPAGE
pub(super) const EVENT_PAGEFAULT: u8 = 0x12;
pub(super) const MSG_SIZE: usize = 32; // struct uffd_msg; the fault address is at byte 16

#[repr(C)]
#[derive(Default)]
pub(super) struct UffdioApi {
    pub(super) api: u64,
    pub(super) features: u64,
    pub(super) ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
pub(super) struct UffdioRange {
    pub(super) start: u64,
    pub(super) len: u64,
}
#[repr(C)]
#[derive(Default)]
pub(super) struct UffdioRegister {
    pub(super) range: UffdioRange,
    pub(super) mode: u64,
    pub(super) ioctls: u64,
}
#[repr(C)]
#[derive(Default)]
pub(super) struct UffdioCopy {
    pub(super) dst: u64,
    pub(super) src: u64,
    pub(super) len: u64,
    pub(super) mode: u64,
    pub(super) copy: i64,
}
#[repr(C)]
#[derive(Default)]
pub(super) struct UffdioZeropage {
    pub(super) range: UffdioRange,
    pub(super) mode: u64,
    pub(super) zeropage: i64,
}

/// # Safety
/// `req` must be a userfaultfd ioctl whose argument is a `T`.
pub(super) unsafe fn ioctl<T>(fd: RawFd, req: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: the caller guarantees `req` takes a `T`; `arg` is valid and writable.
    match unsafe { libc::ioctl(fd, req as _, arg as *mut T) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

pub(super) fn uffd_err(op: &'static str) -> impl Fn(io::Error) -> MemFileError {
    move |source| MemFileError::Uffd { op, source }
}

pub(super) fn open_uffd() -> Result<File, MemFileError> {
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
