//! Hostile descriptor chains: each fails its own frame (dropped and counted), and the
//! device goes on serving the next good one.

use std::sync::atomic::Ordering;

use super::*;
use crate::devices::virtio::net::{MAX_FRAME, RXQ, TXQ};
use crate::devices::virtio::test_utils::MEM_SIZE;

const BUF: u64 = 0x10_0000;

/// Sends one good frame after the bad ones and checks it arrives.
fn good_tx_still_works(r: &mut Rig) {
    let frame = eth(FROM_GUEST, &[9; 46]);
    let len = r.put_frame(BUF, &frame);
    r.txq.add_chain(&[(BUF, len, false)]);
    r.kick(TXQ);
    assert_eq!(r.peer.recv().expect("a good frame after bad ones"), frame);
}

#[test]
fn malformed_tx_chains_are_dropped_and_counted() {
    in_netns(|| {
        let mut r = Rig::new();
        let m = r.dev.metrics().clone();
        let frame = eth(FROM_GUEST, &[5; 46]);
        r.put_frame(BUF, &frame);
        let bad: Vec<Vec<(u64, u32, bool)>> = vec![
            // Shorter than the vnet header.
            vec![(BUF, 11, false)],
            // A device-writable descriptor in a tx chain.
            vec![(BUF, 12, false), (BUF + 12, 60, true)],
            // Outside guest memory, and straddling its end.
            vec![(MEM_SIZE + 0x1000, 72, false)],
            vec![(MEM_SIZE - 16, 72, false)],
            // Larger than a frame can be: two descriptors of 40000 bytes.
            vec![(BUF, 40_000, false), (BUF + 40_000, 40_000, false)],
            // One descriptor claiming 4 GiB.
            vec![(BUF, u32::MAX, false)],
        ];
        for (i, chain) in bad.iter().enumerate() {
            r.txq.add_chain(chain);
            r.kick(TXQ);
            assert_eq!(r.txq.used_idx(), i as u16 + 1, "chain {i} completed");
            assert_eq!(r.txq.used(i as u16).1, 0);
            assert_eq!(
                m.tx_malformed.load(Ordering::Relaxed),
                i as u64 + 1,
                "chain {i}"
            );
        }
        // A loop: descriptor 200 -> 201 -> 200 ... ends at the queue size.
        r.txq.write_desc(200, BUF, 12, 1, 201);
        r.txq.write_desc(201, BUF + 12, 60, 1, 200);
        r.txq.publish(200);
        r.kick(TXQ);
        assert_eq!(r.txq.used_idx(), bad.len() as u16 + 1);
        assert_eq!(m.tx_malformed.load(Ordering::Relaxed), bad.len() as u64 + 1);
        // A head index past the queue.
        r.txq.publish(QSIZE + 5);
        r.kick(TXQ);
        assert_eq!(m.tx_packets.load(Ordering::Relaxed), 0);
        good_tx_still_works(&mut r);
        assert!(r.peer.drain() == 0, "no bad frame reached the host");
    });
}

#[test]
fn an_exactly_maximal_tx_chain_passes_the_bounds_check() {
    in_netns(|| {
        let mut r = Rig::new();
        let m = r.dev.metrics().clone();
        // MAX_FRAME bytes pass the check (the TAP's MTU then refuses a jumbo frame:
        // counted as a drop, not as malformed); one byte more is malformed.
        r.txq.add_chain(&[(BUF, MAX_FRAME as u32, false)]);
        r.txq.add_chain(&[(BUF, MAX_FRAME as u32 + 1, false)]);
        r.kick(TXQ);
        assert_eq!(r.txq.used_idx(), 2);
        assert_eq!(m.tx_malformed.load(Ordering::Relaxed), 1);
        good_tx_still_works(&mut r);
    });
}

#[test]
fn malformed_rx_chains_fail_their_frame() {
    in_netns(|| {
        let mut r = Rig::new();
        let m = r.dev.metrics().clone();
        let f = eth(TO_GUEST, &[6; 100]);
        let bad: Vec<Vec<(u64, u32, bool)>> = vec![
            // A device-readable descriptor.
            vec![(BUF, 2048, false)],
            // Too small for header and frame.
            vec![(BUF, 40, true)],
            // Outside guest memory.
            vec![(MEM_SIZE + 0x1000, 2048, true)],
            vec![(MEM_SIZE - 20, 2048, true)],
        ];
        for (i, chain) in bad.iter().enumerate() {
            r.rxq.add_chain(chain);
            r.peer.send(&f);
            r.backend();
            assert_eq!(r.rxq.used_idx(), i as u16 + 1, "chain {i}");
            assert_eq!(r.rxq.used(i as u16).1, 0, "chain {i}");
            assert_eq!(m.rx_malformed.load(Ordering::Relaxed), i as u64 + 1);
        }
        // A loop of empty writable descriptors.
        r.rxq.write_desc(100, BUF, 0, 3, 101);
        r.rxq.write_desc(101, BUF + 8, 0, 3, 100);
        r.rxq.publish(100);
        r.peer.send(&f);
        r.backend();
        assert_eq!(m.rx_malformed.load(Ordering::Relaxed), bad.len() as u64 + 1);
        assert_eq!(m.rx_packets.load(Ordering::Relaxed), 0);
        // The next good buffer gets the next frame.
        r.rxq.add_chain(&[(BUF + 0x1000, 2048, true)]);
        r.peer.send(&f);
        r.backend();
        assert_eq!(m.rx_packets.load(Ordering::Relaxed), 1);
        assert_eq!(r.read(BUF + 0x1000 + 12, f.len()), f);
        let _ = RXQ;
    });
}
