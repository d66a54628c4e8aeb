//! Hostile descriptor chains and headers: each is dropped or answered with RST, nothing
//! panics, and the queues keep working.

use std::io::Write;

use vm_memory::{Bytes, GuestAddress};

use super::{at_eof, Harness, RX_BUF_LEN};
use crate::devices::virtio::vsock::device::{RXQ, TXQ};
use crate::devices::virtio::vsock::muxer::RST_BACKLOG;
use crate::devices::virtio::vsock::packet::{op, Header, HDR_LEN, MAX_PAYLOAD};

const HDR_AT: u64 = 0x3e_0000;
const HL: u32 = HDR_LEN as u32;
/// (name, header, chain of (addr, len, device-writable), RSTs expected).
type Case = (&'static str, Header, &'static [(u64, u32, bool)], usize);
const DATA_AT: u64 = 0x3f_0000;

/// Submits one raw tx chain and returns the packets the device answered with.
fn submit(h: &mut Harness, hdr: &Header, bufs: &[(u64, u32, bool)]) -> usize {
    h.mem
        .write_slice(&hdr.to_bytes(), GuestAddress(HDR_AT))
        .unwrap();
    let before = h.txq.used_idx();
    h.txq.add_chain(bufs);
    h.kick(TXQ);
    assert_eq!(
        h.txq.used_idx(),
        before.wrapping_add(1),
        "chain not completed"
    );
    let pkts = h.recv();
    assert!(pkts.iter().all(|p| p.hdr.op == op::RST), "{pkts:?}");
    pkts.len()
}

/// A valid REQUEST to a port nobody serves still gets its RST.
fn assert_tx_works(h: &mut Harness) {
    let pkts = h.send(&h.hdr(op::REQUEST, 4444, 1), &[]);
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].hdr.op, op::RST);
}

#[test]
fn malformed_tx_chains_are_dropped_or_reset() {
    let mut h = Harness::new();
    let mut rw = h.hdr(op::RW, 7, 8);
    rw.len = 100;
    let cases: &[Case] = &[
        ("short header", rw, &[(HDR_AT, 20, false)], 0),
        ("writable header", rw, &[(HDR_AT, HL, true)], 0),
        ("header off memory", rw, &[(u64::MAX - 10, HL, false)], 0),
        ("header past the end", rw, &[(0x3f_fff0, HL, false)], 0),
        ("payload missing", rw, &[(HDR_AT, HL, false)], 1),
        (
            "payload short",
            rw,
            &[(HDR_AT, HL, false), (DATA_AT, 99, false)],
            1,
        ),
        (
            "payload writable",
            rw,
            &[(HDR_AT, HL, false), (DATA_AT, 100, true)],
            1,
        ),
        (
            "payload off memory",
            rw,
            &[(HDR_AT, HL, false), (u64::MAX - 50, 100, false)],
            1,
        ),
        (
            "huge len",
            Header {
                len: u32::MAX,
                ..rw
            },
            &[(HDR_AT, HL, false)],
            1,
        ),
        (
            "len over cap",
            Header {
                len: MAX_PAYLOAD as u32 + 1,
                ..rw
            },
            &[(HDR_AT, HL, false), (0x20_0000, 0x2_0000, false)],
            1,
        ),
        (
            "seqpacket",
            Header {
                type_: 2,
                len: 0,
                ..rw
            },
            &[(HDR_AT, HL, false)],
            1,
        ),
        (
            "not to the host",
            Header {
                dst_cid: 5,
                len: 0,
                ..rw
            },
            &[(HDR_AT, HL, false)],
            1,
        ),
        (
            "spoofed source",
            Header {
                src_cid: 9,
                len: 0,
                ..rw
            },
            &[(HDR_AT, HL, false)],
            0,
        ),
        (
            "rst with bad len",
            Header { op: op::RST, ..rw },
            &[(HDR_AT, HL, false)],
            0,
        ),
    ];
    for (name, hdr, bufs, rsts) in cases {
        assert_eq!(submit(&mut h, hdr, bufs), *rsts, "{name}");
        assert_tx_works(&mut h);
    }
}

#[test]
fn header_split_across_descriptors_is_fine() {
    let mut h = Harness::new();
    let hdr = h.hdr(op::REQUEST, 4444, 1);
    let bufs = [
        (HDR_AT, 10, false),
        (HDR_AT + 10, 1, false),
        (HDR_AT + 11, 33, false),
    ];
    assert_eq!(submit(&mut h, &hdr, &bufs), 1);
    // Header and payload sharing descriptors, split anywhere.
    let (mut c, local) = h.connect_host(52);
    let mut rw = h.hdr(op::RW, local, 52);
    rw.len = 11;
    h.mem
        .write_slice(b"hello world", GuestAddress(HDR_AT + HL as u64))
        .unwrap();
    let bufs = [(HDR_AT, HL + 5, false), (HDR_AT + HL as u64 + 5, 6, false)];
    assert_eq!(submit(&mut h, &rw, &bufs), 0);
    let mut got = [0u8; 11];
    std::io::Read::read_exact(&mut c, &mut got).unwrap();
    assert_eq!(&got, b"hello world");
}

