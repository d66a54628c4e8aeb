//! The entropy device: one request queue; every device-writable buffer in a chain is
//! filled from `getrandom(2)`, up to [`MAX_BYTES_PER_REQUEST`] bytes per chain. Readable
//! buffers are ignored. The bounce buffer is allocated once, so a guest cannot make the
//! VMM allocate per request.
//!
//! An optional rate limiter (`PUT /entropy`): `bandwidth` counts the bytes a chain asks
//! for (its writable length, capped), `ops` chains. A chain that does not fit stays on
//! the queue and the limiter's timerfd (the device's backend fd) resumes it.

use std::io;
use std::os::fd::RawFd;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use serde::{Deserialize, Serialize};

use crate::devices::persist::Persist;
use crate::devices::rate_limiter::{self, LimiterState, RateLimiter, RateLimiterConfig};
use crate::devices::virtio::{DeviceStateError, VirtioDevice, VirtioDeviceState};
use crate::metrics::{add, METRICS};

/// At most this many random bytes are produced for one descriptor chain.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

const QUEUE_SIZES: [u16; 1] = [256];

/// The rng's snapshot state: its limiter's fill levels (`{"kind": "rng"}` without one).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RngState {
    #[serde(default, skip_serializing_if = "is_unlimited")]
    pub limiter: LimiterState,
}

fn is_unlimited(s: &LimiterState) -> bool {
    *s == LimiterState::default()
}

/// virtio-rng device.
pub struct Rng {
    buf: Box<[u8]>,
    limiter: RateLimiter,
    /// The limiter's clock (nanoseconds; tests move their own).
    clock: fn() -> u64,
}

impl Rng {
    /// A device whose requests pass `limiter` (validated; default: unlimited).
    pub fn new(limiter: &RateLimiterConfig) -> io::Result<Self> {
        Ok(Rng {
            buf: vec![0u8; MAX_BYTES_PER_REQUEST].into_boxed_slice(),
            limiter: RateLimiter::new(limiter, rate_limiter::now())?,
            clock: rate_limiter::now,
        })
    }

    #[cfg(test)]
    pub(super) fn set_clock(&mut self, clock: fn() -> u64) {
        self.clock = clock;
    }

    /// Bytes the chain asks for: its writable length, capped per request.
    fn wanted(chain: &DescriptorChain<&GuestMemoryMmap>) -> u64 {
        let total: u64 = chain.clone().writable().map(|d| u64::from(d.len())).sum();
        total.min(MAX_BYTES_PER_REQUEST as u64)
    }

    /// Serves the queue until it is empty or the limiter says stop.
    fn run(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut used = false;
        while !self.limiter.is_blocked() {
            let before = queue.next_avail();
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            if !self.limiter.consume(Self::wanted(&chain), (self.clock)()) {
                queue.set_next_avail(before);
                crate::metrics::inc(&METRICS.rng.throttled);
                break;
            }
            let head = chain.head_index();
            let len = self.handle_chain(chain);
            if let Err(e) = queue.add_used(mem, head, len) {
                tracing::error!("virtio-rng: cannot add used entry: {e}");
                break;
            }
            used = true;
        }
        used
    }

    /// Fills the chain's writable buffers; returns the number of bytes written.
    fn handle_chain(&mut self, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        let mem = chain.memory();
        let mut written = 0usize;
        for desc in chain.clone().writable() {
            let room = MAX_BYTES_PER_REQUEST - written;
            let len = room.min(desc.len() as usize);
            if len == 0 {
                break;
            }
            let buf = &mut self.buf[..len];
            if let Err(e) = fill_random(buf) {
                tracing::error!("virtio-rng: getrandom failed: {e}");
                break;
            }
            if let Err(e) = mem.write_slice(buf, desc.addr()) {
                tracing::warn!("virtio-rng: bad buffer {:#x}+{len}: {e}", desc.addr().0);
                break;
            }
            written += len;
        }
        add(&METRICS.rng.bytes, written as u64);
        // `written` <= MAX_BYTES_PER_REQUEST, which fits in u32.
        u32::try_from(written).unwrap_or(u32::MAX)
    }
}

