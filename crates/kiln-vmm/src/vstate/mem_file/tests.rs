//! Tests of `mem_file.rs`.

use super::*;

/// A path under the temp dir, removed on drop.
pub(crate) struct TempPath(pub PathBuf);
impl TempPath {
    pub(crate) fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("kiln-snap-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }
}
impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(crate) const MIB: usize = 1 << 20;
pub(crate) fn ranges() -> Vec<(GuestAddress, usize)> {
    vec![(GuestAddress(0), MIB), (GuestAddress(0x1000_0000), MIB)]
}

/// A 2 MiB sparse file with data at 0x3000 (region 0) and 0x10_7000 (region 1).
pub(crate) fn sample_file(name: &str) -> TempPath {
    let t = TempPath::new(name);
    let f = File::create(&t.0).unwrap();
    f.set_len(2 * MIB as u64).unwrap();
    f.write_all_at(&[0xAB; 4096], 0x3000).unwrap();
    f.write_all_at(b"region one", 0x10_7000).unwrap();
    t
}

#[test]
fn dump_is_sparse_and_matches_memory() {
    for scan in [false, true] {
        let mem = GuestMemoryMmap::from_ranges(&ranges()).unwrap();
        mem.write_slice(&[0xAB; 4096], GuestAddress(0x3000))
            .unwrap();
        mem.write_slice(b"region one", GuestAddress(0x1000_7000))
            .unwrap();
        let t = TempPath::new(&format!("dump-{scan}"));
        let n = dump_inner(&mem, &t.0, scan).unwrap();
        assert_eq!(n, 2 * page_size() as u64);
        let meta = std::fs::metadata(&t.0).unwrap();
        assert_eq!((meta.len(), meta.mode() & 0o777), (2 * MIB as u64, 0o600));
        assert!(
            meta.blocks() * 512 <= 64 << 10,
            "not sparse: {} blocks",
            meta.blocks()
        );
        let data = std::fs::read(&t.0).unwrap();
        let mut expect = vec![0u8; 2 * MIB];
        mem.read_slice(&mut expect[..MIB], GuestAddress(0)).unwrap();
        mem.read_slice(&mut expect[MIB..], GuestAddress(0x1000_0000))
            .unwrap();
        assert!(data == expect);
        assert!(matches!(dump(&mem, &t.0), Err(MemFileError::Exists { .. })));
    }
}

#[test]
fn digest_ignores_holes_but_not_content() {
    let sparse = sample_file("dig-sparse");
    let full = TempPath::new("dig-full");
    std::fs::write(&full.0, std::fs::read(&sparse.0).unwrap()).unwrap();
    assert_eq!(digest(&sparse.0).unwrap(), digest(&full.0).unwrap());
    let f = OpenOptions::new().write(true).open(&full.0).unwrap();
    f.write_all_at(&[1], 0x1F_FFFF).unwrap();
    assert_ne!(digest(&sparse.0).unwrap(), digest(&full.0).unwrap());
    assert_eq!(digest(&full.0).unwrap().len(), 64);
}

#[test]
fn stamp_changes_after_write_and_round_trips() {
    let t = sample_file("stamp");
    let before = stamp(&t.0).unwrap();
    assert_eq!(before, stamp(&t.0).unwrap());
    let json = serde_json::to_string(&before).unwrap();
    assert_eq!(serde_json::from_str::<FileStamp>(&json).unwrap(), before);
    std::thread::sleep(std::time::Duration::from_millis(30));
    OpenOptions::new()
        .write(true)
        .open(&t.0)
        .unwrap()
        .write_all_at(&[7], 0)
        .unwrap();
    assert_ne!(before, stamp(&t.0).unwrap());
}

#[test]
fn map_private_reads_file_and_keeps_writes_private() {
    let t = sample_file("private");
    let mem = map_private(&t.0, &ranges()).unwrap();
    let mut buf = [0u8; 10];
    mem.read_slice(&mut buf, GuestAddress(0x1000_7000)).unwrap();
    assert_eq!(&buf, b"region one");
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0x3FFF)).unwrap(), 0xAB);
    mem.write_obj(0x55u8, GuestAddress(0x3000)).unwrap();
    assert_eq!(std::fs::read(&t.0).unwrap()[0x3000], 0xAB);
    let err = map_private(&t.0, &ranges()[..1]).unwrap_err().to_string();
    assert!(
        err.contains("is 2097152 bytes") && err.contains("needs 1048576"),
        "{err}"
    );
    let missing = map_private(Path::new("/nonexistent/memory.bin"), &ranges());
    assert!(matches!(missing, Err(MemFileError::Missing { .. })));
}

#[test]
fn dump_of_file_backed_memory_keeps_untouched_file_pages() {
    let t = sample_file("backed");
    let mem = map_private(&t.0, &ranges()).unwrap();
    mem.write_slice(b"private", GuestAddress(0x1000_9000))
        .unwrap();
    // Drop the file's clean page cache (read-around filled it) so that only the data
    // extents can tell dump which file pages hold data.
    let f = File::open(&t.0).unwrap();
    f.sync_all().unwrap();
    // SAFETY: an advisory call on our own descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let out = TempPath::new("backed-dump");
    dump(&mem, &out.0).unwrap();
    let (src, dst) = (std::fs::read(&t.0).unwrap(), std::fs::read(&out.0).unwrap());
    assert_eq!(&dst[0x3000..0x4000], &[0xAB; 4096][..]);
    assert_eq!(&dst[0x10_7000..0x10_700A], b"region one");
    assert_eq!(&dst[0x10_9000..0x10_9007], b"private");
    assert_eq!(
        (&dst[..0x10_9000], &dst[0x10_9007..]),
        (&src[..0x10_9000], &src[0x10_9007..])
    );
}