#[test]
fn bad_packets_reset_their_connection() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    let mut rw = h.hdr(op::RW, local, 52);
    rw.len = 5000;
    // Payload shorter than announced: RST, and the client is closed.
    assert_eq!(
        submit(
            &mut h,
            &rw,
            &[(HDR_AT, HDR_LEN as u32, false), (DATA_AT, 10, false)]
        ),
        1
    );
    assert!(at_eof(&mut c));
    assert_eq!(h.dev.connections(), 0);
    let (mut c, local) = h.connect_host(53);
    let unknown = h.hdr(99, local, 53);
    assert_eq!(h.send(&unknown, &[])[0].hdr.op, op::RST);
    assert!(at_eof(&mut c));
}

#[test]
fn bad_tx_head_and_descriptor_loops_are_survived() {
    let mut h = Harness::new();
    h.txq.publish(1000);
    h.kick(TXQ);
    // A descriptor chained to itself ends after the queue size; it is a valid header.
    let hdr = h.hdr(op::REQUEST, 4444, 2);
    h.mem
        .write_slice(&hdr.to_bytes(), GuestAddress(HDR_AT))
        .unwrap();
    h.txq.write_desc(40, HDR_AT, HDR_LEN as u32, 1, 40);
    h.txq.publish(40);
    h.kick(TXQ);
    assert_eq!(h.recv().len(), 1);
    assert_tx_works(&mut h);
}

#[test]
fn unusable_rx_buffers_are_skipped_without_losing_data() {
    let mut h = Harness::new();
    let (mut c, _) = h.connect_host(52);
    h.auto_rx = false;
    // Use up the posted buffers with RSTs, then offer only bad ones.
    while h.rx_posted() > 0 {
        h.send(&h.hdr(op::RW, 1, 1), b"x");
    }
    for len in [0, 10, HDR_LEN as u32 - 1] {
        h.post_rx_buf(len);
    }
    c.write_all(b"precious").unwrap();
    assert!(h.pump().is_empty());
    // Bad buffers come back with length 0.
    assert_eq!(h.skipped, 3);
    h.post_rx_buf(RX_BUF_LEN);
    h.kick(RXQ);
    let pkts = h.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!(&pkts[0].data[..], b"precious");
}

#[test]
fn header_only_rx_buffers_carry_control_packets_but_no_data() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    h.auto_rx = false;
    while h.rx_posted() > 0 {
        h.send(&h.hdr(op::RW, 1, 1), b"x");
    }
    c.write_all(b"data").unwrap();
    h.post_rx_buf(HDR_LEN as u32);
    // Data does not fit: the buffer stays with the device (and nothing spins).
    assert!(h.pump().is_empty());
    assert_eq!(h.rx_posted(), 1);
    // A control packet does fit.
    let pkts = h.send(&h.hdr(op::CREDIT_REQUEST, local, 52), &[]);
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].hdr.op, pkts[0].hdr.len), (op::CREDIT_UPDATE, 0));
    h.post_rx_buf(RX_BUF_LEN);
    h.kick(RXQ);
    assert_eq!(&h.recv()[0].data[..], b"data");
}

#[test]
fn rst_flood_without_rx_buffers_meets_back_pressure() {
    const ROUND: usize = 48;
    let mut h = Harness::new();
    h.auto_rx = false;
    while h.rx_posted() > 0 {
        h.send(&h.hdr(op::RW, 1, 1), b"x");
    }
    // The guest keeps sending packets that each want an RST, and posts no rx buffers.
    let start = h.txq.used_idx();
    let consumed = |h: &Harness| usize::from(h.txq.used_idx().wrapping_sub(start));
    let mut queued = 0;
    while consumed(&h) == queued {
        for i in 0..ROUND {
            h.queue_tx(&h.hdr(op::RW, 100 + i as u32, 1), &[]);
        }
        queued += ROUND;
        h.kick(TXQ);
    }
    assert_eq!(consumed(&h), RST_BACKLOG, "tx must stop at the backlog");
    assert!(h.recv().is_empty());
    // Buffers let the RSTs out and tx resumes; every packet gets its RST.
    h.auto_rx = true;
    h.post_rx(64);
    h.kick(RXQ);
    let rsts = h.recv();
    assert_eq!(rsts.len(), queued);
    assert!(rsts.iter().all(|p| p.hdr.op == op::RST));
    assert_eq!(consumed(&h), queued);
}
