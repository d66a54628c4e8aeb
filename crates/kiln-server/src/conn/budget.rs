//! The server-wide budget of memory for buffered request bodies: a request reserves its
//! share before it reads its body and waits its turn (first come, first served) while
//! others hold the budget; a body that could never fit is refused at once. When a large
//! share is given back, glibc's `malloc_trim(0)` returns the freed memory to the OS
//! (its arenas otherwise keep it).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in units of this many bytes.
const UNIT: u64 = 4096;
/// Giving back at least this much trims the heap.
const TRIM_AT: u64 = 16 << 20;

#[derive(Clone)]
pub struct BodyBudget {
    sem: Arc<Semaphore>,
    bytes: u64,
}

/// A share of the budget, given back when dropped (drop it after the memory it covers).
pub struct Charge {
    permit: Option<OwnedSemaphorePermit>,
}

/// The body needs more than the whole budget.
#[derive(Debug)]
pub struct TooLarge {
    pub needed: u64,
    pub budget: u64,
}

impl BodyBudget {
    pub fn new(bytes: u64) -> BodyBudget {
        let units = bytes.div_ceil(UNIT).clamp(1, u32::MAX as u64);
        BodyBudget {
            sem: Arc::new(Semaphore::new(units as usize)),
            bytes: units * UNIT,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Waits until `bytes` of the budget are free and takes them.
    pub async fn reserve(&self, bytes: u64) -> Result<Charge, TooLarge> {
        let units = bytes.div_ceil(UNIT);
        if units * UNIT > self.bytes {
            return Err(TooLarge {
                needed: bytes,
                budget: self.bytes,
            });
        }
        if units == 0 {
            return Ok(Charge::none());
        }
        let permit = self
            .sem
            .clone()
            .acquire_many_owned(units as u32)
            .await
            .expect("the budget's semaphore is never closed");
        Ok(Charge {
            permit: Some(permit),
        })
    }

    /// Bytes of the budget free now.
    #[cfg(test)]
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }
}

impl Charge {
    /// No share (no budget in force, or an empty body).
    pub fn none() -> Charge {
        Charge { permit: None }
    }

    /// Gives back all but `bytes` of the share (its memory was freed).
    pub fn shrink_to(&mut self, bytes: u64) {
        let keep = bytes.div_ceil(UNIT) as usize;
        let Some(p) = self.permit.as_mut() else {
            return;
        };
        let held = p.num_permits();
        if held > keep {
            drop(p.split(held - keep));
            trim_after((held - keep) as u64 * UNIT);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            let freed = p.num_permits() as u64 * UNIT;
            drop(p);
            trim_after(freed);
        }
    }
}

/// Returns freed heap memory to the OS after a large body went.
fn trim_after(freed: u64) {
    if freed < TRIM_AT {
        return;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[tokio::test]
    async fn shares_wait_their_turn_and_oversized_ones_are_refused() {
        let b = BodyBudget::new(1 << 20);
        let first = b.reserve(700 << 10).await.unwrap();
        let second = b.reserve(700 << 10);
        let mut second = std::pin::pin!(second);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "the budget is held"
        );
        drop(first);
        let got = second.as_mut().poll(&mut cx);
        assert!(matches!(got, std::task::Poll::Ready(Ok(_))));
        let e = b.reserve(2 << 20).await.err().unwrap();
        assert_eq!((e.needed, e.budget), (2 << 20, 1 << 20));
    }

    #[tokio::test]
    async fn a_shrunk_share_gives_the_rest_back() {
        let b = BodyBudget::new(1 << 20);
        let mut c = b.reserve(1 << 20).await.unwrap();
        assert_eq!(b.available(), 0);
        c.shrink_to(256 << 10);
        assert_eq!(b.available(), 768 << 10);
        drop(c);
        assert_eq!(b.available(), 1 << 20);
    }
}
