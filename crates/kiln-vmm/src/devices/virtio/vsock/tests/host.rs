//! Host-initiated connections: the `CONNECT` handshake, its failures and timeouts.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

use super::{at_eof, read_line, Harness, RX_BUF_LEN};
use crate::devices::virtio::test_utils::{activate, guest_mem, TempDir, TestQueue};
use crate::devices::virtio::vsock::credit::BUF_ALLOC;
use crate::devices::virtio::vsock::muxer::FIRST_LOCAL_PORT;
use crate::devices::virtio::vsock::packet::{op, Header, HDR_LEN, HOST_CID};
use crate::devices::virtio::{MmioTransport, VirtioDevice, Vsock, INT_USED_RING};

#[test]
fn connect_handshake() {
    let mut h = Harness::new();
    let mut c = UnixStream::connect(h.uds()).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    let pkts = h.pump();
    assert_eq!(pkts.len(), 1);
    let req = pkts[0].hdr;
    assert_eq!(req.op, op::REQUEST);
    assert_eq!((req.src_cid, req.dst_cid), (HOST_CID, super::CID));
    assert_eq!((req.src_port, req.dst_port), (FIRST_LOCAL_PORT, 52));
    assert_eq!((req.buf_alloc, req.fwd_cnt, req.len), (BUF_ALLOC, 0, 0));
    assert!(h
        .send(&h.hdr(op::RESPONSE, req.src_port, 52), &[])
        .is_empty());
    assert_eq!(read_line(&mut c), format!("OK {FIRST_LOCAL_PORT}"));
    // Host ports are unique among live connections.
    let (_c2, p2) = h.connect_host(52);
    assert_eq!(p2, FIRST_LOCAL_PORT + 1);
}

#[test]
fn connect_line_may_arrive_in_pieces() {
    let mut h = Harness::new();
    let mut c = UnixStream::connect(h.uds()).unwrap();
    c.write_all(b"CONN").unwrap();
    assert!(h.pump().is_empty());
    c.write_all(b"ECT 1").unwrap();
    assert!(h.pump().is_empty());
    // Data right behind the line is not eaten by the handshake.
    c.write_all(b"234\nhello").unwrap();
    let pkts = h.pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].hdr.op, pkts[0].hdr.dst_port), (op::REQUEST, 1234));
    let local = pkts[0].hdr.src_port;
    h.send(&h.hdr(op::RESPONSE, local, 1234), &[]);
    let pkts = h.pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].hdr.op, &pkts[0].data[..]), (op::RW, &b"hello"[..]));
}

#[test]
fn malformed_connect_lines_close_the_client() {
    let mut h = Harness::new();
    let long = [b'7'; 40];
    let lines: [&[u8]; 7] = [
        b"HELLO\n",
        b"CONNECT\n",
        b"CONNECT x\n",
        b"CONNECT 99999999999\n",
        b"connect 5\n",
        b"CONNECT 5 \n",
        &long,
    ];
    for line in lines {
        let mut c = UnixStream::connect(h.uds()).unwrap();
        c.write_all(line).unwrap();
        assert!(h.pump().is_empty(), "{line:?}");
        assert!(at_eof(&mut c), "{line:?}");
    }
    // A client that hangs up mid-line is forgotten; the listener keeps working.
    let c = UnixStream::connect(h.uds()).unwrap();
    (&c).write_all(b"CONNE").unwrap();
    drop(c);
    assert!(h.pump().is_empty());
    h.connect_host(5);
}

#[test]
fn guest_rst_closes_the_client() {
    let mut h = Harness::new();
    let mut c = UnixStream::connect(h.uds()).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    let req = h.pump()[0].hdr;
    // Nobody listens on guest port 52.
    assert!(h.send(&h.hdr(op::RST, req.src_port, 52), &[]).is_empty());
    assert!(at_eof(&mut c));
    assert_eq!(h.dev.connections(), 0);
}

#[test]
fn unanswered_connect_times_out() {
    let mut h = Harness::with_timeout(Duration::from_millis(50));
    let mut c = UnixStream::connect(h.uds()).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    let req = h.pump()[0].hdr;
    // The guest hears an RST for the REQUEST it never answered.
    let pkts = h.pump_until(2, |p| !p.is_empty());
    assert_eq!(pkts[0].hdr.op, op::RST);
    assert_eq!(
        (pkts[0].hdr.src_port, pkts[0].hdr.dst_port),
        (req.src_port, 52)
    );
    assert!(at_eof(&mut c));
    assert_eq!(h.dev.connections(), 0);
    // A late RESPONSE is refused.
    let late = h.send(&h.hdr(op::RESPONSE, req.src_port, 52), &[]);
    assert_eq!(late[0].hdr.op, op::RST);
}

#[test]
fn silent_clients_time_out() {
    let mut h = Harness::with_timeout(Duration::from_millis(50));
    let mut c = UnixStream::connect(h.uds()).unwrap();
    c.write_all(b"CONN").unwrap();
    assert!(h.pump().is_empty());
    std::thread::sleep(Duration::from_millis(80));
    h.pump();
    assert!(at_eof(&mut c));
}

#[test]
fn clients_wait_for_the_driver() {
    let mut h = Harness::new();
    let mut c = UnixStream::connect(h.uds()).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    // Before activation the device has no queues: the line is read, the REQUEST waits.
    assert!(!h.dev.process_backend(None, &h.mem));
    let pkts = h.pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].hdr.op, op::REQUEST);
    h.send(&h.hdr(op::RESPONSE, pkts[0].hdr.src_port, 52), &[]);
    assert_eq!(read_line(&mut c), format!("OK {FIRST_LOCAL_PORT}"));
}

#[test]
fn driven_by_the_event_manager_behind_the_transport() {
    let mem = guest_mem();
    let dir = TempDir::new("virtio");
    let uds = dir.path().join("v.sock");
    let dev = Vsock::new(3, &uds).unwrap();
    let mut t = MmioTransport::new(mem.clone(), Box::new(dev)).unwrap();
    let mut rx = TestQueue::new(&mem, 0x1000, 16);
    let tx = TestQueue::new(&mem, 0x2000, 16);
    let ev = TestQueue::new(&mem, 0x3000, 16);
    activate(&mut t, 19, &[&rx, &tx, &ev]);
    assert!(t.is_activated());
    rx.add_chain(&[(0x10_0000, RX_BUF_LEN, true)]);
    t.process_queue(0);
    assert_eq!(rx.used_idx(), 0);

    let t = Arc::new(Mutex::new(t));
    let mut em: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().unwrap();
    em.add_subscriber(t.clone());
    let mut c = UnixStream::connect(&uds).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    for _ in 0..10 {
        em.run_with_timeout(100).unwrap();
        if rx.used_idx() == 1 {
            break;
        }
    }
    assert_eq!(rx.used(0), (0, HDR_LEN as u32));
    let mut raw = [0u8; HDR_LEN];
    vm_memory::Bytes::read_slice(&mem, &mut raw, vm_memory::GuestAddress(0x10_0000)).unwrap();
    let req = Header::from_bytes(&raw);
    assert_eq!(
        (req.op, req.dst_port, req.buf_alloc),
        (op::REQUEST, 52, BUF_ALLOC)
    );
    let t = t.lock().unwrap();
    assert_eq!(t.interrupt().status() & INT_USED_RING, INT_USED_RING);
}
