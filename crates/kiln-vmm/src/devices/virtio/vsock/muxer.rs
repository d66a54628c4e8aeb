//! Routes packets between the guest and the connections, and picks what goes into the
//! next rx buffer: first the RSTs for connections already gone, then the connections with
//! work, round robin.
//!
//! Bounds: at most [`MAX_CLIENTS`] connections; the RST queue is capped at
//! [`RST_QUEUE_MAX`], and the device stops taking tx packets while it holds
//! [`RST_BACKLOG`] or more, so a guest that sends packets but posts no rx buffers runs
//! into back-pressure instead of growing VMM memory.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::connection::{ConnError, ConnKey, Connection, Step};
use super::packet::{op, Header, HOST_CID, TYPE_STREAM};
use super::unix::{Backend, HostEvent, MAX_CLIENTS};
use crate::metrics::{add, inc, METRICS};

/// Host ports for host-initiated connections count up from here.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// While this many RSTs wait for rx buffers, tx processing pauses.
pub const RST_BACKLOG: usize = 256;
/// RSTs beyond this are dropped (a host-side flood with a stalled guest).
const RST_QUEUE_MAX: usize = 4 * MAX_CLIENTS;

pub struct Muxer {
    guest_cid: u64,
    timeout: Duration,
    backend: Backend,
    conns: HashMap<ConnKey, Connection>,
    by_token: HashMap<u64, ConnKey>,
    ready: VecDeque<ConnKey>,
    rsts: VecDeque<Header>,
    next_port: u32,
    events: Vec<HostEvent>,
}

impl Muxer {
    pub fn new(guest_cid: u64, uds_path: &Path, timeout: Duration) -> std::io::Result<Muxer> {
        Ok(Muxer {
            guest_cid,
            timeout,
            backend: Backend::new(uds_path, timeout)?,
            conns: HashMap::new(),
            by_token: HashMap::new(),
            ready: VecDeque::new(),
            rsts: VecDeque::new(),
            next_port: FIRST_LOCAL_PORT,
            events: Vec::new(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.backend.fd()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn has_rx_work(&self) -> bool {
        !self.rsts.is_empty() || !self.ready.is_empty()
    }

    /// Too many RSTs wait for rx buffers to take more tx packets.
    pub fn rst_backlogged(&self) -> bool {
        self.rsts.len() >= RST_BACKLOG
    }

    fn push_rst(&mut self, hdr: Header) {
        if self.rsts.len() < RST_QUEUE_MAX {
            self.rsts.push_back(hdr);
        } else {
            tracing::warn!(
                "vsock: RST queue full; dropping an RST to port {}",
                hdr.dst_port
            );
        }
    }

    /// Re-registers the connection's stream and queues it if it has something to send.
    fn touch(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.is_done() {
            tracing::debug!("vsock: connection {key:?} closed cleanly");
            self.reset(key);
            return;
        }
        if let Err(e) = conn.sync_interest(self.backend.epoll()) {
            tracing::warn!("vsock: cannot watch connection {key:?}: {e}");
            self.reset(key);
            return;
        }
        if let Some(at) = conn.deadline {
            self.backend.schedule(at);
        }
        if !conn.queued && conn.has_rx_work() {
            conn.queued = true;
            self.ready.push_back(key);
        }
    }

    /// Closes the connection's stream and tells the guest (RST) if it knew of it.
    pub fn reset(&mut self, key: ConnKey) {
        if let Some(conn) = self.remove(key) {
            if conn.guest_knows() {
                self.push_rst(conn.rst_header());
            }
        }
    }

    fn reset_with(&mut self, key: ConnKey, why: &ConnError) {
        tracing::debug!("vsock: resetting connection {key:?}: {why}");
        self.reset(key);
    }

    fn remove(&mut self, key: ConnKey) -> Option<Connection> {
        let conn = self.conns.remove(&key)?;
        inc(&METRICS.vsock.conns_closed);
        self.by_token.remove(&conn.token);
        if conn.queued {
            // Not left behind: a new connection with the same key would be queued twice.
            self.ready.retain(|k| *k != key);
        }
        Some(conn)
    }

    /// Drops every connection without telling the guest (device or transport reset).
    pub fn reset_all(&mut self) {
        add(&METRICS.vsock.conns_closed, self.conns.len() as u64);
        self.conns.clear();
        self.by_token.clear();
        self.ready.clear();
        self.rsts.clear();
    }

    fn alloc_port(&mut self) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|k| k.local_port == port) {
                return port;
            }
        }
    }

    /// Serves the host side: new clients, stream readiness, deadlines.
    pub fn process_host_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.backend.poll(self.conns.len(), &mut events);
        for ev in events.drain(..) {
            match ev {
                HostEvent::Connect {
                    stream,
                    token,
                    port,
                } => {
                    let key = ConnKey {
                        local_port: self.alloc_port(),
                        peer_port: port,
                    };
                    let conn = Connection::host_initiated(
                        stream,
                        token,
                        key,
                        self.guest_cid,
                        self.timeout,
                    );
                    tracing::debug!(
                        "vsock: host client connecting to guest port {port} as {key:?}"
                    );
                    self.insert(conn);
                }
                HostEvent::Stream { token, events } => {
                    let Some(&key) = self.by_token.get(&token) else {
                        continue;
                    };
                    let Some(conn) = self.conns.get_mut(&key) else {
                        continue;
                    };
                    match conn.on_host_event(events) {
                        Ok(()) => self.touch(key),
                        Err(e) => self.reset_with(key, &e),
                    }
                }
                HostEvent::Timer => self.sweep(),
            }
        }
        self.events = events;
    }

