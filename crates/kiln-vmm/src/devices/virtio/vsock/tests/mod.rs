//! vsock tests: a guest driver made of test queues in plain guest memory, against the
//! device with real unix sockets in a temp dir.

mod data;
mod guest;
mod host;
mod malformed;
mod restore;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::device::{EVQ, RXQ, TXQ};
use super::packet::{op, Header, HDR_LEN, HOST_CID, TYPE_STREAM};
use super::Vsock;
use crate::devices::virtio::test_utils::{guest_mem, TempDir, TestQueue};
use crate::devices::virtio::VirtioDevice;

pub const CID: u64 = 3;
/// Queue size of the test driver's rx and tx queues.
const QSIZE: u16 = 64;
/// Rx buffers: one descriptor each, like Linux's (4 KiB of payload after the header).
const RX_BUF: u64 = 0x10_0000;
const RX_STRIDE: u64 = 0x2000;
pub const RX_BUF_LEN: u32 = 4096 + HDR_LEN as u32;
/// Tx headers (one slot per tx descriptor pair) and payloads (16 slots of 64 KiB).
const TX_HDR: u64 = 0x18_0000;
const TX_DATA: u64 = 0x20_0000;
const TX_DATA_SLOTS: usize = 16;
/// The guest's advertised receive buffer.
pub const GUEST_BUF: u32 = 256 * 1024;

/// One packet the device put in an rx buffer.
#[derive(Debug, Clone)]
pub struct Pkt {
    pub hdr: Header,
    pub data: Vec<u8>,
}

