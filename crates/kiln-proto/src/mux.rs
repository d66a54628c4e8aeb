//! Many byte streams over one: the framing the host relay and the agent speak over a
//! virtio-console port (QEMU backend, no vsock). Each logical stream is what a vsock
//! connection would be; inside it the usual [`crate::frame`]s flow unchanged.
//!
//! # Layout
//!
//! A 9-byte header, then the payload:
//!
//! | bytes | field | meaning |
//! | --- | --- | --- |
//! | 0..4 | `stream` (u32 LE) | which logical stream (0: the channel itself) |
//! | 4 | `kind` | [`MuxKind`] |
//! | 5..9 | `len` (u32 LE) | payload length, at most [`MUX_MAX_PAYLOAD`] |
//!
//! # Exchange
//!
//! * `Listen(port)`, guest → host, stream 0: the guest serves `port`. Sent when the
//!   guest (re)opens the channel; the host then forgets all earlier streams.
//! * `Open(port)`, host → guest: a new stream (the host picks an unused id, never 0).
//!   The guest answers `Accept` or `Reset`.
//! * `Data(bytes)`, both ways, 1 to [`MUX_MAX_PAYLOAD`] bytes.
//! * `Eof`, both ways: the sender sends no more data on the stream (half close).
//!   A stream is over once both sides sent `Eof`, or after a `Reset` either way.
//! * `Reset`: abort the stream in both directions (refused, or an endpoint failed).
//!
//! Every length is checked before anything is allocated; a malformed frame is an error
//! (the byte stream cannot be resynchronised, so the channel must be dropped).

use std::io::{self, Read, Write};

/// Header size in bytes.
pub const MUX_HEADER_LEN: usize = 9;
/// Largest payload of one mux frame (64 KiB).
pub const MUX_MAX_PAYLOAD: usize = 64 * 1024;

/// What a mux frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MuxKind {
    Listen = 1,
    Open = 2,
    Accept = 3,
    Data = 4,
    Eof = 5,
    Reset = 6,
}

impl MuxKind {
    pub fn from_u8(v: u8) -> Option<MuxKind> {
        Some(match v {
            1 => MuxKind::Listen,
            2 => MuxKind::Open,
            3 => MuxKind::Accept,
            4 => MuxKind::Data,
            5 => MuxKind::Eof,
            6 => MuxKind::Reset,
            _ => return None,
        })
    }

    /// The payload sizes this kind allows (inclusive).
    fn payload_range(self) -> (usize, usize) {
        match self {
            MuxKind::Listen | MuxKind::Open => (4, 4),
            MuxKind::Accept | MuxKind::Eof | MuxKind::Reset => (0, 0),
            MuxKind::Data => (1, MUX_MAX_PAYLOAD),
        }
    }
}

/// One decoded mux frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxFrame {
    pub stream: u32,
    pub kind: MuxKind,
    pub payload: Vec<u8>,
}

/// Why bytes are not a mux frame. Every variant but `Io` means the peer is broken.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("mux frame of unknown kind {0}")]
    UnknownKind(u8),
    #[error("mux {kind:?} frame with a {len}-byte payload (allowed: {min} to {max})")]
    BadLength {
        kind: MuxKind,
        len: u64,
        min: usize,
        max: usize,
    },
    #[error("mux {kind:?} frame on stream {stream} (listen uses stream 0, all else not)")]
    BadStream { kind: MuxKind, stream: u32 },
    #[error("channel closed inside a mux frame")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl MuxFrame {
    pub fn listen(port: u32) -> MuxFrame {
        Self::with(0, MuxKind::Listen, port.to_le_bytes().to_vec())
    }
    pub fn open(stream: u32, port: u32) -> MuxFrame {
        Self::with(stream, MuxKind::Open, port.to_le_bytes().to_vec())
    }
    pub fn accept(stream: u32) -> MuxFrame {
        Self::with(stream, MuxKind::Accept, Vec::new())
    }
    pub fn eof(stream: u32) -> MuxFrame {
        Self::with(stream, MuxKind::Eof, Vec::new())
    }
    pub fn reset(stream: u32) -> MuxFrame {
        Self::with(stream, MuxKind::Reset, Vec::new())
    }
    /// `Data` (the caller keeps `bytes` within 1..=[`MUX_MAX_PAYLOAD`]).
    pub fn data(stream: u32, bytes: &[u8]) -> MuxFrame {
        Self::with(stream, MuxKind::Data, bytes.to_vec())
    }

    fn with(stream: u32, kind: MuxKind, payload: Vec<u8>) -> MuxFrame {
        MuxFrame {
            stream,
            kind,
            payload,
        }
    }

    /// The port of a `Listen` or `Open` frame.
    pub fn port(&self) -> Option<u32> {
        match self.kind {
            MuxKind::Listen | MuxKind::Open => {
                Some(u32::from_le_bytes(self.payload.get(..4)?.try_into().ok()?))
            }
            _ => None,
        }
    }

    /// Header and payload in one buffer (one `write_all` keeps frames whole).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MUX_HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Checks a frame against the rules [`read_mux_frame`] applies.
    pub fn validate(&self) -> Result<(), MuxError> {
        check(self.stream, self.kind, self.payload.len() as u64)
    }
}

fn check(stream: u32, kind: MuxKind, len: u64) -> Result<(), MuxError> {
    let (min, max) = kind.payload_range();
    if len < min as u64 || len > max as u64 {
        return Err(MuxError::BadLength {
            kind,
            len,
            min,
            max,
        });
    }
    if (kind == MuxKind::Listen) != (stream == 0) {
        return Err(MuxError::BadStream { kind, stream });
    }
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of the channel (between frames).
pub fn read_mux_frame<R: Read + ?Sized>(r: &mut R) -> Result<Option<MuxFrame>, MuxError> {
    let mut head = [0u8; MUX_HEADER_LEN];
    let got = read_full(r, &mut head)?;
    if got == 0 {
        return Ok(None);
    }
    if got < MUX_HEADER_LEN {
        return Err(MuxError::Truncated);
    }
    let stream = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let kind = MuxKind::from_u8(head[4]).ok_or(MuxError::UnknownKind(head[4]))?;
    let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
    check(stream, kind, u64::from(len))?;
    // Bounded by `check`: at most MUX_MAX_PAYLOAD.
    let mut payload = vec![0u8; len as usize];
    if read_full(r, &mut payload)? < payload.len() {
        return Err(MuxError::Truncated);
    }
    Ok(Some(MuxFrame {
        stream,
        kind,
        payload,
    }))
}

/// Writes one frame in a single `write_all`; refuses a frame that breaks the rules.
pub fn write_mux_frame<W: Write + ?Sized>(w: &mut W, f: &MuxFrame) -> io::Result<()> {
    f.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    w.write_all(&f.encode())
}

/// Fills `buf` unless the stream ends first; returns how much was read.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
