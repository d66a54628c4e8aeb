//! `connect`: an agent connection turned into a raw TCP stream to a guest port.

use std::os::unix::net::UnixStream;

use kiln_proto::{Reply, Request};

use super::{unexpected, AgentAddr};
use crate::error::Result;

/// A raw byte stream to a guest port, and what the agent had already sent of it (bytes
/// that arrived behind the `Connected` reply, read with it).
pub struct Tunnel {
    pub stream: UnixStream,
    pub pending: Vec<u8>,
}

impl AgentAddr {
    /// Asks the agent to connect to `127.0.0.1:port` in the guest; on success the
    /// connection carries the guest port's bytes both ways (half-close works). A port
    /// nothing listens on is `Err` with "connection refused: nothing listens on guest
    /// port N".
    pub fn connect_port(&self, port: u16) -> Result<Tunnel> {
        let mut conn = self.open(&Request::Connect { port })?;
        match conn.reply()? {
            Reply::Connected => {}
            r => return Err(unexpected("connect", r)),
        }
        let pending = conn.reader.buffer().to_vec();
        Ok(Tunnel {
            stream: conn.reader.into_inner(),
            pending,
        })
    }
}