pub struct Harness {
    pub mem: GuestMemoryMmap,
    rxq: TestQueue,
    pub txq: TestQueue,
    evq: TestQueue,
    pub queues: Vec<Queue>,
    pub dev: Vsock,
    pub dir: TempDir,
    free_rx: VecDeque<u16>,
    rx_seen: u16,
    tx_slot: usize,
    /// Re-post rx buffers as soon as their packets are read.
    pub auto_rx: bool,
    /// Rx buffers the device returned empty (unusable).
    pub skipped: usize,
    /// An epoll instance watching the device's backend fd.
    watch: Epoll,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_timeout(Duration::from_secs(2))
    }

    pub fn with_timeout(timeout: Duration) -> Self {
        let mem = guest_mem();
        let rxq = TestQueue::new(&mem, 0x1000, QSIZE);
        let txq = TestQueue::new(&mem, 0x2000, QSIZE);
        let evq = TestQueue::new(&mem, 0x3000, 8);
        let queues = vec![rxq.queue(), txq.queue(), evq.queue()];
        let dir = TempDir::new("virtio");
        let dev = Vsock::with_timeout(CID, &dir.path().join("v.sock"), timeout).unwrap();
        let watch = Epoll::new().unwrap();
        let ev = EpollEvent::new(EventSet::IN, 0);
        let fd = dev.backend_fd().unwrap();
        watch.ctl(ControlOperation::Add, fd, ev).unwrap();
        let mut h = Harness {
            mem,
            rxq,
            txq,
            evq,
            queues,
            dev,
            dir,
            free_rx: (0..QSIZE).collect(),
            rx_seen: 0,
            tx_slot: 0,
            auto_rx: true,
            skipped: 0,
            watch,
        };
        h.post_rx(QSIZE as usize);
        h
    }

    pub fn uds(&self) -> PathBuf {
        self.dir.path().join("v.sock")
    }

    /// Posts up to `n` rx buffers of [`RX_BUF_LEN`] bytes.
    pub fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            self.post_rx_buf(RX_BUF_LEN);
        }
    }

    /// Posts one rx buffer of `len` bytes (at most 8 KiB), if a descriptor is free.
    pub fn post_rx_buf(&mut self, len: u32) {
        let Some(id) = self.free_rx.pop_front() else {
            return;
        };
        let addr = RX_BUF + u64::from(id) * RX_STRIDE;
        self.rxq.write_desc(id, addr, len, 2, 0);
        self.rxq.publish(id);
    }

    pub fn rx_posted(&self) -> usize {
        QSIZE as usize - self.free_rx.len()
    }

    pub fn kick(&mut self, q: usize) -> bool {
        self.dev.process_queue(q, &mut self.queues, &self.mem)
    }

    pub fn backend(&mut self) -> bool {
        self.dev.process_backend(Some(&mut self.queues), &self.mem)
    }

    /// Packets the device completed since the last call.
    pub fn recv(&mut self) -> Vec<Pkt> {
        let mut out = Vec::new();
        while self.rx_seen != self.rxq.used_idx() {
            let (id, len) = self.rxq.used(self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let id = id as u16;
            self.free_rx.push_back(id);
            if len == 0 {
                self.skipped += 1;
                continue;
            }
            let addr = RX_BUF + u64::from(id) * RX_STRIDE;
            let mut raw = [0u8; HDR_LEN];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let hdr = Header::from_bytes(&raw);
            assert_eq!(
                len as usize,
                HDR_LEN + hdr.len as usize,
                "used len vs header"
            );
            let mut data = vec![0u8; hdr.len as usize];
            let at = GuestAddress(addr + HDR_LEN as u64);
            self.mem.read_slice(&mut data, at).unwrap();
            assert_eq!(
                (hdr.src_cid, hdr.dst_cid, hdr.type_),
                (HOST_CID, CID, TYPE_STREAM)
            );
            out.push(Pkt { hdr, data });
        }
        if self.auto_rx && !out.is_empty() {
            self.post_rx(out.len());
            self.kick(RXQ);
            out.extend(self.recv());
        }
        out
    }

    /// Whether the device's backend fd is readable (the event loop would call it).
    pub fn backend_ready(&self) -> bool {
        let mut evs = [EpollEvent::default(); 1];
        self.watch.wait(0, &mut evs).unwrap() > 0
    }

    /// Serves host events, as the event loop would, until the backend fd is quiet and
    /// nothing more arrives for the guest.
    pub fn pump(&mut self) -> Vec<Pkt> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let ready = self.backend_ready();
            if ready {
                self.backend();
            }
            let got = self.recv();
            if !ready && got.is_empty() {
                break;
            }
            out.extend(got);
        }
        out
    }

    /// Pumps until `pred` holds for the packets so far, or panics after `secs` seconds.
    pub fn pump_until(&mut self, secs: u64, pred: impl Fn(&[Pkt]) -> bool) -> Vec<Pkt> {
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        loop {
            out.extend(self.pump());
            if pred(&out) {
                return out;
            }
            assert!(std::time::Instant::now() < end, "timed out; got {out:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Puts a tx packet (header and optional payload descriptor) on the tx queue.
    /// The header's `len` is set to the payload's.
    pub fn queue_tx(&mut self, hdr: &Header, payload: &[u8]) {
        let hdr = Header {
            len: payload.len() as u32,
            ..*hdr
        };
        let slot = self.tx_slot;
        self.tx_slot = self.tx_slot.wrapping_add(1);
        let h = TX_HDR + (slot % QSIZE as usize) as u64 * 64;
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(h))
            .unwrap();
        if payload.is_empty() {
            self.txq.add_chain(&[(h, HDR_LEN as u32, false)]);
        } else {
            assert!(payload.len() <= 0x1_0000);
            let d = TX_DATA + (slot % TX_DATA_SLOTS) as u64 * 0x1_0000;
            self.mem.write_slice(payload, GuestAddress(d)).unwrap();
            let len = payload.len() as u32;
            self.txq
                .add_chain(&[(h, HDR_LEN as u32, false), (d, len, false)]);
        }
    }

    /// Sends one packet and returns what the device answered at once.
    pub fn send(&mut self, hdr: &Header, payload: &[u8]) -> Vec<Pkt> {
        let before = self.txq.used_idx();
        self.queue_tx(hdr, payload);
        self.kick(TXQ);
        assert_eq!(
            self.txq.used_idx(),
            before.wrapping_add(1),
            "tx not consumed"
        );
        self.recv()
    }

    /// A guest packet on the connection between host port `local` and guest port `peer`.
    pub fn hdr(&self, op: u16, local: u32, peer: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: peer,
            dst_port: local,
            type_: TYPE_STREAM,
            op,
            buf_alloc: GUEST_BUF,
            ..Header::default()
        }
    }

    /// A host client connected to guest port `port` through the whole handshake; returns
    /// the client and the host port it got.
    pub fn connect_host(&mut self, port: u32) -> (UnixStream, u32) {
        let mut c = UnixStream::connect(self.uds()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        let pkts = self.pump_until(2, |p| !p.is_empty());
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        let req = pkts[0].hdr;
        assert_eq!((req.op, req.dst_port, req.len), (op::REQUEST, port, 0));
        let local = req.src_port;
        let resp = self.hdr(op::RESPONSE, local, port);
        assert!(self.send(&resp, &[]).is_empty());
        assert_eq!(read_line(&mut c), format!("OK {local}"));
        (c, local)
    }

    /// Posts a 4-byte event buffer at `addr` on the event queue.
    pub fn post_event_buf(&mut self, addr: u64) {
        self.evq.add_chain(&[(addr, 4, true)]);
    }

    pub fn event_used(&self) -> (u16, (u32, u32)) {
        (self.evq.used_idx(), self.evq.used(0))
    }
}

/// Reads one `\n`-terminated line (without it).
pub fn read_line(c: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = c.read(&mut b).unwrap();
        assert_eq!(n, 1, "EOF before end of line; got {line:?}");
        if b[0] == b'\n' {
            return String::from_utf8(line).unwrap();
        }
        line.push(b[0]);
    }
}

