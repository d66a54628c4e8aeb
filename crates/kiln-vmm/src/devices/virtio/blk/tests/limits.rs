//! The drive's rate limiter: a request over budget stays on the queue until the
//! limiter's timer ends the throttle (here: a new, unlimited limiter, as a PATCH sets).

use std::sync::atomic::Ordering::Relaxed;

use virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN as IN;

use super::{image, Harness, DATA, HDR, OK, STATUS};
use crate::devices::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
use crate::devices::virtio::VirtioDevice;

#[test]
fn a_throttled_drive_keeps_the_request_queued_until_the_timer_fires() {
    let mut h = Harness::new(&image(8), false);
    // 1 KiB per hour: the second read of 1 KiB cannot pass while the test runs.
    h.blk.set_rate_limiter(&RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 1024,
            one_time_burst: None,
            refill_time: 3_600_000,
        }),
        ops: None,
    });
    assert_eq!(h.request(IN, 0, &[(DATA, 1024, true)]), (1025, OK));
    h.header(IN, 2);
    h.tq.add_chain(&[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]);
    assert!(!h.run(), "over budget: nothing completes");
    assert!(!h.run(), "kicks while throttled take nothing");
    assert_eq!(h.tq.used_idx(), 1);
    assert_eq!(h.blk.metrics().throttled.load(Relaxed), 1);

    h.blk.set_rate_limiter(&RateLimiterConfig::default());
    let fd = h.blk.backend_fd().expect("the limiter's timerfd");
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 5000) };
    assert_eq!(n, 1, "the update wakes the queue");
    assert!(h
        .blk
        .process_backend(Some(std::slice::from_mut(&mut h.q)), &h.mem));
    assert_eq!(h.tq.used_idx(), 2);
    assert_eq!(h.status(), OK);
}
