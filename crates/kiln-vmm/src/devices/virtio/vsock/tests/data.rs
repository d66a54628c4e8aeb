//! Data both ways, credit-based flow control and rx back-pressure.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use super::{pattern, Harness, Pkt};
use crate::devices::virtio::vsock::credit::BUF_ALLOC;
use crate::devices::virtio::vsock::device::RXQ;
use crate::devices::virtio::vsock::packet::{op, MAX_PAYLOAD};

/// Concatenated RW payloads; asserts the packets are all RW.
fn rw_data(pkts: &[Pkt]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pkts {
        assert_eq!(p.hdr.op, op::RW, "{p:?}");
        assert_eq!(p.hdr.buf_alloc, BUF_ALLOC);
        out.extend_from_slice(&p.data);
    }
    out
}

fn rw_len(pkts: &[Pkt]) -> usize {
    pkts.iter()
        .filter(|p| p.hdr.op == op::RW)
        .map(|p| p.data.len())
        .sum()
}

#[test]
fn data_flows_both_ways() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    let up = pattern(1, 10_000);
    c.write_all(&up).unwrap();
    let pkts = h.pump_until(2, |p| rw_len(p) == up.len());
    assert!(pkts.iter().all(|p| p.data.len() <= 4096));
    assert_eq!(rw_data(&pkts), up);

    let down = pattern(2, MAX_PAYLOAD);
    for chunk in [&down[..3000], &down[3000..]] {
        assert!(h.send(&h.hdr(op::RW, local, 52), chunk).is_empty());
    }
    let mut got = vec![0u8; down.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, down);
}

#[test]
fn host_never_sends_beyond_guest_credit() {
    let mut h = Harness::new();
    let mut c = UnixStream::connect(h.uds()).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    let local = h.pump()[0].hdr.src_port;
    let mut resp = h.hdr(op::RESPONSE, local, 52);
    resp.buf_alloc = 8192;
    h.send(&resp, &[]);
    let data = pattern(3, 64 * 1024);
    c.write_all(&data).unwrap();

    let mut got = Vec::new();
    let (mut buf_alloc, mut fwd_cnt) = (8192u32, 0u32);
    for step in 0.. {
        got.extend(rw_data(&h.pump()));
        let in_flight = got.len() as u32 - fwd_cnt;
        assert!(
            in_flight <= buf_alloc,
            "step {step}: {in_flight} > {buf_alloc}"
        );
        if got.len() == data.len() {
            break;
        }
        assert_eq!(
            in_flight, buf_alloc,
            "step {step}: the device stopped early"
        );
        // The guest's application reads it all; the driver tells the device.
        fwd_cnt = got.len() as u32;
        buf_alloc = 8192 + 1000 * step;
        let mut upd = h.hdr(op::CREDIT_UPDATE, local, 52);
        (upd.buf_alloc, upd.fwd_cnt) = (buf_alloc, fwd_cnt);
        got.extend(rw_data(&h.send(&upd, &[])));
    }
    assert_eq!(got, data);
}

#[test]
fn credit_request_is_answered() {
    let mut h = Harness::new();
    let (_c, local) = h.connect_host(52);
    let pkts = h.send(&h.hdr(op::CREDIT_REQUEST, local, 52), &[]);
    assert_eq!(pkts.len(), 1);
    let p = pkts[0].hdr;
    assert_eq!(
        (p.op, p.buf_alloc, p.fwd_cnt),
        (op::CREDIT_UPDATE, BUF_ALLOC, 0)
    );
    // A bare CREDIT_UPDATE from the guest needs no answer.
    assert!(h.send(&h.hdr(op::CREDIT_UPDATE, local, 52), &[]).is_empty());
}

#[test]
fn empty_rx_queue_stops_polling_until_the_guest_kicks() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    // Plenty of credit: only the rx buffers limit the device.
    let mut upd = h.hdr(op::CREDIT_UPDATE, local, 52);
    upd.buf_alloc = 64 << 20;
    assert!(h.send(&upd, &[]).is_empty());
    h.auto_rx = false;
    let data = pattern(4, 100 * 4096 + 123);
    let writer = std::thread::spawn(move || {
        c.write_all(&data).unwrap();
        c
    });
    let mut got = rw_data(&h.pump_until(2, |p| p.len() == 64));
    // All buffers used: the stream is not polled, so the backend fd goes quiet.
    h.pump();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!h.backend_ready(), "backend fd still readable");
    assert!(!h.backend());
    // The guest posts buffers and kicks: data flows again, in order.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.len() < 100 * 4096 + 123 {
        assert!(std::time::Instant::now() < end, "stalled at {}", got.len());
        h.post_rx(64);
        h.kick(RXQ);
        got.extend(rw_data(&h.recv()));
        if h.rx_posted() == 64 {
            // Nothing came: let the writer catch up.
            h.backend();
            got.extend(rw_data(&h.recv()));
        }
    }
    writer.join().unwrap();
    assert_eq!(got, pattern(4, 100 * 4096 + 123));
}

