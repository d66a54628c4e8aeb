//! Small syscall helpers the server shares: eventfds, poll, locks that survive a
//! panicked holder, errno → error replies.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kiln_proto::{ErrorKind, ErrorReply};

/// Locks `m`, ignoring poisoning: every critical section here leaves its data
/// consistent, and PID 1 must not die of another thread's panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A non-blocking eventfd: one thread notifies, another polls it.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; the result is checked before wrapping.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable (never blocks: the counter cannot realistically overflow).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our fd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter (readable → not readable).
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our non-blocking fd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// poll(2) over `fds`, retrying on EINTR. `timeout` None waits forever.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        // Round up so a 0.5 ms wait does not become a busy loop.
        Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
    };
    loop {
        // SAFETY: fds is a valid, writable slice of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sets O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl flag query/update on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An error reply for an I/O error on `path` (kind from the errno).
pub fn io_error(e: &io::Error, what: &str, path: &str) -> ErrorReply {
    let msg = format!("{what}: {}", crate::console::io_strerror(e));
    match e.raw_os_error() {
        Some(errno) => ErrorReply::from_errno(errno, msg, Some(path)),
        None => ErrorReply {
            kind: ErrorKind::Io,
            message: msg,
            path: Some(path.to_owned()),
            errno: None,
        },
    }
}

/// An error reply for an errno on `path`.
pub fn errno_error(errno: i32, what: &str, path: &str) -> ErrorReply {
    io_error(&io::Error::from_raw_os_error(errno), what, path)
}

/// An `invalid_input` error reply, with the path it is about if any.
pub fn invalid(message: impl Into<String>, path: Option<&str>) -> ErrorReply {
    ErrorReply {
        kind: ErrorKind::InvalidInput,
        message: message.into(),
        path: path.map(str::to_owned),
        errno: None,
    }
}

/// Clears O_NONBLOCK on `f` (best effort).
pub fn set_blocking(f: &impl AsRawFd) {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl flag query/update on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
}

/// Whether the peer of socket `fd` has hung up or shut down its sending side
/// (POLLRDHUP/POLLHUP/POLLERR), checked without blocking or reading.
pub fn peer_closed(fd: RawFd) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    }];
    matches!(poll(&mut p, Some(Duration::ZERO)), Ok(1))
        && p[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
