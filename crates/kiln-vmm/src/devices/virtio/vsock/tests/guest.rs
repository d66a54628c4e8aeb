//! Guest-initiated connections, shutdown and reset in both directions.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use super::{at_eof, Harness};
use crate::devices::virtio::vsock::credit::BUF_ALLOC;
use crate::devices::virtio::vsock::packet::{op, SHUTDOWN_RCV, SHUTDOWN_SEND};

#[test]
fn guest_connects_to_a_listening_host_app() {
    let mut h = Harness::new();
    let listener = UnixListener::bind(h.dir.path().join("v.sock_5000")).unwrap();
    let pkts = h.send(&h.hdr(op::REQUEST, 5000, 1234), &[]);
    assert_eq!(pkts.len(), 1);
    let r = pkts[0].hdr;
    assert_eq!((r.op, r.src_port, r.dst_port), (op::RESPONSE, 5000, 1234));
    assert_eq!((r.buf_alloc, r.fwd_cnt), (BUF_ALLOC, 0));
    let (mut app, _) = listener.accept().unwrap();
    app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    assert!(h.send(&h.hdr(op::RW, 5000, 1234), b"ping").is_empty());
    let mut got = [0u8; 4];
    app.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    app.write_all(b"pong").unwrap();
    let pkts = h.pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].hdr.op, &pkts[0].data[..]), (op::RW, &b"pong"[..]));
    assert_eq!((pkts[0].hdr.src_port, pkts[0].hdr.dst_port), (5000, 1234));
    // Guest close(): SHUTDOWN with both flags; the device flushes, closes and answers RST.
    let mut bye = h.hdr(op::SHUTDOWN, 5000, 1234);
    bye.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    let pkts = h.send(&bye, &[]);
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].hdr.op, op::RST);
    assert!(at_eof(&mut app));
    assert_eq!(h.dev.connections(), 0);
}

#[test]
fn guest_connect_without_a_host_app_is_reset() {
    let mut h = Harness::new();
    let pkts = h.send(&h.hdr(op::REQUEST, 5001, 1234), &[]);
    assert_eq!(pkts.len(), 1);
    let r = pkts[0].hdr;
    assert_eq!((r.op, r.src_port, r.dst_port), (op::RST, 5001, 1234));
    assert_eq!(h.dev.connections(), 0);
    // A socket file nobody listens on: refused too.
    let dead = UnixListener::bind(h.dir.path().join("v.sock_5002")).unwrap();
    drop(dead);
    let pkts = h.send(&h.hdr(op::REQUEST, 5002, 1234), &[]);
    assert_eq!(pkts[0].hdr.op, op::RST);
}

#[test]
fn packets_for_unknown_connections_get_rst() {
    let mut h = Harness::new();
    for o in [
        op::RW,
        op::SHUTDOWN,
        op::CREDIT_UPDATE,
        op::CREDIT_REQUEST,
        op::RESPONSE,
        99,
    ] {
        let pkts = h.send(&h.hdr(o, 7, 8), b"x");
        assert_eq!(pkts.len(), 1, "op {o}");
        assert_eq!(pkts[0].hdr.op, op::RST, "op {o}");
        assert_eq!((pkts[0].hdr.src_port, pkts[0].hdr.dst_port), (7, 8));
    }
    // An RST is never answered.
    assert!(h.send(&h.hdr(op::RST, 7, 8), &[]).is_empty());
}

#[test]
fn duplicate_request_resets_the_connection() {
    let mut h = Harness::new();
    let _l = UnixListener::bind(h.dir.path().join("v.sock_5003")).unwrap();
    assert_eq!(
        h.send(&h.hdr(op::REQUEST, 5003, 9), &[])[0].hdr.op,
        op::RESPONSE
    );
    assert_eq!(h.send(&h.hdr(op::REQUEST, 5003, 9), &[])[0].hdr.op, op::RST);
    assert_eq!(h.dev.connections(), 0);
}

#[test]
fn guest_shutdown_send_gives_the_client_eof() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    h.send(&h.hdr(op::RW, local, 52), b"bye");
    let mut shut = h.hdr(op::SHUTDOWN, local, 52);
    shut.flags = SHUTDOWN_SEND;
    assert!(h.send(&shut, &[]).is_empty());
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye");
    // Half-closed: the client can still talk to the guest.
    c.write_all(b"still here").unwrap();
    let pkts = h.pump();
    assert_eq!(pkts.len(), 1);
    assert_eq!(&pkts[0].data[..], b"still here");
    // Data after the guest's SHUTDOWN(SEND) breaks the protocol.
    let pkts = h.send(&h.hdr(op::RW, local, 52), b"late");
    assert_eq!(pkts[0].hdr.op, op::RST);
    assert_eq!(h.dev.connections(), 0);
}

#[test]
fn client_close_asks_the_guest_to_close() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    c.write_all(b"last words").unwrap();
    drop(c);
    let pkts = h.pump();
    assert_eq!(pkts.len(), 2, "{pkts:?}");
    assert_eq!(
        (pkts[0].hdr.op, &pkts[0].data[..]),
        (op::RW, &b"last words"[..])
    );
    assert_eq!(pkts[1].hdr.op, op::SHUTDOWN);
    assert_eq!(pkts[1].hdr.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    // The guest's RST completes the close.
    assert!(h.send(&h.hdr(op::RST, local, 52), &[]).is_empty());
    assert_eq!(h.dev.connections(), 0);
}

#[test]
fn close_times_out_without_the_guest() {
    let mut h = Harness::with_timeout(Duration::from_millis(50));
    let (c, local) = h.connect_host(52);
    drop(c);
    let pkts = h.pump();
    assert_eq!(pkts[0].hdr.op, op::SHUTDOWN);
    let pkts = h.pump_until(2, |p| !p.is_empty());
    assert_eq!(pkts[0].hdr.op, op::RST);
    assert_eq!((pkts[0].hdr.src_port, pkts[0].hdr.dst_port), (local, 52));
    assert_eq!(h.dev.connections(), 0);
}

#[test]
fn client_half_close_then_guest_finishes() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    c.write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let pkts = h.pump();
    assert_eq!(pkts.len(), 2, "{pkts:?}");
    assert_eq!(&pkts[0].data[..], b"request");
    assert_eq!(
        (pkts[1].hdr.op, pkts[1].hdr.flags),
        (op::SHUTDOWN, SHUTDOWN_SEND)
    );
    assert!(h.send(&h.hdr(op::RW, local, 52), b"response").is_empty());
    let mut shut = h.hdr(op::SHUTDOWN, local, 52);
    shut.flags = SHUTDOWN_SEND;
    // Both sides are done: the device resets and closes.
    let pkts = h.send(&shut, &[]);
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].hdr.op, op::RST);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"response");
    assert_eq!(h.dev.connections(), 0);
}

#[test]
fn guest_rst_closes_an_established_connection() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    assert!(h.send(&h.hdr(op::RST, local, 52), &[]).is_empty());
    assert!(at_eof(&mut c));
    assert_eq!(h.dev.connections(), 0);
}

#[test]
fn guest_shutdown_rcv_stops_host_data() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    let mut shut = h.hdr(op::SHUTDOWN, local, 52);
    shut.flags = SHUTDOWN_RCV;
    assert!(h.send(&shut, &[]).is_empty());
    c.write_all(b"unwanted").unwrap();
    assert!(h.pump().is_empty());
    assert_eq!(h.dev.connections(), 1);
}
