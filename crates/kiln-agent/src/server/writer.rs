//! The write half of a connection, shared by the connection thread and every
//! operation thread on it: whole frames under one lock, so frames never interleave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use kiln_proto::{write_frame, ErrorKind, ErrorReply, Frame, Hello, Kind, Reply, MAX_PAYLOAD};

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

    /// Writes one frame. False once the connection is closed or a write failed
    /// (then every later write is skipped: the host is gone).
    pub fn frame(&self, kind: Kind, flags: u8, id: u32, payload: &[u8]) -> bool {
        if self.is_dead() {
            return false;
        }
        let mut out = lock(&self.out);
        if self.is_dead() {
            return false;
        }
        match write_frame(&mut *out, kind, flags, id, payload) {
            Ok(()) => true,
            Err(_) => {
                self.dead.store(true, Ordering::Relaxed);
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
