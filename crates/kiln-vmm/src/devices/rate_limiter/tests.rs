//! The limiter's arithmetic on a clock the tests move (nanoseconds passed in).

use super::*;

const MS: u64 = 1_000_000;

fn bucket(size: u64, burst: Option<u64>, refill_time: u64) -> TokenBucketConfig {
    TokenBucketConfig {
        size,
        one_time_burst: burst,
        refill_time,
    }
}

fn limiter(bw: Option<TokenBucketConfig>, ops: Option<TokenBucketConfig>) -> RateLimiter {
    RateLimiter::new(&RateLimiterConfig { bandwidth: bw, ops }, 0).unwrap()
}

#[test]
fn a_full_bucket_passes_its_size_then_refills_linearly() {
    let mut b = TokenBucket::new(&bucket(1000, None, 100), 0).unwrap();
    assert_eq!(b.check(1000, 0), Ok(()));
    b.take(1000);
    // Empty: 100 tokens take 10 ms.
    assert_eq!(b.check(100, 0), Err(10 * MS));
    assert_eq!(b.check(100, 5 * MS), Err(5 * MS));
    assert_eq!(b.check(100, 10 * MS), Ok(()));
    b.take(100);
    // Never more than size, however long it waits.
    assert_eq!(b.check(1001, 10_000 * MS).is_ok(), b.budget() == 1000);
    assert_eq!(b.budget(), 1000);
}

#[test]
fn frequent_refills_lose_no_fractions() {
    // 3 tokens per 10 ms: every 1 ms adds 0.3 of a token.
    let mut b = TokenBucket::new(&bucket(3, None, 10), 0).unwrap();
    b.take(3);
    let mut got = 0;
    for t in 1..=100u64 {
        while b.check(1, t * MS).is_ok() {
            b.take(1);
            got += 1;
        }
    }
    assert_eq!(got, 30, "100 ms at 0.3 tokens/ms");
}

#[test]
fn the_one_time_burst_is_spent_first_and_never_refills() {
    let mut b = TokenBucket::new(&bucket(100, Some(500), 1000), 0).unwrap();
    assert_eq!(b.check(600, 0), Ok(()));
    b.take(600);
    assert_eq!(b.save().one_time_burst, 0);
    assert_eq!(b.budget(), 0);
    assert_eq!(
        b.check(200, 0),
        Err(1000 * MS),
        "more than size waits for a full bucket"
    );
    assert_eq!(b.check(100, 1000 * MS), Ok(()));
    b.take(100);
    assert_eq!(b.save().one_time_burst, 0);
}

#[test]
fn a_request_larger_than_the_bucket_passes_when_full_and_leaves_debt() {
    let mut b = TokenBucket::new(&bucket(1000, None, 100), 0).unwrap();
    assert_eq!(b.check(3000, 0), Ok(()));
    b.take(3000);
    assert_eq!(b.budget(), -2000);
    // The debt refills first: 1 token needs 2001 tokens of time, ~200 ms.
    assert_eq!(b.check(1, 0), Err(200_100_000));
    assert!(b.check(1, 199 * MS).is_err());
    assert_eq!(b.check(1, 201 * MS), Ok(()));
}

#[test]
fn size_or_refill_time_zero_is_unlimited() {
    assert!(TokenBucket::new(&bucket(0, None, 100), 0).is_none());
    assert!(TokenBucket::new(&bucket(100, None, 0), 0).is_none());
    let mut l = limiter(Some(bucket(0, None, 100)), None);
    assert!(l.is_unlimited());
    for _ in 0..10_000 {
        assert!(l.consume(1 << 20, 0));
    }
}

#[test]
fn both_buckets_must_fit_or_neither_is_charged() {
    // 10 ops per 100 ms, 1000 bytes per 100 ms.
    let mut l = limiter(Some(bucket(1000, None, 100)), Some(bucket(10, None, 100)));
    assert!(l.consume(900, 0));
    assert!(!l.consume(200, 0), "bandwidth is short");
    assert!(l.is_blocked());
    let (bw, ops) = l.buckets();
    assert_eq!(bw.unwrap().budget(), 100);
    assert_eq!(ops.unwrap().budget(), 9, "the refused request took no op");
    // Blocked: nothing passes until the timer fires, even a request that would fit.
    assert!(!l.consume(1, 0));
    l.on_timer();
    assert!(!l.is_blocked());
    assert!(l.consume(100, 0));
}