/// Fills `buf` completely from the kernel's CSPRNG.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid, exclusively borrowed buffer of `rest.len()` bytes;
        // getrandom writes at most that many bytes into it.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // n >= 0 and <= rest.len().
        done += n.unsigned_abs();
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // virtio-rng has no config space.
        data.fill(0);
    }

    fn save_state(&self) -> VirtioDeviceState {
        VirtioDeviceState::Rng(self.save())
    }

    fn restore_state(&mut self, state: &VirtioDeviceState) -> Result<(), DeviceStateError> {
        match state {
            VirtioDeviceState::Rng(s) => match self.restore(s) {
                Ok(()) => Ok(()),
                Err(never) => match never {},
            },
            other => Err(DeviceStateError::kind(other, super::KIND)),
        }
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        self.run(queue, mem)
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.limiter.timer_fd())
    }

    fn process_backend(&mut self, queues: Option<&mut [Queue]>, mem: &GuestMemoryMmap) -> bool {
        self.limiter.on_timer();
        match queues.and_then(|q| q.get_mut(0)) {
            Some(q) => self.run(q, mem),
            None => false,
        }
    }

    fn after_restore(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        match queues.get_mut(0) {
            Some(q) => self.run(q, mem),
            None => false,
        }
    }
}

impl Persist for Rng {
    type State = RngState;
    type Error = std::convert::Infallible;

    fn save(&self) -> RngState {
        RngState {
            limiter: self.limiter.save(),
        }
    }

