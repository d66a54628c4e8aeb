use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

use super::*;
use crate::devices::virtio::test_utils::{activate, guest_mem, reg_read, reg_write, TestQueue};
use crate::devices::virtio::Rng;

fn rng_on(mem: &vm_memory::GuestMemoryMmap) -> MmioTransport {
    MmioTransport::new(
        mem.clone(),
        Box::new(Rng::new(&Default::default()).unwrap()),
    )
    .unwrap()
}

fn rng() -> MmioTransport {
    rng_on(&guest_mem())
}

#[test]
fn handshake_activates_and_notify_processes_the_queue() {
    let mem = guest_mem();
    let mut t = rng_on(&mem);
    let mut q = TestQueue::new(&mem, 0x1000, 16);
    activate(&mut t, VIRTIO_ID_RNG, &[&q]);
    assert!(t.is_activated());
    q.add_chain(&[(0x10_0000, 32, true)]);
    reg_write(&mut t, REG_QUEUE_NOTIFY, 0);
    assert_eq!(q.used_idx(), 1);
    assert_eq!(
        reg_read(&mut t, REG_INTERRUPT_STATUS) & INT_USED_RING,
        INT_USED_RING
    );
    reg_write(&mut t, REG_INTERRUPT_ACK, INT_USED_RING);
    assert_eq!(reg_read(&mut t, REG_INTERRUPT_STATUS), 0);
}

#[test]
fn unaligned_or_narrow_register_access_is_ignored() {
    let mut t = rng();
    let mut b = [0xffu8; 2];
    t.read(REG_MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
    let mut b = [0xffu8; 4];
    t.read(REG_MAGIC + 1, &mut b);
    assert_eq!(b, [0; 4]);
    t.write(REG_STATUS + 1, &[1, 0, 0, 0]);
    assert_eq!(reg_read(&mut t, REG_STATUS), 0);
}

#[test]
fn features_ok_is_refused_for_unoffered_features() {
    let mut t = rng();
    reg_write(&mut t, REG_STATUS, 1);
    reg_write(&mut t, REG_STATUS, 3);
    reg_write(&mut t, REG_DRIVER_FEATURES_SEL, 0);
    reg_write(&mut t, REG_DRIVER_FEATURES, 1 << 5);
    reg_write(&mut t, REG_STATUS, 0xb);
    assert_eq!(
        reg_read(&mut t, REG_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK,
        0
    );
}

#[test]
fn driver_ok_with_a_queue_outside_memory_does_not_activate() {
    let mut t = rng();
    reg_write(&mut t, REG_STATUS, 1);
    reg_write(&mut t, REG_STATUS, 3);
    reg_write(&mut t, REG_DRIVER_FEATURES_SEL, 1);
    reg_write(&mut t, REG_DRIVER_FEATURES, 1);
    reg_write(&mut t, REG_STATUS, 0xb);
    reg_write(&mut t, REG_QUEUE_SEL, 0);
    reg_write(&mut t, REG_QUEUE_NUM, 16);
    reg_write(&mut t, REG_QUEUE_DESC_LOW, 0xffff_f000);
    reg_write(&mut t, REG_QUEUE_DESC_HIGH, 0xff);
    reg_write(&mut t, REG_QUEUE_READY, 1);
    reg_write(&mut t, REG_STATUS, 0xf);
    assert!(!t.is_activated());
    // Kicks on an inactive device or a bogus queue index are harmless.
    reg_write(&mut t, REG_QUEUE_NOTIFY, 0);
    reg_write(&mut t, REG_QUEUE_NOTIFY, 99);
    reg_write(&mut t, REG_QUEUE_SEL, 7);
    assert_eq!(reg_read(&mut t, REG_QUEUE_NUM_MAX), 0);
}

#[test]
fn writing_zero_status_resets() {
    let mem = guest_mem();
    let mut t = rng_on(&mem);
    let q = TestQueue::new(&mem, 0x1000, 16);
    activate(&mut t, VIRTIO_ID_RNG, &[&q]);
    reg_write(&mut t, REG_STATUS, 0);
    assert!(!t.is_activated());
    assert_eq!(reg_read(&mut t, REG_STATUS), 0);
}
