//! The write half of a connection, shared by the connection thread and every
//! operation thread on it: whole frames under one lock, so frames never interleave.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln_proto::frame::header;
use kiln_proto::{ErrorKind, ErrorReply, Frame, Hello, Kind, Reply, MAX_PAYLOAD};

use super::sys::lock;
use super::Stream;

pub struct Writer {
    out: Mutex<Box<dyn Stream>>,
    /// A second handle to the same socket, used to shut it down while a writer
    /// may be blocked holding `out`.
    closer: Box<dyn Stream>,
    dead: AtomicBool,
}

impl Writer {
    pub fn new(out: Box<dyn Stream>, closer: Box<dyn Stream>) -> Writer {
        Writer {
            out: Mutex::new(out),
            closer,
            dead: AtomicBool::new(false),
        }
    }

    /// Writes one frame. False once the connection is closed or a write failed; a
    /// failed write closes the connection, so the host sees the end instead of waiting
    /// for a frame that will never come.
    pub fn frame(&self, kind: Kind, flags: u8, id: u32, payload: &[u8]) -> bool {
        if self.is_dead() || payload.len() > MAX_PAYLOAD {
            return false;
        }
        let mut out = lock(&self.out);
        if self.is_dead() {
            return false;
        }
        let h = header(kind, flags, id, payload.len());
        match write_patiently(&mut *out, &h).and_then(|_| write_patiently(&mut *out, payload)) {
            Ok(()) => true,
            Err(_) => {
                self.close();
                false
            }
        }
    }

    /// Writes a reply. One too large for a frame (a directory listing of tens of
    /// thousands of entries) becomes an `io` error reply saying so.
    pub fn reply(&self, id: u32, reply: &Reply) -> bool {
        let f = Frame::json(Kind::Reply, id, reply);
        if f.payload.len() > MAX_PAYLOAD {
            let e = ErrorReply::new(
                ErrorKind::Io,
                format!(
                    "the reply ({} bytes) is over the {MAX_PAYLOAD}-byte frame limit",
                    f.payload.len()
                ),
            );
            return self.error(id, e);
        }
        self.frame(Kind::Reply, 0, id, &f.payload)
    }

    pub fn error(&self, id: u32, e: ErrorReply) -> bool {
        self.reply(id, &Reply::Error(e))
    }

    /// A `protocol` error about frame `id`.
    pub fn protocol_error(&self, id: u32, message: impl Into<String>) -> bool {
        self.error(id, ErrorReply::new(ErrorKind::Protocol, message))
    }

    pub fn hello(&self, hello: &Hello) -> bool {
        let f = Frame::json(Kind::Hello, 0, hello);
        self.frame(Kind::Hello, 0, 0, &f.payload)
    }

    /// Whether the host has closed its end (checked without reading).
    pub fn peer_closed(&self) -> bool {
        self.closer.peer_closed()
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// Stops all further writes and shuts the socket down both ways (the reader
    /// sees end of stream; a blocked writer fails).
    pub fn close(&self) {
        self.dead.store(true, Ordering::Relaxed);
        self.closer.shutdown_both();
    }
}

/// Largest single write: the guest's vsock allocates a kernel buffer per packet, and
/// up to 32 KiB (order 3) stays cheap to allocate when memory is fragmented.
const WRITE_PIECE: usize = 32 * 1024;
/// How long transient failures (ENOMEM, ENOBUFS, EAGAIN) are retried.
const TRANSIENT_FOR: Duration = Duration::from_secs(30);

/// `write_all` in pieces of at most [`WRITE_PIECE`] that rides out transient failures:
/// under memory pressure a vsock send fails with ENOMEM instead of blocking.
pub(super) fn write_patiently(out: &mut dyn Write, mut buf: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + TRANSIENT_FOR;
    while !buf.is_empty() {
        let n = buf.len().min(WRITE_PIECE);
        match out.write(&buf[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => buf = &buf[k..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOMEM | libc::ENOBUFS | libc::EAGAIN)
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails every other write with ENOMEM and takes at most 5 bytes at a time.
    struct Flaky {
        got: Vec<u8>,
        fail: bool,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.fail = !self.fail;
            if self.fail {
                return Err(io::Error::from_raw_os_error(libc::ENOMEM));
            }
            let n = buf.len().min(5);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transient_enomem_is_retried_and_nothing_is_lost() {
        let mut f = Flaky {
            got: Vec::new(),
            fail: false,
        };
        let data: Vec<u8> = (0..100u8).collect();
        write_patiently(&mut f, &data).unwrap();
        assert_eq!(f.got, data);
    }

    #[test]
    fn a_hard_error_is_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EPIPE))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(write_patiently(&mut Broken, b"x").is_err());
    }
}
