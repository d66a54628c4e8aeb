//! AF_VSOCK stream sockets through libc (std has no vsock support).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::Stream;

/// Pending connections the kernel queues before `accept`.
const BACKLOG: libc::c_int = 128;

/// A listening vsock socket.
pub struct VsockListener(OwnedFd);

impl VsockListener {
    /// socket + bind(VMADDR_CID_ANY, port) + listen. Fails when the guest has no
    /// vsock transport (no device attached).
    pub fn bind(port: u32) -> io::Result<VsockListener> {
        // SAFETY: plain socket call; checked below.
        let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new socket we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_vm is plain data; all-zero is valid before we fill it.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        // SAFETY: addr is a valid sockaddr_vm and the length says so.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: listen on our bound socket.
        if unsafe { libc::listen(sock.as_raw_fd(), BACKLOG) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(VsockListener(sock))
    }

    /// The next connection (close-on-exec).
    pub fn accept(&self) -> io::Result<VsockStream> {
        // SAFETY: accept4 without an address buffer; the fd is checked below.
        let fd = unsafe {
            libc::accept4(
                self.0.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new connected socket we own; File only does read/write
        // on it.
        Ok(VsockStream(unsafe { File::from_raw_fd(fd) }))
    }
}

/// A connected vsock stream (read/write through a `File` on the socket fd).
pub struct VsockStream(File);

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for VsockStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(VsockStream(self.0.try_clone()?)))
    }

    fn shutdown_both(&self) {
        // SAFETY: shutdown on our socket fd.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RDWR) };
    }

    fn shutdown_write(&self) {
        // SAFETY: shutdown on our socket fd.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) };
    }

    fn peer_closed(&self) -> bool {
        super::sys::peer_closed(self.0.as_raw_fd())
    }
}
