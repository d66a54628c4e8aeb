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
