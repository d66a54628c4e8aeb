//! Frame encoding and decoding (see the crate docs for the layout).
//!
//! [`Decoder`] is an incremental decoder over pushed bytes (no I/O; the fuzz target drives
//! it); [`read_frame`] and [`write_frame`] are the blocking stream helpers both sides use.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Header size in bytes.
pub const HEADER_LEN: usize = 12;
/// Largest payload a frame may carry (1 MiB).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Flag: last frame of a data stream (closes stdin, ends a file or an output stream).
pub const FLAG_EOF: u8 = 1;
const KNOWN_FLAGS: u8 = FLAG_EOF;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// JSON [`crate::Hello`], both directions, id 0.
    Hello = 1,
    /// JSON [`crate::Request`], host → agent.
    Request = 2,
    /// JSON [`crate::Reply`], agent → host.
    Reply = 3,
    /// Raw bytes host → agent: an exec's stdin or a file being written.
    DataIn = 4,
    /// Raw bytes agent → host: an exec's stdout.
    Stdout = 5,
    /// Raw bytes agent → host: an exec's stderr.
    Stderr = 6,
    /// Raw bytes agent → host: a file being read.
    DataOut = 7,
    /// JSON [`crate::Control`], host → agent, for a live operation (signal, resize).
    Control = 8,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Reply,
            4 => Kind::DataIn,
            5 => Kind::Stdout,
            6 => Kind::Stderr,
            7 => Kind::DataOut,
            8 => Kind::Control,
            _ => return None,
        })
    }
}

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header announces more than [`MAX_PAYLOAD`]; the stream cannot be resynchronised.
    #[error("frame payload of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: usize },
    /// Reserved header bits are set; the stream cannot be trusted.
    #[error("frame header has reserved bits set ({0:#x})")]
    Reserved(u32),
    /// The payload was skipped; the connection can go on.
    #[error("unknown frame kind {kind} (id {id})")]
    UnknownKind { kind: u8, id: u32 },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// Whether the connection can keep going after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, FrameError::UnknownKind { .. })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub flags: u8,
    pub id: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, id: u32, payload: Vec<u8>) -> Frame {
        Frame {
            kind,
            flags: 0,
            id,
            payload,
        }
    }

    /// A frame whose payload is `msg` as JSON.
    pub fn json<T: Serialize>(kind: Kind, id: u32, msg: &T) -> Frame {
        // Serialising our own message types (strings, numbers, maps with string keys)
        // cannot fail.
        let payload = serde_json::to_vec(msg).expect("protocol messages serialise");
        Frame::new(kind, id, payload)
    }

    /// Parses the payload as JSON.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| format!("bad {:?} payload: {e}", self.kind))
    }

    pub fn eof(&self) -> bool {
        self.flags & FLAG_EOF != 0
    }

    /// Encodes the frame (header + payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&header(self.kind, self.flags, self.id, self.payload.len()));
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Encodes a header. Panics if `len` exceeds [`MAX_PAYLOAD`] (a bug in the sender).
pub fn header(kind: Kind, flags: u8, id: u32, len: usize) -> [u8; HEADER_LEN] {
    assert!(len <= MAX_PAYLOAD, "frame payload {len} over the limit");
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4] = kind as u8;
    h[5] = flags;
    h[8..12].copy_from_slice(&id.to_le_bytes());
    h
}

/// A parsed header: (payload length, kind byte, flags, id).
struct Header {
    len: usize,
    kind: u8,
    flags: u8,
    id: u32,
}

fn parse_header(h: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if len as u64 > MAX_PAYLOAD as u64 {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max: MAX_PAYLOAD,
        });
    }
    let reserved = u16::from_le_bytes([h[6], h[7]]);
    if reserved != 0 || h[5] & !KNOWN_FLAGS != 0 {
        return Err(FrameError::Reserved(
            u32::from(reserved) << 8 | u32::from(h[5] & !KNOWN_FLAGS),
        ));
    }
    Ok(Header {
        len: len as usize,
        kind: h[4],
        flags: h[5],
        id: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
    })
}

fn to_frame(h: Header, payload: Vec<u8>) -> Result<Frame, FrameError> {
    let kind = Kind::from_u8(h.kind).ok_or(FrameError::UnknownKind {
        kind: h.kind,
        id: h.id,
    })?;
    Ok(Frame {
        kind,
        flags: h.flags,
        id: h.id,
        payload,
    })
}

/// Writes one frame with a single `write_all` of header and payload.
pub fn write_frame(
    w: &mut impl Write,
    kind: Kind,
    flags: u8,
    id: u32,
    payload: &[u8],
) -> io::Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame payload of {} bytes over the limit", payload.len()),
        ));
    }
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&header(kind, flags, id, payload.len()));
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
///
/// On [`FrameError::UnknownKind`] the payload has been consumed and the next frame can be
/// read; any other error leaves the stream unusable.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Frame>, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let h = parse_header(&h)?;
    let mut payload = vec![0u8; h.len];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    to_frame(h, payload).map(Some)
}

/// Incremental decoder: push bytes as they arrive, take frames out.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    failed: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After an
    /// unrecoverable error every later call returns the same kind of error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.failed {
            return Err(FrameError::Reserved(0));
        }
        let Some(head) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(head);
        let h = match parse_header(&h) {
            Ok(h) => h,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        if self.buf.len() < HEADER_LEN + h.len {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + h.len].to_vec();
        self.buf.drain(..HEADER_LEN + h.len);
        to_frame(h, payload).map(Some)
    }
}

#[cfg(test)]
mod tests;

/// The fuzz target's body: decode arbitrary bytes and parse every frame's JSON.
#[doc(hidden)]
pub fn fuzz_decode(bytes: &[u8]) {
    let mut d = Decoder::new();
    d.push(bytes);
    loop {
        match d.next_frame() {
            Ok(Some(f)) => {
                assert!(f.payload.len() <= MAX_PAYLOAD);
                match f.kind {
                    Kind::Request => drop(f.parse::<crate::Request>()),
                    Kind::Reply => drop(f.parse::<crate::Reply>()),
                    Kind::Control => drop(f.parse::<crate::Control>()),
                    Kind::Hello => drop(f.parse::<crate::Hello>()),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) if e.is_recoverable() => {}
            Err(_) => break,
        }
    }
    let _ = read_frame(&mut &bytes[..]);
}
