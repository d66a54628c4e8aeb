//! virtio-blk tests: requests driven through a guest-side test queue against a temp image.

mod limits;
mod malformed;
mod metrics;

use std::path::Path;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Block, BlockError};
use crate::devices::bus::BusDevice;
use crate::devices::virtio::test_utils::{activate, guest_mem, TempFile, TestQueue};
use crate::devices::virtio::{MmioTransport, VirtioDevice, INT_USED_RING};

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
/// Marks a status byte the device did not write.
const UNTOUCHED: u8 = 0xee;

/// An image of `sectors` sectors where byte `i` is `i * 7 + i / 512`.
fn image(sectors: usize) -> Vec<u8> {
    (0..sectors * 512)
        .map(|i| (i * 7 + i / 512) as u8)
        .collect()
}

struct Harness {
    mem: GuestMemoryMmap,
    tq: TestQueue,
    q: Queue,
    blk: Block,
    file: TempFile,
}

impl Harness {
    fn new(contents: &[u8], read_only: bool) -> Self {
        let mem = guest_mem();
        let tq = TestQueue::new(&mem, 0x1000, 16);
        let q = tq.queue();
        let file = TempFile::with_contents(contents);
        let blk = Block::new(file.path(), read_only, "kiln-test-drive").unwrap();
        Harness {
            mem,
            tq,
            q,
            blk,
            file,
        }
    }

    fn header(&self, ty: u32, sector: u64) {
        self.mem.write_obj(ty.to_le(), GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        self.mem
            .write_obj(sector.to_le(), GuestAddress(HDR + 8))
            .unwrap();
        self.mem.write_obj(UNTOUCHED, GuestAddress(STATUS)).unwrap();
    }

    fn run(&mut self) -> bool {
        self.blk
            .process_queue(0, std::slice::from_mut(&mut self.q), &self.mem)
    }

    /// Submits one chain, processes it and returns (used len, status byte).
    fn submit(&mut self, bufs: &[(u64, u32, bool)]) -> (u32, u8) {
        let head = self.tq.add_chain(bufs);
        let before = self.tq.used_idx();
        assert!(self.run());
        assert_eq!(self.tq.used_idx(), before.wrapping_add(1));
        let (id, len) = self.tq.used(before);
        assert_eq!(id, u32::from(head));
        (len, self.status())
    }

    /// A standard request: header, `data` buffers, 1-byte status.
    fn request(&mut self, ty: u32, sector: u64, data: &[(u64, u32, bool)]) -> (u32, u8) {
        self.header(ty, sector);
        let mut bufs = vec![(HDR, 16, false)];
        bufs.extend_from_slice(data);
        bufs.push((STATUS, 1, true));
        self.submit(&bufs)
    }

    fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn read_mem(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// A valid 1-sector read of sector 0 still works.
    fn assert_queue_works(&mut self) {
        self.mem
            .write_slice(&[0u8; 512], GuestAddress(DATA))
            .unwrap();
        let r = self.request(VIRTIO_BLK_T_IN, 0, &[(DATA, 512, true)]);
        assert_eq!(r, (513, OK));
        assert_eq!(self.read_mem(DATA, 512), self.file.contents()[..512]);
    }
}

#[test]
fn read_returns_file_content() {
    let img = image(8);
    let mut h = Harness::new(&img, false);
    assert_eq!(h.blk.capacity(), 8);
    // Two sectors from sector 3, split over two descriptors.
    let r = h.request(
        VIRTIO_BLK_T_IN,
        3,
        &[(DATA, 512, true), (DATA + 0x1000, 512, true)],
    );
    assert_eq!(r, (1025, OK));
    assert_eq!(h.read_mem(DATA, 512), img[3 * 512..4 * 512]);
    assert_eq!(h.read_mem(DATA + 0x1000, 512), img[4 * 512..5 * 512]);
    // The last sector is in range too.
    assert_eq!(
        h.request(VIRTIO_BLK_T_IN, 7, &[(DATA, 512, true)]),
        (513, OK)
    );
    assert_eq!(h.read_mem(DATA, 512), img[7 * 512..]);
}

#[test]
fn write_persists_to_the_file() {
    let img = image(8);
    let mut h = Harness::new(&img, false);
    let data: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
    h.mem.write_slice(&data, GuestAddress(DATA)).unwrap();
    let r = h.request(
        VIRTIO_BLK_T_OUT,
        2,
        &[(DATA, 512, false), (DATA + 512, 512, false)],
    );
    assert_eq!(r, (1, OK));
    let mut want = img.clone();
    want[1024..2048].copy_from_slice(&data);
    assert_eq!(h.file.contents(), want);
    // Write-through mode (FLUSH not negotiated) also works.
    h.blk.ack_features(0);
    let r = h.request(VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, false)]);
    assert_eq!(r, (1, OK));
    assert_eq!(h.file.contents()[..512], data[..512]);
}

