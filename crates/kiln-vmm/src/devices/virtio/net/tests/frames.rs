//! Good frames both ways, a flood of small ones, the rate limiters, config and state.

use std::sync::atomic::Ordering;

use super::*;
use crate::devices::persist::Persist;
use crate::devices::rate_limiter::TokenBucketConfig;
use crate::devices::virtio::net::{RXQ, TXQ};
use crate::devices::virtio::{VirtioDevice, VirtioDeviceState};

const BUF: u64 = 0x10_0000;

#[test]
fn frames_move_both_ways_through_the_tap() {
    in_netns(|| {
        let mut r = Rig::new();
        // tx: header and frame split over three descriptors.
        let frame = eth(FROM_GUEST, &[0xab; 200]);
        r.put_frame(BUF, &frame);
        r.txq.add_chain(&[
            (BUF, 5, false),
            (BUF + 5, 7, false),
            (BUF + 12, frame.len() as u32, false),
        ]);
        assert!(r.kick(TXQ));
        assert_eq!(r.txq.used_idx(), 1);
        assert_eq!(r.peer.recv().expect("the frame reaches the host"), frame);

        // rx: a buffer of two descriptors, header in the first.
        r.rxq
            .add_chain(&[(BUF + 0x1_0000, 12, true), (BUF + 0x1_1000, 1514, true)]);
        assert!(!r.kick(RXQ), "nothing to deliver yet");
        let to_guest = eth(
            TO_GUEST,
            b"hello guest, this frame is padded to sixty bytes..",
        );
        r.peer.send(&to_guest);
        assert!(r.backend());
        assert_eq!(r.rxq.used_idx(), 1);
        let (id, len) = r.rxq.used(0);
        assert_eq!((id, len as usize), (0, 12 + to_guest.len()));
        let hdr = r.read(BUF + 0x1_0000, 12);
        assert_eq!(
            hdr,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            "num_buffers 1, no offloads"
        );
        assert_eq!(r.read(BUF + 0x1_1000, to_guest.len()), to_guest);

        let m = r.dev.metrics();
        assert_eq!(m.tx_packets.load(Ordering::Relaxed), 1);
        assert_eq!(m.tx_bytes.load(Ordering::Relaxed), frame.len() as u64);
        assert_eq!(m.rx_packets.load(Ordering::Relaxed), 1);
        assert_eq!(m.rx_bytes.load(Ordering::Relaxed), to_guest.len() as u64);
        assert_eq!(
            m.rx_drops.load(Ordering::Relaxed) + m.tx_drops.load(Ordering::Relaxed),
            0
        );
    });
}

#[test]
fn a_frame_waits_for_a_guest_buffer() {
    in_netns(|| {
        let mut r = Rig::new();
        let f = eth(TO_GUEST, &[7; 100]);
        r.peer.send(&f);
        assert!(!r.backend(), "no rx buffer: nothing used");
        r.rxq.add_chain(&[(BUF, 2048, true)]);
        assert!(r.kick(RXQ), "the kept frame goes into the new buffer");
        assert_eq!(r.rxq.used(0).1 as usize, 12 + f.len());
        assert_eq!(r.read(BUF + 12, f.len()), f);
    });
}

