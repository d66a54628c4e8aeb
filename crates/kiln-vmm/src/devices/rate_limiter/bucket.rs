//! One token bucket (Firecracker's semantics): `size` tokens refill from empty to full in
//! `refill_time` ms, linearly; `one_time_burst` extra tokens are spent first and never
//! refill. Time is passed in (nanoseconds on any monotonic clock), so the arithmetic is
//! tested without a clock.
//!
//! A request larger than `size` (a 64 KiB frame through a 16 KiB bucket) would never fit:
//! it is let through when the bucket is full and leaves the budget negative, so it waits
//! as long as its size needs before the next one passes (Firecracker's over-consumption).

use serde::{Deserialize, Serialize};

use super::TokenBucketConfig;

/// What a snapshot keeps of a bucket: the tokens left (its fill level) and the burst left.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BucketState {
    pub budget: i64,
    pub one_time_burst: u64,
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    size: u64,
    /// Nanoseconds to refill `size` tokens.
    refill_ns: u64,
    /// Tokens of the one-time burst not yet spent.
    burst: u64,
    /// Tokens in the bucket; negative after an over-consumption.
    budget: i64,
    /// The instant up to which refills have been credited.
    last: u64,
}

impl TokenBucket {
    /// A full bucket, or None for an unlimited one (size or refill_time 0, as in
    /// Firecracker). `cfg` is validated: size and burst fit in an i64.
    pub fn new(cfg: &TokenBucketConfig, now: u64) -> Option<TokenBucket> {
        if cfg.size == 0 || cfg.refill_time == 0 {
            return None;
        }
        Some(TokenBucket {
            size: cfg.size,
            refill_ns: cfg.refill_time.saturating_mul(1_000_000),
            burst: cfg.one_time_burst.unwrap_or(0),
            budget: cfg.size as i64,
            last: now,
        })
    }

    /// Credits the tokens that time `now` adds, up to `size`. Only the time the credited
    /// whole tokens stand for is consumed, so frequent calls lose no fractions.
    fn refill(&mut self, now: u64) {
        let size = i128::from(self.size);
        if i128::from(self.budget) >= size {
            self.last = now;
            return;
        }
        let elapsed = u128::from(now.saturating_sub(self.last));
        let added = elapsed * u128::from(self.size) / u128::from(self.refill_ns);
        if added == 0 {
            return;
        }
        // added * refill_ns / size <= elapsed, so `last` never passes `now`; rounding
        // down credits at most 1 ns too much per refill.
        let used = added * u128::from(self.refill_ns) / u128::from(self.size);
        self.last = self.last.saturating_add(used as u64);
        let budget = (i128::from(self.budget) + added as i128).min(size);
        self.budget = budget as i64;
        if budget >= size {
            self.last = now;
        }
    }

    /// Whether `tokens` can be taken at `now`: Ok, or Err(nanoseconds until they can).
    pub fn check(&mut self, tokens: u64, now: u64) -> Result<(), u64> {
        self.refill(now);
        let burst = i128::from(self.burst);
        let budget = i128::from(self.budget);
        let size = i128::from(self.size);
        let tokens = i128::from(tokens);
        if tokens <= burst + budget.max(0) || (tokens > size + burst && budget >= size) {
            return Ok(());
        }
        // Wait until the budget holds what is missing (at most a full bucket).
        let target = (tokens - burst).min(size);
        let missing = (target - budget).max(1) as u128;
        let wait = (missing * u128::from(self.refill_ns)).div_ceil(u128::from(self.size));
        Err(u64::try_from(wait).unwrap_or(u64::MAX))
    }

    /// Takes `tokens` (after a successful [`TokenBucket::check`]): the burst first.
    pub fn take(&mut self, tokens: u64) {
        let from_burst = tokens.min(self.burst);
        self.burst -= from_burst;
        let rest = i64::try_from(tokens - from_burst).unwrap_or(i64::MAX);
        self.budget = self.budget.saturating_sub(rest);
    }

    pub fn save(&self) -> BucketState {
        BucketState {
            budget: self.budget,
            one_time_burst: self.burst,
        }
    }

    /// Applies a saved (untrusted) state, clamped to what this bucket can reach: a
    /// budget between minus the largest request and `size`, a burst no larger than
    /// the configured one. Refills count from `now`.
    pub fn restore(&mut self, s: &BucketState, configured_burst: u64, now: u64) {
        let size = self.size as i64;
        self.budget = s.budget.clamp(-size.saturating_mul(64), size);
        self.burst = s.one_time_burst.min(configured_burst);
        self.last = now;
    }

    #[cfg(test)]
    pub fn budget(&self) -> i64 {
        self.budget
    }
}