#[test]
fn flush_succeeds() {
    let mut h = Harness::new(&image(2), false);
    assert_eq!(h.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (1, OK));
}

#[test]
fn write_to_read_only_device_fails_and_leaves_file_unchanged() {
    let img = image(4);
    let mut h = Harness::new(&img, true);
    assert!(h.blk.is_read_only());
    assert_ne!(h.blk.features() & (1 << VIRTIO_BLK_F_RO), 0);
    h.mem.write_slice(&[0xaa; 512], GuestAddress(DATA)).unwrap();
    let r = h.request(VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, false)]);
    assert_eq!(r, (1, IOERR));
    assert_eq!(h.file.contents(), img);
    // Reads still work.
    h.assert_queue_works();
}

#[test]
fn out_of_range_sectors_fail() {
    let mut h = Harness::new(&image(4), false);
    for (sector, len) in [(3u64, 1024u32), (4, 512), (1 << 60, 512), (u64::MAX, 512)] {
        let r = h.request(VIRTIO_BLK_T_IN, sector, &[(DATA, len, true)]);
        assert_eq!(r, (1, IOERR), "sector {sector} len {len}");
        let r = h.request(VIRTIO_BLK_T_OUT, sector, &[(DATA, len, false)]);
        assert_eq!(r, (1, IOERR), "sector {sector} len {len}");
    }
    assert_eq!(image(4), h.file.contents());
    h.assert_queue_works();
}

#[test]
fn get_id_returns_padded_and_truncated_id() {
    let mut h = Harness::new(&image(1), false);
    h.mem.write_slice(&[0xff; 32], GuestAddress(DATA)).unwrap();
    let r = h.request(VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 20, true)]);
    assert_eq!(r, (21, OK));
    let mut want = b"kiln-test-drive".to_vec();
    want.resize(20, 0);
    assert_eq!(h.read_mem(DATA, 20), want);
    assert_eq!(h.read_mem(DATA + 20, 1), [0xff]);

    let file = TempFile::with_contents(&image(1));
    let long = "0123456789abcdefghijKLMNOP";
    let mut blk = Block::new(file.path(), false, long).unwrap();
    std::mem::swap(&mut h.blk, &mut blk);
    let r = h.request(VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 512, true)]);
    assert_eq!(r, (21, OK));
    assert_eq!(h.read_mem(DATA, 21), b"0123456789abcdefghij\xff");
}

#[test]
fn unsupported_request_type() {
    let mut h = Harness::new(&image(1), false);
    for ty in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES, 0xdead_beef] {
        assert_eq!(h.request(ty, 0, &[(DATA, 512, false)]), (1, UNSUPP));
    }
    h.assert_queue_works();
}

#[test]
fn new_rejects_bad_images_with_clear_errors() {
    let file = TempFile::with_contents(&[0u8; 1000]);
    let err = Block::new(file.path(), false, "x").err().unwrap();
    assert!(matches!(err, BlockError::UnalignedSize { size: 1000, .. }));
    let msg = err.to_string();
    assert!(msg.contains(&file.path().display().to_string()), "{msg}");
    assert!(msg.contains("multiple of 512"), "{msg}");

    let missing = Path::new("/nonexistent/kiln/disk.img");
    let msg = Block::new(missing, true, "x").err().unwrap().to_string();
    assert!(
        msg.starts_with("cannot open drive image /nonexistent/kiln/disk.img"),
        "{msg}"
    );
    assert!(msg.contains("check path_on_host"), "{msg}");

    let dir = std::env::temp_dir();
    let err = Block::new(&dir, true, "x").err().unwrap();
    assert!(matches!(err, BlockError::NotAFile { .. }), "{err}");
}

