//! Transport save/restore: round trips through JSON onto fresh transports, and every kind
//! of bad state refused with the transport left reset.

use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK, VIRTIO_ID_RNG};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::super::{REG_INTERRUPT_STATUS, REG_QUEUE_NOTIFY, REG_STATUS};
use super::*;
use crate::devices::virtio::test_utils::{
    activate, guest_mem, reg_read, reg_write, TempFile, TestQueue,
};
use crate::devices::virtio::{Block, BlockState, Rng, RngState, VirtioDevice, VsockState};

fn json_round_trip(s: &TransportState) -> TransportState {
    let text = serde_json::to_string_pretty(s).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rng(mem: &GuestMemoryMmap) -> MmioTransport {
    MmioTransport::new(
        mem.clone(),
        Box::new(Rng::new(&Default::default()).unwrap()),
    )
    .unwrap()
}

/// A running rng transport that has completed `n` one-buffer requests.
fn used_rng(mem: &GuestMemoryMmap, n: u16) -> (MmioTransport, TestQueue) {
    let mut t = rng(mem);
    let mut tq = TestQueue::new(mem, 0x1000, 16);
    activate(&mut t, VIRTIO_ID_RNG, &[&tq]);
    for i in 0..n {
        tq.add_chain(&[(0x10_0000 + u64::from(i) * 0x100, 32, true)]);
    }
    reg_write(&mut t, REG_QUEUE_NOTIFY, 0);
    assert_eq!(tq.used_idx(), n);
    (t, tq)
}

#[test]
fn rng_round_trip_continues_the_rings() {
    let mem = guest_mem();
    let (t, mut tq) = used_rng(&mem, 3);
    let saved = json_round_trip(&t.save());
    assert_eq!(saved, t.save());
    assert!(saved.activated);
    assert_eq!(
        (saved.queues[0].next_avail, saved.queues[0].next_used),
        (3, 3)
    );
    assert_eq!(saved.interrupt_status, INT_USED_RING);
    assert_eq!(saved.device, VirtioDeviceState::Rng(RngState::default()));

    let mut r = rng(&mem);
    r.restore(&saved).unwrap();
    assert!(r.is_activated());
    assert_eq!(r.save(), saved);
    assert_eq!(reg_read(&mut r, REG_STATUS), 0xf);
    assert_eq!(reg_read(&mut r, REG_INTERRUPT_STATUS), INT_USED_RING);
    // The irqfd is kicked once the VM is about to run, not before.
    assert!(r.irq_evt().read().is_err());
    r.after_restore();
    assert_eq!(r.irq_evt().read().unwrap(), 1);

    tq.add_chain(&[(0x20_0000, 16, true)]);
    reg_write(&mut r, REG_QUEUE_NOTIFY, 0);
    assert_eq!(tq.used_idx(), 4, "the used index continues");
    assert_eq!(tq.used(3), (3, 16));
}

#[test]
fn after_restore_serves_a_notification_pending_at_the_snapshot() {
    let mem = guest_mem();
    let (mut t, mut tq) = used_rng(&mem, 1);
    reg_write(&mut t, 0x64, INT_USED_RING); // InterruptACK
                                            // Published, but the kick never reached the device before the snapshot.
    tq.add_chain(&[(0x20_0000, 8, true)]);
    let saved = json_round_trip(&t.save());
    assert_eq!(saved.interrupt_status, 0);

    let mut r = rng(&mem);
    r.restore(&saved).unwrap();
    assert_eq!(tq.used_idx(), 1);
    r.after_restore();
    assert_eq!(tq.used_idx(), 2);
    assert_eq!(tq.used(1), (1, 8));
    assert_eq!(r.interrupt().status(), INT_USED_RING);
    assert_eq!(r.irq_evt().read().unwrap(), 1);
}

#[test]
fn mid_handshake_state_restores_inactive_and_the_driver_can_finish() {
    let mem = guest_mem();
    let mut t = rng(&mem);
    reg_write(&mut t, REG_STATUS, 1);
    reg_write(&mut t, REG_STATUS, 3);
    reg_write(&mut t, 0x24, 1); // DriverFeaturesSel
    reg_write(&mut t, 0x20, 1); // VERSION_1
    reg_write(&mut t, REG_STATUS, 0xb);
    let saved = json_round_trip(&t.save());
    assert!(!saved.activated);

    let mut r = rng(&mem);
    r.restore(&saved).unwrap();
    assert!(!r.is_activated());
    assert_eq!(reg_read(&mut r, REG_STATUS), 0xb);
    let mut tq = TestQueue::new(&mem, 0x1000, 16);
    reg_write(&mut r, 0x38, 16);
    for (reg, addr) in [(0x80, tq.desc), (0x90, tq.avail), (0xa0, tq.used)] {
        reg_write(&mut r, reg, addr as u32);
    }
    reg_write(&mut r, 0x44, 1);
    reg_write(&mut r, REG_STATUS, 0xf);
    assert!(r.is_activated());
    tq.add_chain(&[(0x10_0000, 4, true)]);
    reg_write(&mut r, REG_QUEUE_NOTIFY, 0);
    assert_eq!(tq.used(0), (0, 4));
}

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

/// Submits a one-sector request on sector 1, processes it and checks its status.
fn blk_request(t: &mut MmioTransport, tq: &mut TestQueue, mem: &GuestMemoryMmap, ty: u32) {
    mem.write_obj(ty.to_le(), GuestAddress(HDR)).unwrap();
    mem.write_obj(1u64.to_le(), GuestAddress(HDR + 8)).unwrap();
    mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
    let writable = ty == VIRTIO_BLK_T_IN;
    tq.add_chain(&[(HDR, 16, false), (DATA, 512, writable), (STATUS, 1, true)]);
    reg_write(t, REG_QUEUE_NOTIFY, 0);
    let status: u8 = mem.read_obj(GuestAddress(STATUS)).unwrap();
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
}

fn blk(mem: &GuestMemoryMmap, file: &TempFile) -> MmioTransport {
    let dev = Block::new(file.path(), false, "state").unwrap();
    MmioTransport::new(mem.clone(), Box::new(dev)).unwrap()
}

#[test]
fn blk_round_trip_continues_the_rings_on_the_same_image() {
    let mem = guest_mem();
    let file = TempFile::with_contents(&[0u8; 8 * 512]);
    let mut t = blk(&mem, &file);
    let mut tq = TestQueue::new(&mem, 0x1000, 256);
    activate(&mut t, VIRTIO_ID_BLOCK, &[&tq]);
    mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    blk_request(&mut t, &mut tq, &mem, VIRTIO_BLK_T_OUT);
    let saved = json_round_trip(&t.save());
    assert_eq!(
        saved.device,
        VirtioDeviceState::Block(BlockState {
            capacity: 8,
            read_only: false
        })
    );
    // Readable JSON, tagged with the device's kind.
    assert_eq!(
        serde_json::to_value(&saved.device).unwrap(),
        serde_json::json!({"kind": "block", "capacity": 8, "read_only": false})
    );
    drop(t);

    let mut r = blk(&mem, &file);
    r.restore(&saved).unwrap();
    r.after_restore();
    mem.write_slice(&[0u8; 512], GuestAddress(DATA)).unwrap();
    blk_request(&mut r, &mut tq, &mem, VIRTIO_BLK_T_IN);
    assert_eq!(tq.used_idx(), 2);
    assert_eq!(tq.used(1), (3, 513));
    let mut got = [0u8; 512];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, [0x5a; 512]);

    // Another drive size is refused: the guest has the old capacity cached.
    let small = TempFile::with_contents(&[0u8; 4 * 512]);
    let mut other = blk(&mem, &small);
    assert_refused(&mut other, &saved, "sectors");
    // So is the device state of another shape: it does not even parse.
    let mut bad = serde_json::to_value(&saved).unwrap();
    bad["device"] =
        serde_json::json!({"kind": "block", "capacity": 8, "read_only": false, "extra": 1});
    let err = serde_json::from_value::<TransportState>(bad).unwrap_err();
    assert!(err.to_string().contains("extra"), "{err}");
    // And a state of another device kind, on the transport and on the device itself.
    let mut bad = saved.clone();
    bad.device = VirtioDeviceState::Vsock(VsockState { guest_cid: 3 });
    assert_refused(&mut blk(&mem, &file), &bad, "device type");
    let mut dev = Block::new(file.path(), false, "state").unwrap();
    let err = dev.restore_state(&bad.device).unwrap_err();
    assert!(
        err.to_string().contains("virtio-vsock") && err.to_string().contains("virtio-blk"),
        "{err}"
    );
}

