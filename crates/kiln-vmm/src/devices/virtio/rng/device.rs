//! The entropy device: one request queue; every device-writable buffer in a chain is
//! filled from `getrandom(2)`, up to [`MAX_BYTES_PER_REQUEST`] bytes per chain. Readable
//! buffers are ignored. The bounce buffer is allocated once, so a guest cannot make the
//! VMM allocate per request.

use std::io;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use serde::{Deserialize, Serialize};

use crate::devices::persist::Persist;
use crate::devices::virtio::{DeviceStateError, VirtioDevice, VirtioDeviceState};
use crate::metrics::{add, METRICS};

/// At most this many random bytes are produced for one descriptor chain.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

const QUEUE_SIZES: [u16; 1] = [256];

/// The rng keeps nothing worth saving: its snapshot state is empty (`{"kind": "rng"}`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RngState {}

/// virtio-rng device.
pub struct Rng {
    buf: Box<[u8]>,
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    pub fn new() -> Self {
        Rng {
            buf: vec![0u8; MAX_BYTES_PER_REQUEST].into_boxed_slice(),
        }
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
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
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
}

impl Persist for Rng {
    type State = RngState;
    type Error = std::convert::Infallible;

    fn save(&self) -> RngState {
        RngState {}
    }

    fn restore(&mut self, _state: &RngState) -> Result<(), Self::Error> {
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
        let mut rng = Rng::new();
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
        let mut rng = Rng::new();
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
        let mut rng = Rng::new();
        tq.add_chain(&[(u64::MAX - 8, 4096, true)]);
        tq.add_chain(&[(0x3f_ff00, 4096, true)]); // straddles the end of memory
        tq.add_chain(&[(0x10_0000, 32, true)]);
        assert!(run(&mut rng, &mut q, &mem));
        assert_eq!(tq.used_idx(), 3);
        assert_eq!(tq.used(0).1, 0);
        assert_eq!(tq.used(1).1, 0);
        assert_eq!(tq.used(2), (2, 32));
    }
}
