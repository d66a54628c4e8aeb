//! When the metrics thread writes a line: every [`FLUSH_INTERVAL`](super::FLUSH_INTERVAL),
//! and soon after a device asks ([`request_flush`], e.g. a drive's host I/O error), but
//! at most once per [`PROMPT_GAP`], so a disk failing on every request costs a few lines
//! a second, not one per request.
//!
//! Asking is cheap on the device thread: an atomic swap, and a condvar wake-up only for
//! the first request since the last flush.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The shortest time between two prompt (asked-for) flushes.
pub const PROMPT_GAP: Duration = Duration::from_millis(250);

/// A flush request and the metrics thread waiting for it.
pub struct Pacer {
    pending: AtomicBool,
    asked: Mutex<bool>,
    wake: Condvar,
}

/// Why [`Pacer::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The periodic interval passed.
    Periodic,
    /// A flush was asked for.
    Asked,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    pub const fn new() -> Self {
        Self {
            pending: AtomicBool::new(false),
            asked: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// Asks for a flush soon (any thread; wakes the waiter once per pending request).
    pub fn request(&self) {
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.asked.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_one();
    }

    /// Waits until `interval` has passed or a flush was asked for; an asked-for flush
    /// comes no sooner than `gap` after the previous one (`last_asked`, updated). The
    /// request is cleared before returning, so one made during the flush that follows
    /// is not lost.
    pub fn wait(&self, interval: Duration, gap: Duration, last_asked: &mut Option<Instant>) -> Due {
        let asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        let (mut asked, _) = self
            .wake
            .wait_timeout_while(asked, interval, |a| !*a)
            .unwrap_or_else(|p| p.into_inner());
        if !*asked {
            return Due::Periodic;
        }
        *asked = false;
        drop(asked);
        if let Some(earlier) = *last_asked {
            let next = earlier + gap;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        *last_asked = Some(Instant::now());
        self.pending.store(false, Ordering::Release);
        Due::Asked
    }
}

/// The process's pacer (the metrics thread waits on it).
pub static PACER: Pacer = Pacer::new();

/// Asks the metrics thread for a line soon (see [`Pacer::request`]).
pub fn request_flush() {
    PACER.request();
}
