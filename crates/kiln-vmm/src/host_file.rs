//! Opening the host files an API client names (kernel, initrd, drive images, snapshot
//! state and memory files, working sets) without ever blocking in `open(2)`.
//!
//! A FIFO blocks `open` until a writer appears, and a character device may block too or
//! do worse (a terminal would become the VMM's controlling terminal). Such a path given
//! to a configuration call would wedge the API thread while it holds the VMM lock, so
//! every such file is opened with `O_NONBLOCK | O_NOCTTY`, checked with `fstat` to be a
//! regular file (or, for drives, a block device: see [`Accept`]), and only then switched
//! back to blocking I/O. The check is made when the path is given (the PUT) and again
//! where the file is opened for use, since the path may have been replaced in between.
//!
//! The metrics sink is the exception: it may be a named pipe, and opens itself
//! non-blocking ([`crate::metrics`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Which kinds of file a path may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only a regular file (kernel, initrd, snapshot files).
    File,
    /// A regular file or a block device: a drive's `path_on_host`. kiln-vmm's block
    /// device serves raw images, and a block device is one (sized by seeking to its end).
    FileOrBlockDevice,
}

impl Accept {
    fn wanted(self) -> &'static str {
        match self {
            Accept::File => "a regular file",
            Accept::FileOrBlockDevice => "a regular file or a block device",
        }
    }
}

/// A path that names something other than what was asked for (carried inside the
/// `io::Error` [`open`] returns, with kind `InvalidInput`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is {kind}, not {}", accept.wanted())]
pub struct NotRegular {
    /// "a FIFO", "a directory", ...
    pub kind: &'static str,
    pub accept: Accept,
}

/// What `fstat` says a file is, in words.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// If `e` is a [`NotRegular`] refusal, the refusal.
pub fn not_regular(e: &io::Error) -> Option<NotRegular> {
    e.get_ref()?.downcast_ref::<NotRegular>().copied()
}

/// Opens `path` for reading (and writing if `write`) without blocking, refuses anything
/// `accept` does not allow, and returns the file in blocking mode.
pub fn open(path: &Path, write: bool, accept: Accept) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let t = file.metadata()?.file_type();
    let ok = t.is_file() || (accept == Accept::FileOrBlockDevice && t.is_block_device());
    if !ok {
        let refusal = NotRegular {
            kind: kind_of(t),
            accept,
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, refusal));
    }
    set_blocking(&file)?;
    Ok(file)
}

/// Clears `O_NONBLOCK` on `file`.
pub fn set_blocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL only reads the status flags of an fd we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL only changes the status flags of an fd we own.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
