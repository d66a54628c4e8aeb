//! Pseudo-terminals for PTY execs: a master we keep and a slave the command gets
//! as its controlling terminal (on stdin, stdout and stderr).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use kiln_proto::WinSize;

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a PTY pair of `size`; both ends close on exec.
pub fn open(size: WinSize) -> io::Result<Pty> {
    // SAFETY: posix_openpt with valid flags; the fd is checked and owned below.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: m is a new descriptor we own.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: m is a PTY master; name is writable for its length and ptsname_r
    // NUL-terminates on success.
    unsafe {
        if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::ptsname_r(m, name.as_mut_ptr(), name.len());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    // SAFETY: ptsname_r NUL-terminated `name`; the fd is checked and owned below.
    let s = unsafe {
        let path = CStr::from_ptr(name.as_ptr());
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is a new descriptor we own.
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    set_size(master.as_raw_fd(), size)?;
    Ok(Pty { master, slave })
}

/// TIOCSWINSZ: the terminal's size (the foreground job gets SIGWINCH).
pub fn set_size(fd: RawFd, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
