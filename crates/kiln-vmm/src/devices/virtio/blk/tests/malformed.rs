//! Hostile descriptor chains: each fails cleanly and the queue keeps working.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH as FLUSH, VIRTIO_BLK_T_GET_ID as GET_ID, VIRTIO_BLK_T_IN as IN,
    VIRTIO_BLK_T_OUT as OUT,
};
use vm_memory::{Bytes, GuestAddress};

use super::{image, Harness, DATA, HDR, IOERR, STATUS, UNTOUCHED};
use crate::devices::virtio::blk::SEG_MAX;

const R: bool = false;
const W: bool = true;
const H: (u64, u32, bool) = (HDR, 16, R);
const S: (u64, u32, bool) = (STATUS, 1, W);
/// Completed without a status byte.
const NO_STATUS: (u32, u8) = (0, UNTOUCHED);
/// Completed with VIRTIO_BLK_S_IOERR.
const ERR: (u32, u8) = (1, IOERR);

type Case = (
    &'static str,
    u32,
    u64,
    &'static [(u64, u32, bool)],
    (u32, u8),
);

const CASES: &[Case] = &[
    ("header only", IN, 0, &[H], NO_STATUS),
    ("readable last", IN, 0, &[H, (DATA, 512, R)], NO_STATUS),
    ("empty status", FLUSH, 0, &[H, (STATUS, 0, W)], NO_STATUS),
    (
        "status off memory",
        FLUSH,
        0,
        &[H, (u64::MAX, 1, W)],
        NO_STATUS,
    ),
    ("short header", FLUSH, 0, &[(HDR, 8, R), S], ERR),
    ("writable header", FLUSH, 0, &[(HDR, 16, W), S], ERR),
    (
        "header off memory",
        FLUSH,
        0,
        &[(u64::MAX - 4, 16, R), S],
        ERR,
    ),
    ("read into readable", IN, 0, &[H, (DATA, 512, R), S], ERR),
    (
        "read, mixed",
        IN,
        0,
        &[H, (DATA, 512, W), (DATA, 512, R), S],
        ERR,
    ),
    ("write from writable", OUT, 0, &[H, (DATA, 512, W), S], ERR),
    ("id into readable", GET_ID, 0, &[H, (DATA, 20, R), S], ERR),
    ("id without buffer", GET_ID, 0, &[H, S], ERR),
    ("partial sector", IN, 0, &[H, (DATA, 100, W), S], ERR),
    ("partial write", OUT, 0, &[H, (DATA, 600, R), S], ERR),
    (
        "sector*512 overflow",
        IN,
        u64::MAX / 256,
        &[H, (DATA, 512, W), S],
        ERR,
    ),
    (
        "sector+len overflow",
        OUT,
        u64::MAX,
        &[H, (DATA, 512, R), S],
        ERR,
    ),
    ("data off memory", IN, 0, &[H, (0x3f_ff00, 512, W), S], ERR),
    (
        "write off memory",
        OUT,
        0,
        &[H, (u64::MAX - 511, 512, R), S],
        ERR,
    ),
    ("huge data", IN, 0, &[H, (DATA, 0x7fff_fe00, W), S], ERR),
];

#[test]
fn malformed_chains_do_not_stall_the_queue() {
    let img = image(4);
    let mut h = Harness::new(&img, false);
    for &(name, ty, sector, bufs, want) in CASES {
        h.header(ty, sector);
        assert_eq!(h.submit(bufs), want, "{name}");
        h.assert_queue_works();
    }
    assert_eq!(h.file.contents(), img);
}

#[test]
fn bad_head_index_and_descriptor_loops_are_survived() {
    let mut h = Harness::new(&image(2), false);
    // A head index past the queue size: dropped, nothing to complete.
    h.tq.publish(1000);
    assert!(!h.run());
    assert_eq!(h.tq.used_idx(), 0);
    // A descriptor chained to itself: iteration stops after the queue size. Its last
    // "descriptor" is the writable looping one, so IOERR lands there.
    h.header(IN, 0);
    h.tq.write_desc(5, DATA, 512, 1 | 2, 5);
    h.tq.publish(5);
    assert!(h.run());
    assert_eq!(h.tq.used(0), (5, 1));
    h.assert_queue_works();
}

#[test]
fn too_many_segments_via_indirect_table_fail() {
    let mut h = Harness::new(&image(1), false);
    // An indirect table: header, SEG_MAX + 1 data descriptors, status.
    let table = 0x38_0000u64;
    let n = u64::from(SEG_MAX) + 3;
    for i in 0..n {
        let last = i == n - 1;
        let (addr, len, flags) = match i {
            0 => (HDR, 16u32, 0u16),
            _ if last => (STATUS, 1, 2),
            _ => (DATA, 512, 2),
        };
        let flags = if last { flags } else { flags | 1 };
        let at = table + 16 * i;
        h.mem.write_obj(addr, GuestAddress(at)).unwrap();
        h.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        h.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        h.mem
            .write_obj(i as u16 + 1, GuestAddress(at + 14))
            .unwrap();
    }
    h.header(IN, 0);
    h.tq.write_desc(0, table, (16 * n) as u32, 4, 0);
    h.tq.publish(0);
    assert!(h.run());
    assert_eq!(h.tq.used(0), (0, 1));
    assert_eq!(h.status(), IOERR);
    h.assert_queue_works();
}