#[test]
fn guest_data_waits_for_a_slow_client_and_keeps_order() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    let data = pattern(5, 3 * BUF_ALLOC as usize);
    let reader = std::thread::spawn(move || {
        // Start reading only after the device had to buffer.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut got = vec![0u8; 3 * BUF_ALLOC as usize];
        c.read_exact(&mut got).unwrap();
        // Keep the client open: closing it would make the device send SHUTDOWN while
        // the loop below still expects only credit updates.
        (got, c)
    });
    let (mut sent, mut fwd_cnt) = (0usize, 0u32);
    let mut updates = 0;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sent < data.len() {
        assert!(std::time::Instant::now() < end, "stalled at {sent}");
        let credit = BUF_ALLOC as usize - (sent - fwd_cnt as usize);
        let n = credit.min(MAX_PAYLOAD).min(data.len() - sent);
        let mut pkts = Vec::new();
        if n > 0 {
            pkts = h.send(&h.hdr(op::RW, local, 52), &data[sent..sent + n]);
            sent += n;
        }
        pkts.extend(h.pump());
        for p in &pkts {
            assert_eq!(p.hdr.op, op::CREDIT_UPDATE);
            assert!(p.hdr.fwd_cnt as usize <= sent);
            fwd_cnt = p.hdr.fwd_cnt;
            updates += 1;
        }
        if n == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    while !reader.is_finished() {
        h.pump();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let (got, _c) = reader.join().unwrap();
    assert_eq!(got, data);
    // 768 KiB through a 256 KiB window needs at least two updates.
    assert!(updates >= 2, "only {updates} credit updates");
}

#[test]
fn guest_overrunning_credit_is_reset() {
    let mut h = Harness::new();
    let (mut c, local) = h.connect_host(52);
    // The client reads nothing: send exactly the credit the device grants, then one byte.
    let (mut sent, mut fwd_cnt) = (0usize, 0u32);
    loop {
        let credit = BUF_ALLOC as usize - (sent - fwd_cnt as usize);
        if credit == 0 {
            break;
        }
        let n = credit.min(MAX_PAYLOAD);
        for p in h.send(&h.hdr(op::RW, local, 52), &pattern(6, n)) {
            assert_eq!(p.hdr.op, op::CREDIT_UPDATE);
            fwd_cnt = p.hdr.fwd_cnt;
        }
        sent += n;
        assert!(sent < 64 << 20, "the credit never ran out");
    }
    let pkts = h.send(&h.hdr(op::RW, local, 52), b"!");
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].hdr.op, op::RST);
    assert_eq!(h.dev.connections(), 0);
    // The client gets what reached its socket, then EOF.
    c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.len() <= sent);
}

#[test]
fn hundreds_of_connections_keep_their_bytes_apart() {
    const N: usize = 200;
    let mut h = Harness::new();
    let mut conns: Vec<(UnixStream, u32)> =
        (0..N).map(|i| h.connect_host(1000 + i as u32)).collect();
    for (i, (c, _)) in conns.iter_mut().enumerate() {
        c.write_all(&pattern(i as u32, 5000 + i)).unwrap();
    }
    let total: usize = (0..N).map(|i| 5000 + i).sum();
    let pkts = h.pump_until(5, |p| rw_len(p) == total);
    for (i, (_, local)) in conns.iter().enumerate() {
        let mine: Vec<Pkt> = pkts
            .iter()
            .filter(|p| p.hdr.src_port == *local)
            .cloned()
            .collect();
        assert!(mine.iter().all(|p| p.hdr.dst_port == 1000 + i as u32));
        assert_eq!(
            rw_data(&mine),
            pattern(i as u32, 5000 + i),
            "connection {i}"
        );
    }
    for (i, (_, local)) in conns.iter().enumerate() {
        let hdr = h.hdr(op::RW, *local, 1000 + i as u32);
        assert!(h.send(&hdr, &pattern(i as u32 + 7, 300)).is_empty());
    }
    for (i, (c, _)) in conns.iter_mut().enumerate() {
        let mut got = vec![0u8; 300];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, pattern(i as u32 + 7, 300));
    }
    assert_eq!(h.dev.connections(), N);
}