    fn insert(&mut self, conn: Connection) {
        let key = conn.key();
        self.by_token.insert(conn.token, key);
        inc(&METRICS.vsock.conns_opened);
        self.conns.insert(key, conn);
        self.touch(key);
    }

    /// Resets connections past their deadline: a REQUEST the guest never answered, or a
    /// close the guest never finished.
    fn sweep(&mut self) {
        let now = Instant::now();
        let expired: Vec<ConnKey> = self
            .conns
            .values()
            .filter(|c| c.deadline.is_some_and(|d| d <= now))
            .map(Connection::key)
            .collect();
        for key in expired {
            tracing::warn!("vsock: connection {key:?} timed out");
            self.reset(key);
        }
        if let Some(at) = self.conns.values().filter_map(|c| c.deadline).min() {
            self.backend.schedule(at);
        }
    }

    /// A packet from the guest (`payload` is the RW data; empty for other ops).
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if hdr.src_cid != self.guest_cid {
            tracing::warn!(
                "vsock: dropping a packet from CID {} (guest is {})",
                hdr.src_cid,
                self.guest_cid
            );
            return;
        }
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            tracing::debug!(
                "vsock: refusing a packet to CID {} of type {}",
                hdr.dst_cid,
                hdr.type_
            );
            self.refuse(hdr);
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        let Some(conn) = self.conns.get_mut(&key) else {
            if hdr.op == op::REQUEST {
                self.guest_connect(hdr);
            } else {
                self.refuse(hdr);
            }
            return;
        };
        conn.update_peer_credit(hdr);
        let result = match hdr.op {
            op::RW => conn.on_rw(payload),
            op::RESPONSE => conn.on_response(),
            op::SHUTDOWN => conn.on_shutdown(hdr.flags),
            op::CREDIT_UPDATE => Ok(()),
            op::CREDIT_REQUEST => {
                conn.on_credit_request();
                Ok(())
            }
            op::RST => {
                tracing::debug!("vsock: guest reset connection {key:?}");
                self.remove(key);
                return;
            }
            op::REQUEST => Err(ConnError::Protocol("REQUEST for an open connection")),
            _ => Err(ConnError::Protocol("unknown operation")),
        };
        match result {
            Ok(()) => self.touch(key),
            Err(e) => self.reset_with(key, &e),
        }
    }

    /// A guest packet that could not be read in full: reset what it names.
    pub fn on_bad_packet(&mut self, hdr: &Header) {
        if hdr.src_cid != self.guest_cid {
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if self.conns.contains_key(&key) {
            self.reset(key);
        } else {
            self.refuse(hdr);
        }
    }

    /// Answers a packet with RST (never an RST with an RST).
    fn refuse(&mut self, hdr: &Header) {
        if hdr.op != op::RST {
            self.push_rst(hdr.rst_reply());
        }
    }

    /// The guest connects to host port `hdr.dst_port`: `<uds_path>_<port>`.
    fn guest_connect(&mut self, hdr: &Header) {
        if self.conns.len() >= MAX_CLIENTS {
            tracing::warn!("vsock: {MAX_CLIENTS} connections open; refusing the guest");
            self.refuse(hdr);
            return;
        }
        match self.backend.connect_port(hdr.dst_port) {
            Ok(stream) => {
                let token = self.backend.new_token();
                let conn =
                    Connection::guest_initiated(stream, token, hdr, self.guest_cid, self.timeout);
                tracing::debug!("vsock: guest connected to host port {}", hdr.dst_port);
                self.insert(conn);
            }
            Err(e) => {
                tracing::debug!("vsock: guest connect to host port {}: {e}", hdr.dst_port);
                self.refuse(hdr);
            }
        }
    }

    /// The next packet for the guest, its payload read into `buf` (at most `buf.len()`
    /// bytes). None when nothing is ready.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(rst) = self.rsts.pop_front() {
            return Some((rst, 0));
        }
        // Each queued connection gets one turn: one that cannot fill this buffer (say, data
        // but a header-only buffer) goes back to the end of the queue, not round again.
        for _ in 0..self.ready.len() {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.queued = false;
            match conn.next_packet(buf) {
                Step::Packet(hdr, len) => {
                    // Requeue if more is waiting; close if that was the last word.
                    self.touch(key);
                    return Some((hdr, len));
                }
                Step::Idle => self.touch(key),
                Step::Reset(e) => {
                    self.reset_with(key, &e);
                    if let Some(rst) = self.rsts.pop_front() {
                        return Some((rst, 0));
                    }
                }
            }
        }
        None
    }
}
