//! Per-drive counters: successful requests by kind and bytes, failed requests as errors.

use std::sync::atomic::Ordering::Relaxed;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH as FLUSH, VIRTIO_BLK_T_IN as IN, VIRTIO_BLK_T_OUT as OUT,
};

use super::{image, Harness, DATA, IOERR, OK};

#[test]
fn requests_are_counted_by_kind() {
    let mut h = Harness::new(&image(8), false);
    assert_eq!(h.request(IN, 0, &[(DATA, 1024, true)]), (1025, OK));
    assert_eq!(h.request(OUT, 2, &[(DATA, 512, false)]).1, OK);
    assert_eq!(h.request(FLUSH, 0, &[]).1, OK);
    // Past the end of the disk: an error, no bytes.
    assert_eq!(h.request(IN, 8, &[(DATA, 512, true)]).1, IOERR);
    let m = h.blk.metrics();
    let got = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    assert_eq!((got(&m.read_ops), got(&m.read_bytes)), (1, 1024));
    assert_eq!((got(&m.write_ops), got(&m.write_bytes)), (1, 512));
    assert_eq!((got(&m.flush_ops), got(&m.errors)), (1, 1));
}

/// Host I/O errors are counted apart from malformed requests, ENOSPC apart from the
/// rest, and the last one's text is kept.
#[test]
fn host_io_errors_and_enospc_are_counted_with_the_last_text() {
    let mut h = Harness::new(&image(8), false);
    // A malformed request (past the end) is an error, but not a host I/O error.
    assert_eq!(h.request(IN, 8, &[(DATA, 512, true)]).1, IOERR);
    // /dev/full: every write fails with ENOSPC, as on a full host filesystem.
    let full = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/full")
        .unwrap();
    h.blk.set_file(full);
    assert_eq!(h.request(OUT, 0, &[(DATA, 1024, false)]).1, IOERR);
    assert_eq!(h.request(OUT, 2, &[(DATA, 512, false)]).1, IOERR);
    let m = h.blk.metrics().clone();
    let got = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
    assert_eq!(
        (got(&m.errors), got(&m.io_errors), got(&m.enospc)),
        (3, 2, 2)
    );
    let text = m.last_io_error().unwrap();
    assert!(
        text.starts_with("write at byte 1024: ") && text.contains("No space left on device"),
        "{text}"
    );
    assert_eq!(
        got(&m.write_ops),
        0,
        "failed writes are not counted as done"
    );

    // Another errno (a file open read-only: EBADF) is an I/O error but not ENOSPC.
    h.blk.set_file(std::fs::File::open(h.file.path()).unwrap());
    assert_eq!(h.request(OUT, 0, &[(DATA, 512, false)]).1, IOERR);
    assert_eq!((got(&m.io_errors), got(&m.enospc)), (3, 2));
    let text = m.last_io_error().unwrap();
    assert!(text.contains("Bad file descriptor"), "{text}");

    // The drive's entry in a metrics line carries all three.
    let line: serde_json::Value = serde_json::to_value(&*m).unwrap();
    assert_eq!(
        (line["io_errors"].as_u64(), line["enospc"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(line["last_io_error"].as_str(), Some(text.as_str()));
}

#[test]
fn the_last_error_text_is_bounded_at_a_character_boundary() {
    let m = crate::metrics::BlockMetrics::new();
    assert_eq!(m.last_io_error(), None);
    let long = "é".repeat(400);
    m.io_error(Some(libc::EIO), &long);
    let kept = m.last_io_error().unwrap();
    assert!(kept.len() <= crate::metrics::MAX_ERROR_TEXT && long.starts_with(&kept));
    assert_eq!(m.enospc.load(Relaxed), 0);
}
