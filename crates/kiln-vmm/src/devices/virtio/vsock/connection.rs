//! One stream between a guest port and a host unix socket: its state machine and the
//! guest's bytes waiting for the host socket.
//!
//! Flow control ([`Credit`]): guest bytes the socket did not take wait in `to_host`; a
//! guest that sends beyond its credit is reset, so `to_host` never exceeds the
//! `BUF_ALLOC` we advertise. A CREDIT_UPDATE goes out when the credit says one is due, or
//! when the guest asks. We read from the socket only up to the guest's credit.
//!
//! Readiness: a stream is polled for EPOLLIN only until it is known to be readable; it then
//! waits (unpolled) for guest credit and rx buffers and is polled again once a read finds it
//! drained. So a stream the guest cannot take data from never keeps the event loop busy.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::credit::Credit;
use super::packet::{op, Header, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::sys::{read_some, write_some};
use crate::metrics::{add, METRICS};
/// `to_host` keeps at most this much spare capacity once drained.
const IDLE_CAPACITY: usize = 64 * 1024;

/// A connection's identity: our port on the host (CID 2) and the guest's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: REQUEST queued or sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

/// Why a connection must be reset.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("guest sent {len} bytes with only {room} bytes of credit left")]
    CreditOverrun { len: usize, room: usize },
    #[error("guest protocol error: {0}")]
    Protocol(&'static str),
    #[error("host socket: {0}")]
    Io(#[from] io::Error),
}

/// What a connection has for the rx queue.
pub enum Step {
    /// A packet: the header and the payload length (payload in the caller's buffer).
    Packet(Header, usize),
    /// Nothing now.
    Idle,
    /// The host socket failed: reset the connection.
    Reset(ConnError),
}

pub struct Connection {
    stream: UnixStream,
    /// Epoll data for the stream.
    pub token: u64,
    key: ConnKey,
    guest_cid: u64,
    state: State,
    timeout: Duration,
    /// Connect deadline (Connecting) or close deadline (after our SHUTDOWN with RCV|SEND).
    pub deadline: Option<Instant>,
    send_request: bool,
    request_sent: bool,
    send_response: bool,
    send_shutdown: bool,
    shutdown_sent: bool,
    send_credit_update: bool,
    to_host: VecDeque<u8>,
    credit: Credit,
    /// `SHUTDOWN_*` flags the guest sent.
    peer_shut: u32,
    write_shut: bool,
    host_eof: bool,
    host_hup: bool,
    readable: bool,
    registered: Option<EventSet>,
    /// On the muxer's ready list.
    pub queued: bool,
}

impl Connection {
    fn new(
        stream: UnixStream,
        token: u64,
        key: ConnKey,
        guest_cid: u64,
        timeout: Duration,
    ) -> Self {
        Connection {
            stream,
            token,
            key,
            guest_cid,
            state: State::Connecting,
            timeout,
            deadline: None,
            send_request: false,
            request_sent: false,
            send_response: false,
            send_shutdown: false,
            shutdown_sent: false,
            send_credit_update: false,
            to_host: VecDeque::new(),
            credit: Credit::default(),
            peer_shut: 0,
            write_shut: false,
            host_eof: false,
            host_hup: false,
            readable: false,
            registered: None,
            queued: false,
        }
    }

    /// A host client's connection to guest port `key.peer_port`: a REQUEST is queued.
    pub fn host_initiated(
        stream: UnixStream,
        token: u64,
        key: ConnKey,
        guest_cid: u64,
        timeout: Duration,
    ) -> Self {
        let mut c = Connection::new(stream, token, key, guest_cid, timeout);
        c.send_request = true;
        c.deadline = Some(Instant::now() + timeout);
        c
    }

    /// The guest's REQUEST `hdr`, already connected to the host socket: a RESPONSE is queued.
    pub fn guest_initiated(
        stream: UnixStream,
        token: u64,
        hdr: &Header,
        guest_cid: u64,
        timeout: Duration,
    ) -> Self {
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        let mut c = Connection::new(stream, token, key, guest_cid, timeout);
        c.state = State::Established;
        c.send_response = true;
        c.update_peer_credit(hdr);
        c
    }

    pub fn key(&self) -> ConnKey {
        self.key
    }

    /// Whether the guest has heard of this connection (and must be told when it ends).
    pub fn guest_knows(&self) -> bool {
        self.state == State::Established || self.request_sent
    }

    /// Every guest packet carries its receive buffer size and forwarded count.
    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.credit.update_peer(hdr.buf_alloc, hdr.fwd_cnt);
    }

    /// The guest accepted our REQUEST: tell the host client which port it got.
    pub fn on_response(&mut self) -> Result<(), ConnError> {
        if self.state != State::Connecting || !self.request_sent {
            return Err(ConnError::Protocol("RESPONSE to no pending REQUEST"));
        }
        let line = format!("OK {}\n", self.key.local_port);
        // A fresh socket's send buffer is empty, so a short write means the client broke.
        match (&self.stream).write(line.as_bytes()) {
            Ok(n) if n == line.len() => {}
            Ok(_) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Err(e) => return Err(e.into()),
        }
        self.state = State::Established;
        self.deadline = None;
        Ok(())
    }

    /// The guest asked for our credit.
    pub fn on_credit_request(&mut self) {
        self.send_credit_update = true;
    }

    /// Payload of an RW packet from the guest.
    pub fn on_rw(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if self.state != State::Established {
            return Err(ConnError::Protocol(
                "data before the connection was established",
            ));
        }
        if self.peer_shut & SHUTDOWN_SEND != 0 {
            return Err(ConnError::Protocol("data after SHUTDOWN(SEND)"));
        }
        if let Err(room) = self.credit.receive(data.len()) {
            return Err(ConnError::CreditOverrun {
                len: data.len(),
                room,
            });
        }
        let mut rest = data;
        if self.to_host.is_empty() {
            let n = write_some(&self.stream, data)?;
            self.forwarded(n);
            rest = &data[n..];
        }
        self.to_host.extend(rest);
        Ok(())
    }

    /// The guest's SHUTDOWN flags (they accumulate).
    pub fn on_shutdown(&mut self, flags: u32) -> Result<(), ConnError> {
        self.peer_shut |= flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        self.flush()
    }

    /// Readiness of the host socket.
    pub fn on_host_event(&mut self, events: EventSet) -> Result<(), ConnError> {
        if events.contains(EventSet::HANG_UP) {
            self.host_hup = true;
        }
        // A hang-up or error may still leave data to read: reading finds it (or the error).
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) && !self.host_eof {
            self.readable = true;
        }
        if events.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes buffered guest data to the host socket; once all of it is out and the guest
    /// will send no more, shuts the socket's write half (the client reads EOF).
    pub fn flush(&mut self) -> Result<(), ConnError> {
        while !self.to_host.is_empty() {
            let n = write_some(&self.stream, self.to_host.as_slices().0)?;
            if n == 0 {
                break;
            }
            self.to_host.drain(..n);
            self.forwarded(n);
        }
        if self.to_host.is_empty() {
            if self.to_host.capacity() > IDLE_CAPACITY {
                self.to_host.shrink_to(IDLE_CAPACITY);
            }
            if self.peer_shut & SHUTDOWN_SEND != 0 && !self.write_shut {
                // The client may be gone already (ENOTCONN); nothing to do then.
                let _ = self.stream.shutdown(Shutdown::Write);
                self.write_shut = true;
            }
        }
        Ok(())
    }

    fn forwarded(&mut self, n: usize) {
        add(&METRICS.vsock.tx_bytes, n as u64);
        if self.credit.forwarded(n) {
            self.send_credit_update = true;
        }
    }

    /// Both directions are finished: the guest sends nothing more and all it sent reached
    /// the socket, and either the guest receives nothing more or it heard our EOF.
    pub fn is_done(&self) -> bool {
        self.state == State::Established
            && self.peer_shut & SHUTDOWN_SEND != 0
            && self.to_host.is_empty()
            && (self.peer_shut & SHUTDOWN_RCV != 0 || self.shutdown_sent)
    }

    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.readable
            && !self.host_eof
            && self.peer_shut & SHUTDOWN_RCV == 0
            && self.credit.peer_credit() > 0
    }

    /// Whether [`Connection::next_packet`] may produce something.
    pub fn has_rx_work(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_shutdown
            || self.send_credit_update
            || self.can_send_data()
    }

    /// The next packet for the guest; data is read from the socket into `buf` (at most its
    /// length and the guest's credit).
    pub fn next_packet(&mut self, buf: &mut [u8]) -> Step {
        if std::mem::take(&mut self.send_request) {
            self.request_sent = true;
            return Step::Packet(self.header(op::REQUEST, 0, 0), 0);
        }
        if std::mem::take(&mut self.send_response) {
            return Step::Packet(self.header(op::RESPONSE, 0, 0), 0);
        }
        if self.can_send_data() && !buf.is_empty() {
            let max = buf.len().min(self.credit.peer_credit() as usize);
            match read_some(&self.stream, &mut buf[..max]) {
                Ok(Some(0)) => {
                    self.host_eof = true;
                    self.readable = false;
                    self.send_shutdown = true;
                }
                Ok(Some(n)) => {
                    // n <= MAX_PAYLOAD.
                    self.credit.sent(n as u32);
                    return Step::Packet(self.header(op::RW, n as u32, 0), n);
                }
                Ok(None) => self.readable = false,
                Err(e) => return Step::Reset(e.into()),
            }
        }
        if std::mem::take(&mut self.send_shutdown) {
            self.shutdown_sent = true;
            let mut flags = SHUTDOWN_SEND;
            if self.host_hup {
                // The client is gone both ways: ask the guest to close, and give it time.
                flags |= SHUTDOWN_RCV;
                self.deadline = Some(Instant::now() + self.timeout);
            }
            return Step::Packet(self.header(op::SHUTDOWN, 0, flags), 0);
        }
        if self.send_credit_update {
            return Step::Packet(self.header(op::CREDIT_UPDATE, 0, 0), 0);
        }
        Step::Idle
    }

    /// A header from us to the guest; every one carries our credit, so any packet counts
    /// as a credit update.
    fn header(&mut self, op: u16, len: u32, flags: u32) -> Header {
        self.send_credit_update = false;
        let (buf_alloc, fwd_cnt) = self.credit.stamp();
        Header {
            op,
            len,
            flags,
            buf_alloc,
            fwd_cnt,
            ..self.rst_header()
        }
    }

    /// The RST that tells the guest this connection is gone.
    pub fn rst_header(&self) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            type_: TYPE_STREAM,
            op: op::RST,
            ..Header::default()
        }
    }

    fn interest(&self) -> EventSet {
        let mut ev = EventSet::empty();
        if self.state == State::Established
            && !self.readable
            && !self.host_eof
            && self.peer_shut & SHUTDOWN_RCV == 0
        {
            ev |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            ev |= EventSet::OUT;
        }
        ev
    }

    /// Makes the epoll registration match what the connection waits for. With nothing to
    /// wait for the stream is removed, since epoll reports hang-ups even with no events set.
    pub fn sync_interest(&mut self, epoll: &Epoll) -> io::Result<()> {
        let want = self.interest();
        let fd = self.stream.as_raw_fd();
        let event = EpollEvent::new(want, self.token);
        match self.registered {
            None if want.is_empty() => return Ok(()),
            None => epoll.ctl(ControlOperation::Add, fd, event)?,
            Some(_) if want.is_empty() => epoll.ctl(ControlOperation::Delete, fd, event)?,
            Some(cur) if cur != want => epoll.ctl(ControlOperation::Modify, fd, event)?,
            Some(_) => return Ok(()),
        }
        self.registered = (!want.is_empty()).then_some(want);
        Ok(())
    }
}
