//! What can go wrong publishing and forwarding ports.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A `PortSpec` that does not parse (the message says how to write one).
    #[error("{0}")]
    BadSpec(String),
    /// The host address is taken by another listener.
    #[error("{addr} is in use: choose another host port")]
    InUse { addr: SocketAddr },
    /// Any other bind failure (a host address this host does not have, a privileged port).
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    /// The guest side could not be reached.
    #[error("{0}")]
    Dial(String),
    /// The publisher process of a sandbox could not be started or did not report.
    #[error("publishing the ports of sandbox {id}: {reason}")]
    Publisher { id: String, reason: String },
}