#[test]
fn the_ops_bucket_limits_small_requests() {
    let mut l = limiter(None, Some(bucket(5, None, 1000)));
    let passed = (0..100).filter(|_| {
        let ok = l.consume(1, 0);
        if !ok {
            l.on_timer();
        }
        ok
    });
    assert_eq!(passed.count(), 5);
    // 200 ms refill one op.
    assert!(l.consume(1, 200 * MS));
    assert!(!l.consume(1, 200 * MS));
}

#[test]
fn a_refusal_arms_the_timer_for_when_the_tokens_fit() {
    let mut l = limiter(Some(bucket(1000, None, 1000)), None);
    assert!(l.consume(1000, 0));
    assert!(!l.consume(1, 0));
    // 1 token refills in 1 ms: the real timerfd fires (poll with a generous timeout).
    let mut p = libc::pollfd {
        fd: l.timer_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, 5000) };
    assert_eq!(n, 1, "the timer must fire");
    l.on_timer();
    assert!(!l.is_blocked());
}

#[test]
fn an_update_refills_and_wakes_a_throttled_device() {
    let mut l = limiter(Some(bucket(10, None, 1_000_000)), None);
    assert!(l.consume(10, 0));
    assert!(!l.consume(10, 0));
    l.update(
        &RateLimiterConfig {
            bandwidth: Some(bucket(1 << 20, None, 1000)),
            ops: None,
        },
        0,
    );
    let mut p = libc::pollfd {
        fd: l.timer_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut p, 1, 5000) }, 1, "woken at once");
    l.on_timer();
    assert!(l.consume(1 << 19, 0));
}

#[test]
fn a_patch_replaces_the_buckets_it_gives_and_keeps_the_others() {
    let cfg = RateLimiterConfig {
        bandwidth: Some(bucket(1000, None, 100)),
        ops: Some(bucket(10, None, 100)),
    };
    let mut l = RateLimiter::new(&cfg, 0).unwrap();
    assert!(l.consume(600, 0));
    let patch = RateLimiterConfig {
        bandwidth: None,
        ops: Some(bucket(20, None, 100)),
    };
    let new = cfg.patched(&patch);
    assert_eq!(new.bandwidth, cfg.bandwidth);
    assert_eq!(new.ops, patch.ops);
    l.update(&new, 0);
    let (bw, ops) = l.buckets();
    assert_eq!(
        bw.unwrap().budget(),
        400,
        "the unchanged bucket keeps its level"
    );
    assert_eq!(ops.unwrap().budget(), 20, "the new one starts full");
    // Size 0 removes a bucket.
    let off = new.patched(&RateLimiterConfig {
        bandwidth: Some(bucket(0, None, 0)),
        ops: None,
    });
    l.update(&off, 0);
    assert!(l.buckets().0.is_none());
    assert!(l.consume(1 << 30, 0), "no bandwidth limit left");
}

#[test]
fn save_and_restore_keep_the_fill_level_clamped() {
    let cfg = RateLimiterConfig {
        bandwidth: Some(bucket(1000, Some(50), 100)),
        ops: Some(bucket(10, None, 100)),
    };
    let mut l = RateLimiter::new(&cfg, 0).unwrap();
    assert!(l.consume(700, 0));
    let s = l.save();
    assert_eq!(
        s.bandwidth,
        Some(BucketState {
            budget: 350,
            one_time_burst: 0
        })
    );
    let mut r = RateLimiter::new(&cfg, 5 * MS).unwrap();
    r.restore(&s, 5 * MS);
    assert_eq!(r.save(), s);
    // A hostile state cannot overfill a bucket or grow the burst.
    let evil = LimiterState {
        bandwidth: Some(BucketState {
            budget: i64::MAX,
            one_time_burst: u64::MAX,
        }),
        ops: Some(BucketState {
            budget: i64::MIN,
            one_time_burst: 0,
        }),
    };
    r.restore(&evil, 0);
    let s = r.save();
    assert_eq!(s.bandwidth.unwrap().budget, 1000);
    assert_eq!(s.bandwidth.unwrap().one_time_burst, 50);
    assert_eq!(s.ops.unwrap().budget, -640);
}

#[test]
fn validation_names_the_field() {
    let cfg = RateLimiterConfig {
        bandwidth: Some(bucket(MAX_TOKENS + 1, None, 100)),
        ops: None,
    };
    let e = cfg.validate("tx_rate_limiter").unwrap_err();
    assert!(e.contains("tx_rate_limiter.bandwidth"), "{e}");
    let cfg = RateLimiterConfig {
        bandwidth: None,
        ops: Some(bucket(1, None, MAX_REFILL_MS + 1)),
    };
    assert!(cfg
        .validate("rate_limiter")
        .unwrap_err()
        .contains("milliseconds"));
}