/// True if the peer closed the stream (EOF or reset) with nothing more to read.
pub fn at_eof(c: &mut UnixStream) -> bool {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("expected EOF, read {:?}", &b[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e) => panic!("expected EOF, got {e}"),
    }
}

/// `n` bytes of a pattern that shows reordering and loss.
pub fn pattern(seed: u32, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as u8 ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn features_config_space_and_queues() {
    let h = Harness::new();
    assert_eq!(h.dev.device_type(), 19);
    assert_eq!(h.dev.queue_max_sizes().len(), 3);
    assert_eq!(h.dev.features(), 0);
    let mut cfg = [0xffu8; 12];
    h.dev.read_config(0, &mut cfg);
    assert_eq!(cfg, [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut hi = [0xffu8; 4];
    h.dev.read_config(4, &mut hi);
    assert_eq!(hi, [0; 4]);
    assert!(h.uds().exists());
    assert!(Vsock::new(2, &h.dir.path().join("x")).is_err());
    // The socket path is taken: a second device cannot bind it.
    assert!(Vsock::new(4, &h.uds()).is_err());
}

#[test]
fn dropping_the_device_removes_the_socket() {
    let h = Harness::new();
    let path = h.uds();
    assert!(path.exists());
    drop(h.dev);
    assert!(!path.exists());
}

#[test]
fn transport_reset_event_closes_connections() {
    let mut h = Harness::new();
    let (mut c, _) = h.connect_host(52);
    assert_eq!(h.dev.connections(), 1);
    // No event buffer: nothing to deliver, but connections are still dropped.
    assert!(!h.dev.send_transport_reset(&mut h.queues, &h.mem));
    assert!(at_eof(&mut c));
    let (_c2, _) = h.connect_host(53);
    h.mem
        .write_obj(0xffff_ffffu32, GuestAddress(0x3f_0000))
        .unwrap();
    h.post_event_buf(0x3f_0000);
    assert!(h.dev.send_transport_reset(&mut h.queues, &h.mem));
    assert_eq!(h.event_used(), (1, (0, 4)));
    let id: u32 = h.mem.read_obj(GuestAddress(0x3f_0000)).unwrap();
    assert_eq!(id, 0, "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET");
    assert_eq!(h.dev.connections(), 0);
    // Event-queue kicks do nothing else.
    assert!(!h.kick(EVQ));
}
