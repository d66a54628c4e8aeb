//! How a forwarded connection reaches the guest port.
//!
//! * [`Dial::Agent`]: over the agent's vsock (`connect` in kiln-proto): works with no NIC
//!   at all; what `kiln port-forward` uses, and published ports of a sandbox without a
//!   network.
//! * [`Dial::Netns`]: a TCP connect to the guest's address made from inside the
//!   sandbox's network namespace: a short-lived thread `setns(CLONE_NEWNET)`s into it and
//!   creates the socket, which stays in that namespace after the thread is gone. What
//!   published ports use when the sandbox has a network (the guest then sees an
//!   ordinary TCP client from its gateway).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use super::error::PortError;
use super::splice::Duplex;
use crate::agent::AgentAddr;

/// How long a connect into the sandbox's namespace may take.
const NETNS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub enum Dial {
    /// The agent's vsock socket (`<sandbox>/v.sock`).
    Agent(AgentAddr),
    /// A namespace file (`/run/netns/kiln-<id>`) and the guest's address in it.
    Netns { netns: PathBuf, guest: Ipv4Addr },
}

/// A connection to a guest port: the stream and bytes already read from it.
pub struct Dialed {
    pub stream: Box<dyn Duplex>,
    pub pending: Vec<u8>,
}

impl Dial {
    /// Connects to `guest_port`.
    pub fn connect(&self, guest_port: u16) -> Result<Dialed, PortError> {
        match self {
            Dial::Agent(agent) => {
                let t = agent.connect_port(guest_port).map_err(|e| {
                    let why = match e {
                        crate::Error::GuestFile { message, .. } => message,
                        e => e.to_string(),
                    };
                    PortError::Dial(format!("sandbox {}: {why}", agent.sandbox))
                })?;
                Ok(Dialed {
                    stream: Box::new(t.stream),
                    pending: t.pending,
                })
            }
            Dial::Netns { netns, guest } => {
                let addr = SocketAddr::from((*guest, guest_port));
                let s = connect_in(netns, addr).map_err(|e| {
                    PortError::Dial(match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => format!(
                            "connection refused: nothing listens on guest port {guest_port}"
                        ),
                        _ => format!("cannot connect to {addr} in {}: {e}", netns.display()),
                    })
                })?;
                Ok(Dialed {
                    stream: Box::new(s),
                    pending: Vec::new(),
                })
            }
        }
    }
}

/// A TCP connection made from inside the namespace at `netns` (the socket belongs to it).
fn connect_in(netns: &std::path::Path, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let ns = std::fs::File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::net::netns::enter(&ns)?;
            let t = TcpStream::connect_timeout(&addr, NETNS_CONNECT_TIMEOUT)?;
            let _ = t.set_nodelay(true);
            Ok(t)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