/// The restore fails with a message containing `what`; the transport is left reset.
fn assert_refused(t: &mut MmioTransport, s: &TransportState, what: &str) {
    let err = t.restore(s).unwrap_err().to_string();
    assert!(err.contains(what), "expected {what:?} in {err:?}");
    assert!(!t.is_activated());
    assert_eq!(reg_read(t, REG_STATUS), 0);
    assert_eq!(t.interrupt().status(), 0);
    assert!(t.queues.iter().all(|q| !q.ready()));
}

#[test]
fn bad_states_are_refused_and_leave_the_transport_reset() {
    let mem = guest_mem();
    let (t, mut tq) = used_rng(&mem, 2);
    let good = t.save();
    let mut r = rng(&mem);
    let bad = |f: &dyn Fn(&mut TransportState)| {
        let mut s = good.clone();
        f(&mut s);
        s
    };
    let cases: Vec<(TransportState, &str)> = vec![
        (
            bad(&|s| {
                s.device = VirtioDeviceState::Block(BlockState {
                    capacity: 8,
                    read_only: false,
                })
            }),
            "device type",
        ),
        (bad(&|s| s.queues.push(s.queues[0])), "queues"),
        (bad(&|s| s.queue_config_error.clear()), "queues"),
        (bad(&|s| s.queues[0].size = 512), "queue 0"),
        (bad(&|s| s.queues[0].size = 12), "queue 0"),
        (bad(&|s| s.queues[0].max_size = 512), "max size"),
        (bad(&|s| s.queues[0].used_ring = 0x2002), "queue 0"),
        (bad(&|s| s.queues[0].desc_table = 1 << 40), "guest memory"),
        (
            bad(&|s| s.queues[0].used_ring = (4 << 20) - 8),
            "guest memory",
        ),
        (bad(&|s| s.queues[0].ready = false), "guest memory"),
        (bad(&|s| s.queue_config_error[0] = true), "guest memory"),
        (bad(&|s| s.queues[0].event_idx_enabled = true), "EVENT_IDX"),
        (bad(&|s| s.status = 0x4), "status"),
        (bad(&|s| s.status = 0x10f), "status"),
        (bad(&|s| s.activated = false), "contradicts"),
        (bad(&|s| s.status |= 0x40), "contradicts"),
        (bad(&|s| s.driver_features |= 1 << 5), "features"),
        (bad(&|s| s.driver_features = 0), "features"),
        (bad(&|s| s.interrupt_status = 0x4), "interrupt"),
    ];
    for (s, what) in &cases {
        assert_refused(&mut r, s, what);
    }
    // Unknown fields are refused when parsing.
    let mut v = serde_json::to_value(&good).unwrap();
    v["extra"] = serde_json::json!(1);
    assert!(serde_json::from_value::<TransportState>(v).is_err());
    let mut v = serde_json::to_value(&good).unwrap();
    v["queues"][0]["extra"] = serde_json::json!(1);
    assert!(serde_json::from_value::<TransportState>(v).is_err());
    // So is a device state of a shape no device saves (it was refused at restore when
    // device states were untyped JSON), and one of an unknown kind.
    for device in [
        serde_json::json!({"x": 1}),
        serde_json::json!({"kind": "rng", "x": 1}),
        serde_json::json!({"kind": "net"}),
    ] {
        let mut v = serde_json::to_value(&good).unwrap();
        v["device"] = device;
        assert!(serde_json::from_value::<TransportState>(v).is_err());
    }

    // A refused restore does not poison the transport.
    r.restore(&good).unwrap();
    tq.add_chain(&[(0x20_0000, 16, true)]);
    reg_write(&mut r, REG_QUEUE_NOTIFY, 0);
    assert_eq!(tq.used_idx(), 3);
}

#[test]
fn restoring_over_a_running_transport_resets_it_first() {
    let mem = guest_mem();
    let (t, _tq) = used_rng(&mem, 1);
    let saved = t.save();
    let (mut other, _q) = used_rng(&guest_mem(), 0);
    let mut bad = saved.clone();
    bad.queues[0].desc_table = 1 << 40;
    assert_refused(&mut other, &bad, "guest memory");
    other.restore(&saved).unwrap();
    assert_eq!(other.save(), saved);
}
