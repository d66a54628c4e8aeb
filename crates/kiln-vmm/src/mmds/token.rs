//! MMDS V2 session tokens: random, 64 hex characters, each valid for its TTL (1..=21600
//! s). At most [`MAX_TOKENS`] live at once (expired ones are dropped first, then the
//! oldest), so a guest cannot grow the VMM's memory by asking for tokens.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Firecracker's bounds for `X-metadata-token-ttl-seconds`.
pub const MAX_TTL_SECS: u64 = 21600;
/// Live tokens kept at most.
pub const MAX_TOKENS: usize = 1024;

#[derive(Debug, Default)]
pub struct Tokens {
    live: VecDeque<(String, Instant)>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    let mut done = 0;
    while done < b.len() {
        // SAFETY: writes at most the remaining length into our own buffer.
        let n = unsafe { libc::getrandom(b[done..].as_mut_ptr().cast(), b.len() - done, 0) };
        if n > 0 {
            done += n.unsigned_abs();
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Tokens {
    /// A new token valid until `now + ttl`.
    pub fn issue(&mut self, now: Instant, ttl: Duration) -> String {
        self.live.retain(|(_, until)| *until > now);
        while self.live.len() >= MAX_TOKENS {
            self.live.pop_front();
        }
        let t = random_hex();
        self.live.push_back((t.clone(), now + ttl));
        t
    }

    /// Whether `token` was issued and has not expired at `now`.
    pub fn valid(&self, token: &str, now: Instant) -> bool {
        self.live
            .iter()
            .any(|(t, until)| t == token && *until > now)
    }
}
