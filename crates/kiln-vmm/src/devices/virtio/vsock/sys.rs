//! Non-blocking unix socket primitives: connect, fcntl, and read/write that report
//! "would block" as a value.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Puts `fd` in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd the caller owns; no memory is passed.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
    };
    if ok {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `connect(2)` on a non-blocking unix stream socket: completes at once or fails (EAGAIN
/// when the listener's backlog is full), so the event loop never waits on a slow host app.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long or has a NUL", path.display()),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` is within its size (checked above).
    let rc = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(sock))
}

/// Non-blocking write; `Ok(0)` when the socket is full.
pub fn write_some(mut stream: &UnixStream, data: &[u8]) -> io::Result<usize> {
    loop {
        return match stream.write(data) {
            Ok(0) if !data.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Non-blocking read; `Ok(None)` when nothing is there, `Ok(Some(0))` at end of stream.
pub fn read_some(mut stream: &UnixStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        return match stream.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::devices::virtio::test_utils::TempDir;

    #[test]
    fn nonblocking_connect_and_io() {
        let e = connect_nonblocking(Path::new("/nonexistent/kiln/v.sock_5")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let long = format!("/tmp/{}", "x".repeat(200));
        let e = connect_nonblocking(Path::new(&long)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);

        let dir = TempDir::new("virtio");
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let s = connect_nonblocking(&path).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(read_some(&s, &mut buf).unwrap(), None);
        peer.write_all(b"hi").unwrap();
        assert_eq!(read_some(&s, &mut buf).unwrap(), Some(2));
        assert_eq!(write_some(&s, b"yo").unwrap(), 2);
        peer.read_exact(&mut buf[..2]).unwrap();
        drop(peer);
        assert_eq!(read_some(&s, &mut buf).unwrap(), Some(0));
        assert!(write_some(&s, b"gone").is_err());
    }
}