#[test]
fn features_and_config_space() {
    let h = Harness::new(&image(5), false);
    let f = h.blk.features();
    for bit in [
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
    ] {
        assert_ne!(f & (1 << bit), 0, "feature {bit}");
    }
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    let mut cfg = [0xffu8; 64];
    h.blk.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg[0..8].try_into().unwrap()), 5);
    assert_eq!(u32::from_le_bytes(cfg[12..16].try_into().unwrap()), 254);
    assert_eq!(u32::from_le_bytes(cfg[20..24].try_into().unwrap()), 512);
    assert!(cfg[24..].iter().all(|&b| b == 0));
    let mut cap_hi = [0u8; 4];
    h.blk.read_config(4, &mut cap_hi);
    assert_eq!(cap_hi, [0; 4]);
}

#[test]
fn works_behind_the_mmio_transport() {
    let mem = guest_mem();
    let file = TempFile::with_contents(&image(8));
    let blk = Block::new(file.path(), false, "mmio").unwrap();
    let mut t = MmioTransport::new(mem.clone(), Box::new(blk)).unwrap();
    let mut tq = TestQueue::new(&mem, 0x1000, 256);
    activate(&mut t, VIRTIO_ID_BLOCK, &[&tq]);
    assert!(t.is_activated());
    let mut cap = [0u8; 8];
    t.read(0x100, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);

    mem.write_obj(VIRTIO_BLK_T_IN.to_le(), GuestAddress(HDR))
        .unwrap();
    mem.write_obj(6u64.to_le(), GuestAddress(HDR + 8)).unwrap();
    tq.add_chain(&[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]);
    t.process_queue(0);
    assert_eq!(tq.used(0), (0, 1025));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), OK);
    let mut got = vec![0u8; 1024];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, image(8)[6 * 512..]);
    assert_eq!(t.interrupt().status() & INT_USED_RING, INT_USED_RING);
}

#[test]
fn a_new_backing_file_is_used_at_once_with_its_capacity() {
    let mem = guest_mem();
    let old = TempFile::with_contents(&image(8));
    let blk = Block::new(old.path(), false, "swap").unwrap();
    let mut t = MmioTransport::new(mem.clone(), Box::new(blk)).unwrap();
    let mut tq = TestQueue::new(&mem, 0x1000, 256);
    activate(&mut t, VIRTIO_ID_BLOCK, &[&tq]);
    let new_img: Vec<u8> = image(16).iter().map(|b| b ^ 0x5a).collect();
    let new = TempFile::with_contents(&new_img);
    // A bad file changes nothing.
    let unaligned = TempFile::with_contents(&[0u8; 1000]);
    let b = t.device_mut().block().unwrap();
    let e = b.swap_backing(unaligned.path()).unwrap_err();
    assert!(matches!(e, BlockError::UnalignedSize { .. }), "{e}");
    assert!(b.swap_backing(Path::new("/nonexistent/kiln.img")).is_err());
    assert_eq!(b.capacity(), 8);
    b.swap_backing(new.path()).unwrap();
    assert_eq!(b.path(), new.path());
    let mut cap = [0u8; 8];
    t.read(0x100, &mut cap);
    assert_eq!(
        u64::from_le_bytes(cap),
        16,
        "config space has the new capacity"
    );
    // Sector 12 exists only in the new image.
    mem.write_obj(VIRTIO_BLK_T_IN.to_le(), GuestAddress(HDR))
        .unwrap();
    mem.write_obj(12u64.to_le(), GuestAddress(HDR + 8)).unwrap();
    tq.add_chain(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    t.process_queue(0);
    assert_eq!(tq.used(0), (0, 513));
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), OK);
    let mut got = vec![0u8; 512];
    mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, new_img[12 * 512..13 * 512]);
}
