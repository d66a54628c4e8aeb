//! virtio-vsock (virtio 1.2 §5.10), host side on unix sockets: Firecracker's "hybrid
//! vsock" model.
//!
//! # Host protocol
//!
//! Configure with `PUT /vsock {"guest_cid": 3, "uds_path": "/run/kiln/v.sock"}` (or the
//! `"vsock"` key of `--config-file`). The guest is CID `guest_cid`; the host is CID 2.
//!
//! * **Host to guest.** kiln-vmm listens on `uds_path`. Connect to it and write
//!   `CONNECT <port>\n` (decimal guest port; the line is at most 32 bytes, anything else
//!   closes the socket). When the guest accepts, you read `OK <host_port>\n`, where
//!   `host_port` is the port the guest sees the connection coming from (counting up from
//!   2^30); from then on the socket is a byte stream to the guest. If nothing listens on
//!   the guest port, or the guest does not answer within 2 s, the socket is closed
//!   without an `OK` line. Bytes written after the `CONNECT` line are delivered once the
//!   connection is established.
//! * **Guest to host.** A guest `connect()` to CID 2 port `P` is forwarded to the unix
//!   socket `<uds_path>_<P>`, which the host application must be listening on; if it is
//!   not there (or its backlog is full) the guest gets a connection reset at once.
//! * **Closing.** `shutdown(SHUT_WR)` on the host socket is a half-close: the guest reads
//!   EOF and can still send. When the guest shuts down its sending side the host socket's
//!   write half is shut down after all data is written, so the client reads EOF. A
//!   connection ends when both sides are done, or with a reset from either side (a closed
//!   host socket, a guest `close()`); the host socket is then closed.
//!
//! kiln-vmm removes `uds_path` when it exits; the `<uds_path>_<P>` sockets belong to the
//! host application.
//!
//! # Design
//!
//! * [`packet`]: the 44-byte header and bounds-checked copies out of tx chains and into rx
//!   chains.
//! * [`connection`]: one connection's state machine and its buffer of guest bytes the
//!   host socket has not taken yet (at most the 256 KiB we advertise).
//! * [`credit`]: credit accounting both ways; a guest that overruns its credit is reset.
//! * [`muxer`]: routes guest packets to connections and picks what fills the next rx
//!   buffer; bounds connections and queued RSTs.
//! * [`unix`]: the listener, the `CONNECT` line, the deadline timer and connecting to
//!   `<uds_path>_<P>`, all behind one epoll fd; [`sys`] holds the non-blocking socket
//!   calls.
//! * [`device`]: the `VirtioDevice`: config space (`guest_cid`, u64 LE), queues rx (0),
//!   tx (1), event (2), and only `VIRTIO_F_VERSION_1` (stream sockets; no SEQPACKET).
//!
//! Event loop: the device exposes its epoll fd as [`VirtioDevice::backend_fd`]; the
//! transport registers it next to the queue eventfds and calls
//! [`VirtioDevice::process_backend`] when it is readable (also before the driver is up, so
//! clients are accepted and their `CONNECT` lines read; REQUESTs then wait for rx
//! buffers). Host data is read from a socket only into an rx buffer the guest posted and
//! only up to the guest's credit; a readable socket that cannot be served is not polled
//! until an rx kick or a credit update lets it move, so nothing spins.
//!
//! Everything from the guest is hostile: header fields, payload lengths (at most 64 KiB
//! and within the chain, or the connection is reset), descriptor shapes and addresses.
//! The only allocations per connection are bounded by the credit we advertise.

mod connection;
mod credit;
pub mod device;
mod muxer;
pub mod packet;
mod sys;
#[cfg(test)]
mod tests;
mod unix;

use std::path::PathBuf;

pub use device::{Vsock, VsockState, VsockStateError};

/// The device kind, as snapshot messages name it.
pub const KIND: &str = "virtio-vsock";

/// Why the vsock device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest_cid {0} is invalid; use a CID from 3 to 4294967294")]
    Cid(u64),
    #[error("cannot listen on vsock uds_path {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}
