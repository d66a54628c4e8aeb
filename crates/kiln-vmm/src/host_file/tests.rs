use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use super::*;
use crate::test_dir::TempDir;

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_fifo_is_refused_without_blocking_for_reads_and_writes() {
    let d = TempDir::new("fifo");
    let fifo = d.0.join("pipe");
    mkfifo(&fifo);
    for write in [false, true] {
        let e = open(&fifo, write, Accept::File).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "is a FIFO, not a regular file");
        assert_eq!(not_regular(&e).map(|r| r.kind), Some("a FIFO"));
    }
    let e = open(&fifo, false, Accept::FileOrBlockDevice).unwrap_err();
    assert_eq!(
        e.to_string(),
        "is a FIFO, not a regular file or a block device"
    );
}

#[test]
fn directories_and_character_devices_are_refused() {
    let d = TempDir::new("dir");
    let e = open(&d.0, false, Accept::File).unwrap_err();
    assert_eq!(not_regular(&e).map(|r| r.kind), Some("a directory"));
    let e = open(Path::new("/dev/null"), false, Accept::FileOrBlockDevice).unwrap_err();
    assert_eq!(not_regular(&e).map(|r| r.kind), Some("a character device"));
    let e = open(&d.0.join("missing"), false, Accept::File).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(not_regular(&e).is_none());
}

#[test]
fn a_regular_file_comes_back_blocking() {
    let d = TempDir::new("file");
    let f = d.0.join("f");
    std::fs::write(&f, b"abc").unwrap();
    let file = open(&f, true, Accept::File).unwrap();
    // SAFETY: F_GETFL on an fd we own.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    assert_eq!(flags & libc::O_NONBLOCK, 0);
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDWR);
}
