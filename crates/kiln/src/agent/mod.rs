//! Talking to the guest agent: one vsock connection per operation.
//!
//! The host connects to the VMM's vsock unix socket, writes `CONNECT <port>\n` and reads
//! `OK <n>\n` (Firecracker's hybrid vsock), then speaks `kiln-proto` frames. `Hello` and
//! the request go out back to back, so an operation costs one round trip plus its data.

mod exec;
mod files;
mod identity;
mod tunnel;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_proto::{
    read_frame, write_frame, Frame, Hello, Kind, Reply, Request, AGENT_PORT, VERSION,
};

pub use exec::{ExecCancel, ExecStream};
pub use kiln_proto::Reidentified;
pub use tunnel::Tunnel;

use crate::error::{Error, Result};

/// Where an agent is reached: the VMM's vsock socket, and the sandbox id for errors.
#[derive(Debug, Clone)]
pub struct AgentAddr {
    pub uds: PathBuf,
    pub sandbox: String,
}

/// One connection to the agent with its handshake done (or pipelined).
pub struct AgentConn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    hello_checked: bool,
    sandbox: String,
}

const REQ_ID: u32 = 1;

impl AgentAddr {
    pub fn new(uds: impl AsRef<Path>, sandbox: impl Into<String>) -> AgentAddr {
        AgentAddr {
            uds: uds.as_ref().to_path_buf(),
            sandbox: sandbox.into(),
        }
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> Error {
        Error::AgentUnavailable {
            id: self.sandbox.clone(),
            reason: reason.to_string(),
        }
    }

    /// Connects and sends `Hello` followed by `req` (id 1).
    pub fn open(&self, req: &Request) -> Result<AgentConn> {
        // A connection the guest did not accept (no `OK`) is retried a few times: right
        // after an OOM kill or a fork bomb the agent may take a moment to accept.
        let mut attempt = 0;
        let (reader, writer) = loop {
            match self.vsock_connect()? {
                Some(pair) => break pair,
                None if attempt < 3 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100 * attempt));
                }
                None => {
                    return Err(
                        self.unavailable("nothing listens on the agent port (is the guest up?)")
                    )
                }
            }
        };
        // Operations may stream for a long time; the caller's timeouts govern from here.
        reader
            .get_ref()
            .set_read_timeout(None)
            .map_err(|e| self.unavailable(e))?;
        let mut conn = AgentConn {
            reader,
            writer,
            hello_checked: false,
            sandbox: self.sandbox.clone(),
        };
        let hello = Hello {
            version: VERSION,
            software: format!("kiln {}", env!("CARGO_PKG_VERSION")),
        };
        let mut out = Frame::json(Kind::Hello, 0, &hello).encode();
        out.extend(Frame::json(Kind::Request, REQ_ID, req).encode());
        conn.writer
            .write_all(&out)
            .map_err(|e| self.unavailable(format!("send: {e}")))?;
        Ok(conn)
    }

    /// The hybrid-vsock handshake; `None` when the guest did not accept.
    fn vsock_connect(&self) -> Result<Option<(BufReader<UnixStream>, UnixStream)>> {
        let stream = UnixStream::connect(&self.uds)
            .map_err(|e| self.unavailable(format!("connect {}: {e}", self.uds.display())))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| self.unavailable(e))?;
        let mut writer = stream.try_clone().map_err(|e| self.unavailable(e))?;
        writer
            .write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
            .map_err(|e| self.unavailable(format!("vsock handshake: {e}")))?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(_) if line.starts_with("OK ") => Ok(Some((reader, writer))),
            Ok(0) => Ok(None),
            // The VMM closes without a line; a reset looks the same.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
            Ok(_) => Err(self.unavailable(format!("vsock handshake answered {:?}", line.trim()))),
            Err(e) => Err(self.unavailable(format!("vsock handshake: {e}"))),
        }
    }

    /// One request, one reply (no data streams).
    pub fn call(&self, req: &Request) -> Result<Reply> {
        let mut conn = self.open(req)?;
        conn.reply()
    }
}

impl AgentConn {
    fn lost(&self, e: impl std::fmt::Display) -> Error {
        Error::AgentUnavailable {
            id: self.sandbox.clone(),
            reason: format!("connection lost: {e}"),
        }
    }

    /// The next frame of our operation (the hello reply is checked on the way).
    pub fn recv(&mut self) -> Result<Frame> {
        loop {
            let frame = match read_frame(&mut self.reader) {
                Ok(Some(f)) => f,
                Ok(None) => return Err(self.lost("the agent closed the connection")),
                Err(e) => return Err(self.lost(e)),
            };
            if !self.hello_checked {
                self.hello_checked = true;
                match frame.kind {
                    Kind::Hello => {
                        let h: Hello = frame.parse().map_err(Error::Protocol)?;
                        if h.version != VERSION {
                            return Err(Error::Protocol(format!(
                                "agent speaks protocol {} ({}), we speak {VERSION}",
                                h.version, h.software
                            )));
                        }
                        continue;
                    }
                    Kind::Reply => return Err(error_reply(&frame)),
                    k => return Err(Error::Protocol(format!("expected hello, got {k:?}"))),
                }
            }
            if frame.id != REQ_ID {
                if frame.kind == Kind::Reply {
                    return Err(error_reply(&frame));
                }
                return Err(Error::Protocol(format!(
                    "frame for unknown id {}",
                    frame.id
                )));
            }
            return Ok(frame);
        }
    }

    /// Bounds every later read (`None`: wait as long as it takes, the default).
    pub fn set_read_timeout(&self, limit: Option<Duration>) -> Result<()> {
        self.reader
            .get_ref()
            .set_read_timeout(limit)
            .map_err(|e| self.lost(e))
    }

    /// Reads the final reply; an `Error` reply becomes a typed error.
    pub fn reply(&mut self) -> Result<Reply> {
        let frame = self.recv()?;
        parse_reply(&frame)
    }

    /// Sends a frame for our operation.
    pub fn send(&mut self, kind: Kind, flags: u8, payload: &[u8]) -> Result<()> {
        write_frame(&mut self.writer, kind, flags, REQ_ID, payload).map_err(|e| self.lost(e))
    }

    fn writer(&self) -> Result<UnixStream> {
        self.writer.try_clone().map_err(|e| self.lost(e))
    }
}

/// A reply frame as a `Reply`; `Error` replies become `Err`.
fn parse_reply(frame: &Frame) -> Result<Reply> {
    if frame.kind != Kind::Reply {
        return Err(Error::Protocol(format!(
            "expected a reply, got {:?}",
            frame.kind
        )));
    }
    match frame.parse::<Reply>().map_err(Error::Protocol)? {
        Reply::Error(e) => Err(e.into()),
        r => Ok(r),
    }
}

fn error_reply(frame: &Frame) -> Error {
    match parse_reply(frame) {
        Err(e) => e,
        Ok(r) => Error::Protocol(format!("unexpected reply {r:?}")),
    }
}

/// An unexpected reply to a request.
pub(crate) fn unexpected(what: &str, r: Reply) -> Error {
    Error::Protocol(format!("{what}: unexpected reply {r:?}"))
}
