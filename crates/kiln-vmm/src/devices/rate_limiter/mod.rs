//! Token-bucket rate limiters for virtio-net (rx and tx) and virtio-blk, with
//! Firecracker's semantics and API shape: a `bandwidth` bucket counted in bytes and an
//! `ops` bucket counted in requests (frames, block requests), each
//! `{"size", "one_time_burst", "refill_time"}` (refill_time in ms: the time to refill
//! an empty bucket to `size`). A request passes only if both buckets have its tokens;
//! otherwise the device stops taking from its queue and the limiter's timerfd, which
//! the device's event loop watches, fires when the missing tokens will have refilled.
//!
//! Time is always passed in ([`now`] on the device's side), so [`bucket`] and the
//! limiter are tested with a clock the test moves.

mod bucket;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmm_sys_util::timerfd::TimerFd;

pub use bucket::{BucketState, TokenBucket};

/// Largest `size` / `one_time_burst` accepted (2^50 tokens: a PiB; keeps the arithmetic
/// in range).
pub const MAX_TOKENS: u64 = 1 << 50;
/// Largest `refill_time` accepted (ms; about 49 days).
pub const MAX_REFILL_MS: u64 = u32::MAX as u64;

/// One bucket as the API spells it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket from empty to `size`.
    pub refill_time: u64,
}

/// A rate limiter as the API spells it (`rx_rate_limiter`, `rate_limiter`, ...). A
/// missing bucket is unlimited.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucketConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucketConfig>,
}

impl RateLimiterConfig {
    /// This config with `patch` applied as Firecracker's PATCH does: a bucket the patch
    /// gives replaces this one's (a bucket of size or refill_time 0 removes it), a bucket
    /// it leaves out stays.
    pub fn patched(&self, patch: &RateLimiterConfig) -> RateLimiterConfig {
        RateLimiterConfig {
            bandwidth: patch.bandwidth.or(self.bandwidth),
            ops: patch.ops.or(self.ops),
        }
    }

    /// Checks the numbers; `what` names the limiter in the message (`tx_rate_limiter`).
    pub fn validate(&self, what: &str) -> Result<(), String> {
        for (name, b) in [("bandwidth", &self.bandwidth), ("ops", &self.ops)] {
            let Some(b) = b else { continue };
            if b.size > MAX_TOKENS || b.one_time_burst.unwrap_or(0) > MAX_TOKENS {
                return Err(format!(
                    "{what}.{name}: size and one_time_burst must be at most {MAX_TOKENS}"
                ));
            }
            if b.refill_time > MAX_REFILL_MS {
                return Err(format!(
                    "{what}.{name}: refill_time is in milliseconds and must be at most \
                     {MAX_REFILL_MS}"
                ));
            }
        }
        Ok(())
    }
}

/// What a snapshot keeps of a limiter (its configuration is in the saved config).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct LimiterState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BucketState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<BucketState>,
}

/// Nanoseconds on the monotonic clock since the first call (the devices' clock).
pub fn now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A bandwidth and an ops bucket with the timerfd that ends a throttle.
pub struct RateLimiter {
    cfg: RateLimiterConfig,
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    /// A request was refused and the timer is armed: take nothing until it fires.
    blocked: bool,
}

impl RateLimiter {
    /// A limiter of `cfg` (validated) with full buckets. Also for an unlimited one
    /// (`Default`): the timerfd exists either way, so a limit set later on a running VM
    /// needs no new fd in the event loop.
    pub fn new(cfg: &RateLimiterConfig, now: u64) -> io::Result<RateLimiter> {
        let timer = TimerFd::new()?;
        set_nonblocking(timer.as_raw_fd())?;
        Ok(RateLimiter {
            cfg: *cfg,
            bandwidth: cfg.bandwidth.and_then(|b| TokenBucket::new(&b, now)),
            ops: cfg.ops.and_then(|b| TokenBucket::new(&b, now)),
            timer,
            blocked: false,
        })
    }

    /// The fd to watch: readable when a throttle ends.
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// True while throttled (until the timer fires).
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// True if no bucket limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.bandwidth.is_none() && self.ops.is_none()
    }

    /// Takes one op and `bytes` bandwidth tokens at `now`, both or neither. On refusal
    /// the limiter blocks and arms its timer for when both will fit; returns false.
    pub fn consume(&mut self, bytes: u64, now: u64) -> bool {
        if self.blocked {
            return false;
        }
        if self.is_unlimited() {
            return true;
        }
        let mut wait = 0u64;
        for (b, tokens) in [(&mut self.bandwidth, bytes), (&mut self.ops, 1)] {
            if let Some(b) = b {
                if let Err(w) = b.check(tokens, now) {
                    wait = wait.max(w);
                }
            }
        }
        if wait > 0 {
            self.block_for(Duration::from_nanos(wait));
            return false;
        }
        if let Some(b) = &mut self.bandwidth {
            b.take(bytes);
        }
        if let Some(b) = &mut self.ops {
            b.take(1);
        }
        true
    }

    fn block_for(&mut self, d: Duration) {
        self.blocked = true;
        if let Err(e) = self.timer.reset(d.max(Duration::from_nanos(1)), None) {
            // Without a timer nothing would end the throttle: stay unblocked instead.
            tracing::error!("rate limiter: cannot arm the timer: {e}");
            self.blocked = false;
        }
    }

    /// The timer fired (or the fd was readable): reads it and ends the throttle.
    pub fn on_timer(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `buf`, which outlives the call; EAGAIN (a
        // spurious wake-up) leaves it untouched.
        let _ = unsafe { libc::read(self.timer.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        self.blocked = false;
    }

    /// Applies a new config (a PATCH on a running VM): a bucket whose config changed
    /// starts again, full, as in Firecracker; an unchanged one keeps its fill level. A
    /// throttled device is woken at once through the timer.
    pub fn update(&mut self, cfg: &RateLimiterConfig, now: u64) {
        if cfg.bandwidth != self.cfg.bandwidth {
            self.bandwidth = cfg.bandwidth.and_then(|b| TokenBucket::new(&b, now));
        }
        if cfg.ops != self.cfg.ops {
            self.ops = cfg.ops.and_then(|b| TokenBucket::new(&b, now));
        }
        self.cfg = *cfg;
        if self.blocked {
            self.block_for(Duration::from_nanos(1));
        }
    }

    pub fn config(&self) -> &RateLimiterConfig {
        &self.cfg
    }

    pub fn save(&self) -> LimiterState {
        LimiterState {
            bandwidth: self.bandwidth.as_ref().map(TokenBucket::save),
            ops: self.ops.as_ref().map(TokenBucket::save),
        }
    }

    /// Applies a saved state onto this limiter (built from the saved config): each saved
    /// bucket's fill level, clamped to what the bucket can reach. A bucket the config no
    /// longer has is ignored.
    pub fn restore(&mut self, s: &LimiterState, now: u64) {
        let bursts = (
            self.cfg.bandwidth.and_then(|b| b.one_time_burst),
            self.cfg.ops.and_then(|b| b.one_time_burst),
        );
        if let (Some(b), Some(st)) = (&mut self.bandwidth, &s.bandwidth) {
            b.restore(st, bursts.0.unwrap_or(0), now);
        }
        if let (Some(b), Some(st)) = (&mut self.ops, &s.ops) {
            b.restore(st, bursts.1.unwrap_or(0), now);
        }
    }

    #[cfg(test)]
    pub fn buckets(&self) -> (Option<&TokenBucket>, Option<&TokenBucket>) {
        (self.bandwidth.as_ref(), self.ops.as_ref())
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
