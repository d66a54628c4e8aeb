//! Tests of the userfaultfd backend.

use super::*;
use crate::vstate::mem_file::tests::{ranges, sample_file, TempPath};
use crate::vstate::mem_file::{dump, MemFileError};
use vm_memory::Bytes;

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

#[test]
fn uffd_serves_records_and_prefetches() {
    let file = sample_file("uffd-mem");
    let ws = TempPath::new("uffd-ws");
    let (mem, u) = match map_uffd(&file.0, &ranges(), None, Some(&ws.0)) {
        Err(MemFileError::Uffd { source, .. })
            if matches!(source.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) =>
        {
            return eprintln!("skipping: userfaultfd unavailable: {source}");
        }
        r => r.unwrap(),
    };
    let check = |mem: &GuestMemoryMmap| {
        assert_eq!(read(mem, 0x3000, 4096), vec![0xAB; 4096]);
        assert_eq!(read(mem, 0x1000_7000, 10), b"region one");
        assert_eq!(read(mem, 0x8_0000, 4096), vec![0; 4096]);
    };
    check(&mem);
    assert_eq!((u.faults(), u.prefetched()), (3, 0));
    let pages = u.save_working_set().unwrap();
    assert_eq!(pages as u64, 3 * FAULT_BLOCK / page_size() as u64);
    let saved = std::fs::read(&ws.0).unwrap();
    assert_eq!((saved.len(), &saved[..8]), (pages * 8, &[0u8; 8][..]));
    drop((mem, u));
    let mut f = OpenOptions::new().append(true).open(&ws.0).unwrap();
    f.write_all(&[0x123u64.to_le_bytes(), (1u64 << 40).to_le_bytes()].concat())
        .unwrap();

    let (mem, u) = map_uffd(&file.0, &ranges(), Some(&ws.0), None).unwrap();
    assert_eq!(u.prefetched(), pages as u64);
    check(&mem);
    assert_eq!(u.faults(), 0);
    assert_eq!(read(&mem, 0x1008_0000, 8), vec![0; 8]);
    assert_eq!(u.faults(), 1);
    assert!(matches!(
        u.save_working_set(),
        Err(MemFileError::NotRecording)
    ));

    u.populate_all().unwrap();
    let out = TempPath::new("uffd-dump");
    dump(&mem, &out.0).unwrap();
    assert!(std::fs::read(&out.0).unwrap() == std::fs::read(&file.0).unwrap());
}
