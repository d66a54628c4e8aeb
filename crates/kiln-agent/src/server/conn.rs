//! One connection: the handshake, then frames routed by request id.
//!
//! * The first frame must be `Hello` with our [`VERSION`]: we answer with our own
//!   `Hello`. Anything else gets a `protocol` error on id 0 and the connection closes.
//! * `Request` with a new id (not 0) starts an operation on its own thread; a live
//!   id is refused (`protocol`). `DataIn`/`Control` go to the live operation of
//!   their id; for an unknown id they get a `protocol` error with that id. `DataIn`
//!   for an operation that takes no data, and `Control` for one that has no use for
//!   it, are dropped.
//! * A well-framed frame that is wrong (unknown kind, bad JSON, a kind only the
//!   agent sends) gets a `protocol` error with its id, and serving goes on. A
//!   malformed header (oversize, reserved bits) cannot be skipped: `protocol` error
//!   on id 0, then close.
//! * `connect` (a raw TCP tunnel to a guest port, `tunnel`) must be the only request on
//!   its connection: with another operation live it is refused (`protocol`). Once the
//!   agent answers `Connected`, no more frames are read: the connection is the tunnel.
//!   A connect that fails is answered with the error and the connection goes on.
//! * When the connection ends (EOF, error, or after a fatal frame), every live
//!   operation is cancelled — execs are killed — and the socket is shut down.

use std::io::{BufReader, Read};
use std::sync::Arc;

use kiln_proto::{
    read_frame, Control, ErrorKind, ErrorReply, Frame, FrameError, Hello, Kind, Request, VERSION,
};

use super::inbox::Inbox;
use super::routes::{Lookup, Op, Routes};
use super::writer::Writer;
use super::{run_op, Context, Stream};

/// Stack of a connection thread (JSON parsing happens here).
pub const STACK: usize = 1 << 20;
/// Stack of an operation thread.
const OP_STACK: usize = 512 << 10;
/// Read buffer: a few frames' headers and small payloads per syscall.
const READ_BUF: usize = 256 << 10;

/// Serves one connection until it ends. Never panics on what the host sends.
pub fn serve_connection<S: Stream>(stream: S, ctx: Arc<Context>) {
    let (out, closer) = match (stream.try_clone_box(), stream.try_clone_box()) {
        (Ok(out), Ok(closer)) => (out, closer),
        _ => return stream.shutdown_both(),
    };
    let conn = Conn {
        ctx,
        writer: Arc::new(Writer::new(out, closer)),
        routes: Arc::new(Routes::default()),
    };
    let mut reader = BufReader::with_capacity(READ_BUF, stream);
    if conn.handshake(&mut reader) {
        conn.serve(&mut reader);
    }
    conn.routes.cancel_all();
    conn.writer.close();
}

struct Conn {
    ctx: Arc<Context>,
    writer: Arc<Writer>,
    routes: Arc<Routes>,
}

impl Conn {
    fn handshake(&self, r: &mut impl Read) -> bool {
        let f = match read_frame(r) {
            Ok(Some(f)) => f,
            Ok(None) | Err(FrameError::Io(_) | FrameError::Truncated) => return false,
            Err(e) => {
                self.writer.protocol_error(0, e.to_string());
                return false;
            }
        };
        if f.kind != Kind::Hello {
            self.writer
                .protocol_error(0, format!("expected a hello frame first, got {:?}", f.kind));
            return false;
        }
        match f.parse::<Hello>() {
            Ok(h) if h.version == VERSION => self.writer.hello(&Hello {
                version: VERSION,
                software: self.ctx.software.clone(),
            }),
            Ok(h) => {
                self.writer.protocol_error(
                    0,
                    format!(
                        "protocol version {} is not supported (the agent speaks {VERSION})",
                        h.version
                    ),
                );
                false
            }
            Err(e) => {
                self.writer.protocol_error(0, e);
                false
            }
        }
    }

    fn serve<S: Stream>(&self, r: &mut BufReader<S>) {
        loop {
            match read_frame(r) {
                Ok(Some(f)) if f.kind == Kind::Request => {
                    match self.connect_request(&f) {
                        Some(port) if super::tunnel::serve(f.id, port, &self.writer, r) => return,
                        Some(_) => {} // refused and answered: frames go on
                        None => self.request(f),
                    }
                }
                Ok(Some(f)) => self.dispatch(f),
                Ok(None) => return,
                Err(FrameError::UnknownKind { kind, id }) => {
                    self.writer
                        .protocol_error(id, format!("unknown frame kind {kind}"));
                }
                // The host went away (possibly mid-frame): nobody to answer.
                Err(FrameError::Io(_) | FrameError::Truncated) => return,
                Err(e) => {
                    self.writer.protocol_error(0, e.to_string());
                    return;
                }
            }
            if self.writer.is_dead() {
                return;
            }
        }
    }

