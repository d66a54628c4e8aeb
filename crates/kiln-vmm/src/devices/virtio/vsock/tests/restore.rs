//! Snapshot restore: the device state (only the guest CID), the transport reset event
//! sent after restore, and new host connections afterwards.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{at_eof, Harness, CID, RX_BUF_LEN};
use crate::devices::persist::Persist;
use crate::devices::virtio::test_utils::{activate, guest_mem, TempDir, TestQueue};
use crate::devices::virtio::vsock::packet::{op, Header, HDR_LEN};
use crate::devices::virtio::{
    MmioTransport, TransportState, VirtioDevice, VirtioDeviceState, Vsock, VsockState,
    INT_USED_RING,
};

const EVENT_BUF: u64 = 0x3f_0000;
const RX_AT: u64 = 0x10_0000;

fn transport(mem: &GuestMemoryMmap, dir: &TempDir, name: &str, cid: u64) -> MmioTransport {
    let dev = Vsock::new(cid, &dir.path().join(name)).unwrap();
    MmioTransport::new(mem.clone(), Box::new(dev)).unwrap()
}

/// Waits (serving host events) until the rx queue's used index reaches `idx`.
fn wait_rx(t: &mut MmioTransport, rx: &TestQueue, idx: u16) {
    let end = Instant::now() + Duration::from_secs(5);
    while rx.used_idx() != idx {
        assert!(Instant::now() < end, "no rx packet");
        t.process_backend();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn restore_sends_transport_reset_and_serves_new_connections() {
    let mem = guest_mem();
    let dir = TempDir::new("virtio");
    let mut t = transport(&mem, &dir, "a.sock", CID);
    let mut rx = TestQueue::new(&mem, 0x1000, 16);
    let tx = TestQueue::new(&mem, 0x2000, 16);
    let mut ev = TestQueue::new(&mem, 0x3000, 8);
    activate(&mut t, 19, &[&rx, &tx, &ev]);
    // Like Linux: event buffers and rx buffers posted at probe.
    mem.write_obj(0xffff_ffffu32, GuestAddress(EVENT_BUF))
        .unwrap();
    ev.add_chain(&[(EVENT_BUF, 4, true)]);
    rx.add_chain(&[(RX_AT, RX_BUF_LEN, true)]);
    t.process_queue(0);
    let saved: TransportState =
        serde_json::from_str(&serde_json::to_string(&t.save()).unwrap()).unwrap();
    assert_eq!(
        saved.device,
        VirtioDeviceState::Vsock(VsockState { guest_cid: CID })
    );
    drop(t);

    let mut r = transport(&mem, &dir, "b.sock", CID);
    r.restore(&saved).unwrap();
    assert!(r.is_activated());
    assert_eq!(ev.used_idx(), 0, "nothing is sent before after_restore");
    r.after_restore();
    assert_eq!((ev.used_idx(), ev.used(0)), (1, (0, 4)));
    let id: u32 = mem.read_obj(GuestAddress(EVENT_BUF)).unwrap();
    assert_eq!(id, 0, "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET");
    assert_eq!(r.interrupt().status() & INT_USED_RING, INT_USED_RING);
    assert_eq!(r.irq_evt().read().unwrap(), 1);

    // The restored device's listener takes new clients into the rx buffer posted before.
    let mut c = UnixStream::connect(dir.path().join("b.sock")).unwrap();
    c.write_all(b"CONNECT 52\n").unwrap();
    wait_rx(&mut r, &rx, 1);
    assert_eq!(rx.used(0), (0, HDR_LEN as u32));
    let mut raw = [0u8; HDR_LEN];
    mem.read_slice(&mut raw, GuestAddress(RX_AT)).unwrap();
    let req = Header::from_bytes(&raw);
    assert_eq!((req.op, req.dst_port, req.dst_cid), (op::REQUEST, 52, CID));
}

#[test]
fn restore_refuses_another_guest_cid() {
    let mem = guest_mem();
    let dir = TempDir::new("virtio");
    let mut t = transport(&mem, &dir, "a.sock", CID);
    let rx = TestQueue::new(&mem, 0x1000, 16);
    let tx = TestQueue::new(&mem, 0x2000, 16);
    let ev = TestQueue::new(&mem, 0x3000, 8);
    activate(&mut t, 19, &[&rx, &tx, &ev]);
    let saved = t.save();

    let mut other = transport(&mem, &dir, "b.sock", CID + 1);
    let err = other.restore(&saved).unwrap_err().to_string();
    assert!(err.contains("guest_cid"), "{err}");
    assert!(!other.is_activated());
    // A device state of another shape does not parse.
    let mut bad = serde_json::to_value(&saved).unwrap();
    bad["device"] = serde_json::json!({ "kind": "vsock", "guest_cid": CID, "connections": [] });
    assert!(serde_json::from_value::<TransportState>(bad).is_err());
    let mut ok = transport(&mem, &dir, "d.sock", CID);
    ok.restore(&saved).unwrap();
    // No event buffer posted: after_restore still works, the guest just is not told.
    ok.after_restore();
    assert_eq!(ev.used_idx(), 0);
}

#[test]
fn after_restore_drops_connections_and_keeps_the_listener() {
    let mut h = Harness::new();
    let (mut c, _) = h.connect_host(52);
    h.mem
        .write_obj(0xffff_ffffu32, GuestAddress(EVENT_BUF))
        .unwrap();
    h.post_event_buf(EVENT_BUF);
    let state: VsockState = h.dev.save();
    assert_eq!(state, VsockState { guest_cid: CID });
    assert!(h.dev.after_restore(&mut h.queues, &h.mem));
    assert_eq!(h.event_used(), (1, (0, 4)));
    assert_eq!(h.dev.connections(), 0);
    assert!(at_eof(&mut c));
    let (_c2, _) = h.connect_host(53);
    assert_eq!(h.dev.connections(), 1);
}