#[test]
fn a_flood_of_small_frames_leaves_the_device_serving() {
    in_netns(|| {
        let mut r = Rig::new();
        let frame = eth(FROM_GUEST, &[1; 46]);
        let total = 2000u64;
        let mut sent = 0u64;
        let start = std::time::Instant::now();
        while sent < total {
            // Fill the ring, then let the device drain it.
            for i in 0..u64::from(QSIZE) {
                let addr = BUF + i * 128;
                let len = r.put_frame(addr, &frame);
                r.txq.add_chain(&[(addr, len, false)]);
            }
            assert!(r.kick(TXQ));
            sent += u64::from(QSIZE);
        }
        let m = r.dev.metrics().clone();
        let (ok, dropped) = (
            m.tx_packets.load(Ordering::Relaxed),
            m.tx_drops.load(Ordering::Relaxed),
        );
        // A figure for the record (`--nocapture`), not an assertion.
        let us = start.elapsed().as_micros().max(1);
        println!(
            "tx flood: {sent} frames of 60 bytes in {us} us ({} frames/s), {dropped} dropped",
            u128::from(sent) * 1_000_000 / us
        );
        assert_eq!(
            ok + dropped,
            sent,
            "every frame is sent or counted as dropped"
        );
        assert_eq!(m.tx_malformed.load(Ordering::Relaxed), 0);
        assert!(r.peer.drain() > 0, "frames reached the host");

        // And the other way: 300 frames into 256 buffers, then 44 more buffers.
        for i in 0..u64::from(QSIZE) {
            r.rxq.add_chain(&[(BUF + 0x10_0000 + i * 2048, 2048, true)]);
        }
        for _ in 0..300 {
            r.peer.send(&eth(TO_GUEST, &[2; 46]));
        }
        r.backend();
        assert_eq!(m.rx_packets.load(Ordering::Relaxed), u64::from(QSIZE));
        for i in 0..44u64 {
            r.rxq.add_chain(&[(BUF + 0x10_0000 + i * 2048, 2048, true)]);
        }
        r.kick(RXQ);
        assert_eq!(m.rx_packets.load(Ordering::Relaxed), 300);
        assert_eq!(m.rx_drops.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn the_tx_limiter_stops_the_queue_until_its_timer_fires() {
    in_netns(|| {
        CLOCK.store(0, Ordering::SeqCst);
        // Two frames per second.
        let tx = RateLimiterConfig {
            bandwidth: None,
            ops: Some(TokenBucketConfig {
                size: 2,
                one_time_burst: None,
                refill_time: 100,
            }),
        };
        let mut r = Rig::with_limits(&RateLimiterConfig::default(), &tx);
        let frame = eth(FROM_GUEST, &[3; 46]);
        for i in 0..4u64 {
            let len = r.put_frame(BUF + i * 128, &frame);
            r.txq.add_chain(&[(BUF + i * 128, len, false)]);
        }
        assert!(r.kick(TXQ));
        assert_eq!(r.txq.used_idx(), 2, "the third frame waits for tokens");
        let m = r.dev.metrics().clone();
        assert_eq!(m.tx_throttled.load(Ordering::Relaxed), 1);
        // Kicks while throttled take nothing.
        assert!(!r.kick(TXQ));
        assert_eq!(r.txq.used_idx(), 2);
        // A refill time later (on the device's clock) the timer ends the throttle.
        CLOCK.store(100_000_000, Ordering::SeqCst);
        assert!(r.backend());
        assert_eq!(r.txq.used_idx(), 4);
        assert_eq!(m.tx_packets.load(Ordering::Relaxed), 4);
        assert_eq!(r.peer.drain(), 4);
    });
}

#[test]
fn patching_the_rx_limiter_wakes_a_throttled_queue() {
    in_netns(|| {
        let rx = RateLimiterConfig {
            bandwidth: Some(TokenBucketConfig {
                size: 100,
                one_time_burst: None,
                refill_time: 3_600_000,
            }),
            ops: None,
        };
        let mut r = Rig::with_limits(&rx, &RateLimiterConfig::default());
        for i in 0..3u64 {
            r.rxq.add_chain(&[(BUF + i * 2048, 2048, true)]);
        }
        for _ in 0..3 {
            r.peer.send(&eth(TO_GUEST, &[4; 86]));
        }
        r.backend();
        let m = r.dev.metrics().clone();
        // 100 bytes: one frame of 100, then an hour's wait.
        assert_eq!(m.rx_packets.load(Ordering::Relaxed), 1);
        assert_eq!(m.rx_throttled.load(Ordering::Relaxed), 1);
        r.dev
            .update_limiters(Some(&RateLimiterConfig::default()), None);
        assert!(r.backend(), "the update wakes the device");
        assert_eq!(m.rx_packets.load(Ordering::Relaxed), 3);
    });
}

#[test]
fn config_space_state_and_a_busy_or_missing_tap() {
    in_netns(|| {
        let r = Rig::new();
        assert_eq!(r.dev.device_type(), 1);
        assert_eq!(r.dev.features(), 1 << 5, "VIRTIO_NET_F_MAC only");
        let mut mac = [0u8; 8];
        r.dev.read_config(0, &mut mac);
        assert_eq!(&mac[..6], &GUEST_MAC);
        assert_eq!(&mac[6..], &[0, 0]);

        let e = Tap::open(TAP_NAME).unwrap_err().to_string();
        assert!(e.contains("busy"), "{e}");
        let e = Tap::open("kilnnone1").unwrap_err().to_string();
        assert!(e.contains("no network interface 'kilnnone1'"), "{e}");

        let saved = r.dev.save_state();
        let VirtioDeviceState::Net(s) = &saved else {
            panic!("{saved:?}");
        };
        assert_eq!(s.mac, Some(GUEST_MAC));
        let json = serde_json::to_string(&saved).unwrap();
        assert!(json.contains("\"kind\":\"net\""), "{json}");
        drop(r);

        // Restored onto a device of the same TAP and MAC; another MAC is refused.
        let mut again = Rig::new();
        again.dev.restore_state(&saved).unwrap();
        drop(again);
        let tap = Tap::open(TAP_NAME).unwrap();
        let d = RateLimiterConfig::default();
        let mut other = Net::new("eth0", tap, Some([6, 0, 0, 0, 0, 9]), &d, &d).unwrap();
        let e = other.restore(s).unwrap_err().to_string();
        assert!(
            e.contains("06:00:ac:10:00:02") && e.contains("06:00:00:00:00:09"),
            "{e}"
        );
    });
}
