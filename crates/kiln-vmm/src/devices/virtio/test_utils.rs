//! Test helpers: a guest-side split virtqueue laid out in plain guest memory, register
//! access helpers for the MMIO transport, and self-deleting temp files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::MmioTransport;
use crate::devices::bus::BusDevice;

/// Guest memory size used by the tests (4 MiB at address 0).
pub const MEM_SIZE: u64 = 0x40_0000;

pub fn guest_mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// The driver's view of one split virtqueue.
pub struct TestQueue {
    mem: GuestMemoryMmap,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
}

impl TestQueue {
    pub fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> Self {
        let avail = base + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        TestQueue {
            mem: mem.clone(),
            size,
            desc: base,
            avail,
            used,
            next_desc: 0,
        }
    }

    /// A device-side `Queue` configured directly (bypassing the transport).
    pub fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        q.set_ready(true);
        q
    }

    /// Writes a raw descriptor at table index `idx`.
    pub fn write_desc(&self, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(self.desc + 16 * u64::from(idx));
        self.mem.write_obj(addr.to_le(), at).unwrap();
        self.mem
            .write_obj(len.to_le(), GuestAddress(at.0 + 8))
            .unwrap();
        self.mem
            .write_obj(flags.to_le(), GuestAddress(at.0 + 12))
            .unwrap();
        self.mem
            .write_obj(next.to_le(), GuestAddress(at.0 + 14))
            .unwrap();
    }

    /// Publishes descriptor `head` in the available ring.
    pub fn publish(&self, head: u16) {
        let idx: u16 = self.mem.read_obj(GuestAddress(self.avail + 2)).unwrap();
        let slot = self.avail + 4 + 2 * u64::from(idx % self.size);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Adds a chain of `(addr, len, device_writable)` buffers; returns its head index.
    pub fn add_chain(&mut self, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let idx = (self.next_desc + i as u16) % self.size;
            let last = i + 1 == bufs.len();
            let mut flags = if writable { 2 } else { 0 };
            if !last {
                flags |= 1;
            }
            self.write_desc(idx, addr, len, flags, (idx + 1) % self.size);
        }
        self.next_desc = (self.next_desc + bufs.len() as u16) % self.size;
        self.publish(head);
        head
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(self.used + 2)).unwrap()
    }

    /// Used-ring element `i`: (descriptor id, length written).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * u64::from(i % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }
}

pub fn reg_read(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

pub fn reg_write(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

/// Configures `queues` through registers and drives the status handshake to DRIVER_OK,
/// accepting exactly the offered features.
pub fn activate(t: &mut MmioTransport, device_id: u32, queues: &[&TestQueue]) {
    assert_eq!(reg_read(t, 0x0), 0x7472_6976);
    assert_eq!(reg_read(t, 0x4), 2);
    assert_eq!(reg_read(t, 0x8), device_id);
    reg_write(t, 0x70, 1);
    reg_write(t, 0x70, 3);
    for sel in 0..2 {
        reg_write(t, 0x14, sel);
        let f = reg_read(t, 0x10);
        reg_write(t, 0x24, sel);
        reg_write(t, 0x20, f);
    }
    reg_write(t, 0x70, 0xb);
    assert_eq!(reg_read(t, 0x70), 0xb, "FEATURES_OK not accepted");
    for (i, q) in queues.iter().enumerate() {
        reg_write(t, 0x30, i as u32);
        assert!(reg_read(t, 0x34) >= u32::from(q.size));
        reg_write(t, 0x38, u32::from(q.size));
        for (reg, addr) in [(0x80, q.desc), (0x90, q.avail), (0xa0, q.used)] {
            reg_write(t, reg, addr as u32);
            reg_write(t, reg + 4, (addr >> 32) as u32);
        }
        reg_write(t, 0x44, 1);
    }
    reg_write(t, 0x70, 0xf);
}

/// A file in the temp dir, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn with_contents(data: &[u8]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kiln-virtio-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, data).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub use crate::test_dir::TempDir;