    /// The device is built from the saved config; this restores its limiter's levels.
    fn restore(&mut self, state: &RngState) -> Result<(), Self::Error> {
        self.limiter.restore(&state.limiter, (self.clock)());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{guest_mem, TestQueue};
    use vm_memory::GuestAddress;

    fn run(rng: &mut Rng, q: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        rng.process_queue(0, std::slice::from_mut(q), mem)
    }

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    #[test]
    fn fills_writable_buffers_with_random_bytes() {
        let mem = guest_mem();
        let mut tq = TestQueue::new(&mem, 0x1000, 16);
        let mut q = tq.queue();
        let mut rng = Rng::new(&RateLimiterConfig::default()).unwrap();
        // A readable buffer first: ignored and left untouched.
        tq.add_chain(&[(0x10_0000, 64, false), (0x11_0000, 4096, true)]);
        tq.add_chain(&[(0x12_0000, 4096, true)]);
        assert!(run(&mut rng, &mut q, &mem));
        assert_eq!(tq.used_idx(), 2);
        assert_eq!(tq.used(0), (0, 4096));
        assert_eq!(tq.used(1), (2, 4096));
        assert!(read(&mem, 0x10_0000, 64).iter().all(|&b| b == 0));
        let a = read(&mem, 0x11_0000, 4096);
        let b = read(&mem, 0x12_0000, 4096);
        assert!(a.iter().any(|&x| x != a[0]), "constant output");
        assert_ne!(a, b);
        // Nothing pending: no used entries, no interrupt wanted.
        assert!(!run(&mut rng, &mut q, &mem));
    }

    #[test]
    fn caps_bytes_per_request() {
        let mem = guest_mem();
        let mut tq = TestQueue::new(&mem, 0x1000, 16);
        let mut q = tq.queue();
        let mut rng = Rng::new(&RateLimiterConfig::default()).unwrap();
        let cap = MAX_BYTES_PER_REQUEST as u32;
        // One huge descriptor and a second one after the cap is reached.
        tq.add_chain(&[(0x10_0000, 0x10_0000, true), (0x30_0000, 4096, true)]);
        assert!(run(&mut rng, &mut q, &mem));
        assert_eq!(tq.used(0), (0, cap));
        let tail = read(&mem, 0x10_0000 + u64::from(cap), 0x1000);
        assert!(tail.iter().all(|&b| b == 0), "wrote past the cap");
        assert!(read(&mem, 0x30_0000, 4096).iter().all(|&b| b == 0));
    }

    #[test]
    fn bad_addresses_do_not_stop_the_device() {
        let mem = guest_mem();
        let mut tq = TestQueue::new(&mem, 0x1000, 16);
        let mut q = tq.queue();
        let mut rng = Rng::new(&RateLimiterConfig::default()).unwrap();
        tq.add_chain(&[(u64::MAX - 8, 4096, true)]);
        tq.add_chain(&[(0x3f_ff00, 4096, true)]); // straddles the end of memory
        tq.add_chain(&[(0x10_0000, 32, true)]);
        assert!(run(&mut rng, &mut q, &mem));
        assert_eq!(tq.used_idx(), 3);
        assert_eq!(tq.used(0).1, 0);
        assert_eq!(tq.used(1).1, 0);
        assert_eq!(tq.used(2), (2, 32));
    }

    static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn fake_now() -> u64 {
        CLOCK.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn wait_readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 10_000) == 1 }
    }

    #[test]
    fn the_limiter_holds_requests_until_its_timer_and_survives_a_snapshot() {
        use std::sync::atomic::Ordering::SeqCst;
        let cfg: RateLimiterConfig =
            serde_json::from_str(r#"{"bandwidth": {"size": 4096, "refill_time": 100}}"#).unwrap();
        let mem = guest_mem();
        let mut tq = TestQueue::new(&mem, 0x1000, 16);
        let mut q = tq.queue();
        let mut rng = Rng::new(&cfg).unwrap();
        CLOCK.store(rate_limiter::now(), SeqCst);
        rng.set_clock(fake_now);
        let throttled = METRICS
            .rng
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed);
        tq.add_chain(&[(0x10_0000, 4096, true)]);
        tq.add_chain(&[(0x11_0000, 4096, true)]);
        assert!(run(&mut rng, &mut q, &mem));
        assert_eq!(tq.used_idx(), 1, "the second request waits for tokens");
        assert!(
            METRICS
                .rng
                .throttled
                .load(std::sync::atomic::Ordering::Relaxed)
                > throttled
        );
        // A kick while throttled takes nothing.
        assert!(!run(&mut rng, &mut q, &mem));
        assert_eq!(tq.used_idx(), 1);
        // The snapshot keeps the empty bucket: a restored device waits too.
        let saved = rng.save();
        let json = serde_json::to_string(&saved).unwrap();
        assert!(json.contains("limiter"), "{json}");
        let back: RngState = serde_json::from_str(&json).unwrap();
        let mut restored = Rng::new(&cfg).unwrap();
        restored.set_clock(fake_now);
        restored.restore(&back).unwrap();
        let mut tq2 = TestQueue::new(&mem, 0x8000, 16);
        let mut q2 = tq2.queue();
        tq2.add_chain(&[(0x20_0000, 4096, true)]);
        assert!(
            !run(&mut restored, &mut q2, &mem),
            "restored bucket is empty"
        );
        // Time passes; the timer fires and the queue moves on.
        CLOCK.fetch_add(200_000_000, SeqCst);
        assert!(wait_readable(rng.backend_fd().unwrap()));
        assert!(rng.process_backend(Some(std::slice::from_mut(&mut q)), &mem));
        assert_eq!(tq.used(1), (1, 4096));
        // An unlimited device saves the old, empty state.
        let free = Rng::new(&RateLimiterConfig::default()).unwrap();
        assert_eq!(serde_json::to_string(&free.save()).unwrap(), "{}");
        let old: RngState = serde_json::from_str("{}").unwrap();
        assert_eq!(old, RngState::default());
    }
}