    /// The port of a `connect` request that may become this connection's tunnel: a
    /// valid id and no other operation live. `None` for every other frame (a `connect`
    /// that cannot start is answered by [`Conn::request`]'s checks or `run_op`).
    fn connect_request(&self, f: &Frame) -> Option<u16> {
        match f.parse::<Request>() {
            Ok(Request::Connect { port }) if f.id != 0 && self.routes.is_empty() => Some(port),
            _ => None,
        }
    }

    fn dispatch(&self, f: Frame) {
        match f.kind {
            Kind::Request => self.request(f),
            Kind::DataIn => self.data_in(f),
            Kind::Control => self.control(f),
            Kind::Hello => {
                self.writer
                    .protocol_error(f.id, "hello is only valid as the first frame");
            }
            k => {
                self.writer.protocol_error(
                    f.id,
                    format!("{k:?} frames only go from the agent to the host"),
                );
            }
        }
    }

    fn request(&self, f: Frame) {
        let id = f.id;
        if id == 0 {
            self.writer
                .protocol_error(0, "request id 0 is reserved for the connection");
            return;
        }
        let req: Request = match f.parse() {
            Ok(r) => r,
            Err(e) => {
                self.writer.protocol_error(id, e);
                return;
            }
        };
        let inbox = match inbox_for(&req) {
            Ok(i) => i.map(Arc::new),
            Err(e) => {
                self.writer.error(id, e);
                return;
            }
        };
        let token = match self.routes.insert(id, inbox.clone()) {
            Ok(t) => t,
            Err(msg) => {
                self.writer.protocol_error(id, msg);
                return;
            }
        };
        let op = Op::new(id, token, self.writer.clone(), self.routes.clone(), inbox);
        let ctx = self.ctx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("op-{id}"))
            .stack_size(OP_STACK)
            .spawn(move || run_op(op, req, &ctx));
        // On failure the closure (and the Op in it) is dropped, which frees the id.
        if let Err(e) = spawned {
            self.writer.error(
                id,
                ErrorReply::new(
                    ErrorKind::Io,
                    format!("cannot start a thread for the request: {e}"),
                ),
            );
        }
    }

    fn data_in(&self, f: Frame) {
        let eof = f.eof();
        match self.routes.lookup(f.id) {
            Lookup::Live(Some(inbox)) if inbox.accepts_data() => {
                let open = || !self.writer.is_dead() && !self.writer.peer_closed();
                inbox.push_data(f.payload, eof, &open);
                if eof {
                    // The operation may have ended while we pushed.
                    self.routes.end_drain(f.id);
                }
            }
            Lookup::Live(_) => {}
            Lookup::Drain => {
                if eof {
                    self.routes.end_drain(f.id);
                }
            }
            Lookup::Unknown => self.unknown_id(f.id),
        }
    }

    fn control(&self, f: Frame) {
        let inbox = match self.routes.lookup(f.id) {
            Lookup::Live(inbox) => inbox,
            Lookup::Drain => None,
            Lookup::Unknown => return self.unknown_id(f.id),
        };
        match f.parse::<Control>() {
            Ok(c) => {
                if let Some(inbox) = inbox {
                    inbox.push_control(c);
                }
            }
            Err(e) => {
                self.writer.protocol_error(f.id, e);
            }
        }
    }

    fn unknown_id(&self, id: u32) {
        self.writer
            .protocol_error(id, format!("no live operation with id {id}"));
    }
}

/// The inbox an operation needs: execs (stdin, control, cancel) and file writes.
fn inbox_for(req: &Request) -> Result<Option<Inbox>, ErrorReply> {
    let inbox = match req {
        Request::Exec(e) => Inbox::new(e.stdin || e.pty.is_some(), true),
        Request::WriteFile { .. } => Inbox::new(true, false),
        _ => return Ok(None),
    };
    inbox.map(Some).map_err(|e| {
        ErrorReply::new(
            ErrorKind::Io,
            format!(
                "cannot set up the request: {}",
                crate::console::io_strerror(&e)
            ),
        )
    })
}
