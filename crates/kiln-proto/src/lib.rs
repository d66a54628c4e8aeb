//! kiln-proto: the wire protocol between the host (`kiln`) and the guest agent.
//!
//! # Framing
//!
//! A connection carries frames. Each frame is a 12-byte header followed by a payload:
//!
//! | bytes | field | meaning |
//! | --- | --- | --- |
//! | 0..4 | `len` (u32 LE) | payload length, at most [`MAX_PAYLOAD`] |
//! | 4 | `kind` | [`Kind`]: hello, request, reply, data in/out, stdout, stderr, control |
//! | 5 | `flags` | [`FLAG_EOF`]: the last frame of a data stream |
//! | 6..8 | reserved | must be 0 |
//! | 8..12 | `id` (u32 LE) | request id: which operation the frame belongs to |
//!
//! Control payloads (hello, request, reply, control) are JSON documents ([`msg`]); data
//! payloads (stdin, stdout, stderr, file contents) are raw bytes, so any binary content
//! passes unchanged and without encoding overhead.
//!
//! # Connections and request ids
//!
//! The host opens a connection (a vsock stream to [`AGENT_PORT`]), sends `Hello` and may send
//! its first request right behind it without waiting (one round trip per operation). The
//! agent answers `Hello` with its own version; if the major versions differ it answers with
//! an `Error` reply and closes. Id 0 belongs to the connection itself (hello, protocol
//! errors not tied to an operation).
//!
//! Every request carries a host-chosen id, unique on its connection while the operation is
//! live; all frames of the operation (stdin, control, output, the final reply) carry it, so
//! many operations can share one connection. The `kiln` host library opens one connection
//! per operation (simple cancellation: closing the connection ends the operation — an exec
//! whose connection closes is killed), and the agent serves many operations on one
//! connection as well (tests use both).
//!
//! Where a VMM has no vsock (the QEMU backend), connections are carried as logical
//! streams over one virtio-console port: [`mux`] is that framing.
//!
//! # Errors
//!
//! A frame whose header is malformed (length over the limit, reserved bits set) cannot be
//! skipped safely: the agent answers with a `protocol` error on id 0 and closes that
//! connection. A well-framed frame with an unknown kind or an undecodable JSON payload
//! gets a `protocol` error reply with its id and the connection keeps serving.

pub mod frame;
pub mod identity;
pub mod msg;
pub mod mux;

pub use frame::{
    read_frame, write_frame, Decoder, Frame, FrameError, Kind, FLAG_EOF, HEADER_LEN, MAX_PAYLOAD,
};
pub use identity::{Reidentified, Reidentify};
pub use msg::*;
pub use mux::{
    read_mux_frame, write_mux_frame, MuxError, MuxFrame, MuxKind, MUX_HEADER_LEN, MUX_MAX_PAYLOAD,
};

/// Protocol version: bumped on incompatible changes.
pub const VERSION: u32 = 1;

/// The vsock port the agent listens on.
pub const AGENT_PORT: u32 = 1024;

/// Size of data chunks the host and agent send (below [`MAX_PAYLOAD`]).
pub const CHUNK: usize = 128 * 1024;
