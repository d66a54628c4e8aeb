//! virtio-mmio transport and virtio devices.
//!
//! Shape (after rust-vmm's vmm-reference): a device implements [`VirtioDevice`] and knows
//! nothing about MMIO; [`MmioTransport`] owns the register file, the virtqueues, one
//! notification eventfd per queue and the interrupt eventfd, and calls into the device when
//! a queue is kicked. Everything read from guest memory is treated as hostile: devices
//! bounds-check every descriptor and never panic on guest input.
//!
//! Notification policy: we never offer `VIRTIO_RING_F_EVENT_IDX`, so after any used-ring
//! update the transport raises the used-ring interrupt unconditionally.
//!
//! Host-side events: a device with its own event sources (vsock's sockets) exposes one fd
//! through [`VirtioDevice::backend_fd`], typically an epoll fd over all of them. The
//! transport registers it in the event loop beside the queue eventfds and calls
//! [`VirtioDevice::process_backend`] (with the queues once the device runs) whenever it is
//! readable, raising the used-ring interrupt if the device used buffers. The fd is polled
//! level-triggered, so the device must consume what made it readable or stop watching it.
//!
//! Snapshots: each device implements [`Persist`](crate::devices::persist::Persist) with its own state type, and
//! [`VirtioDevice::save_state`] / [`VirtioDevice::restore_state`] wrap it in the variant of
//! [`VirtioDeviceState`] for its kind, so a saved state of one kind offered to a device of
//! another is refused by name.

pub mod blk;
pub mod mmio;
pub mod net;
mod queue_handler;
pub mod rng;
#[cfg(test)]
mod test_utils;
pub mod vsock;

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK, VIRTIO_ID_NET, VIRTIO_ID_RNG, VIRTIO_ID_VSOCK};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use blk::{Block, BlockError, BlockState, BlockStateError};
pub use mmio::{MmioTransport, TransportState, TransportStateError};
pub use net::{Net, NetState, NetStateError, Tap, TapError};
pub use rng::{Rng, RngState};
pub use vsock::{Vsock, VsockError, VsockState, VsockStateError};

/// Size of one virtio-mmio device window.
pub const MMIO_REGION_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register (where KVM ioeventfds are attached).
pub const NOTIFY_REG_OFFSET: u64 = 0x50;

/// Feature bit: the device is a modern (virtio 1.x) device. Always offered.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// InterruptStatus bit: a used ring was updated.
pub const INT_USED_RING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// InterruptStatus bit: the configuration space changed (or the device needs a reset).
pub const INT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
#[error("virtio device activation failed: {0}")]
pub struct ActivateError(pub String);

/// The device-specific part of a virtio device's snapshot, tagged with the device's kind
/// (`{"kind": "block", "capacity": 8, "read_only": false}`). The transport saves features,
/// queues and interrupt status itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VirtioDeviceState {
    Block(BlockState),
    Vsock(VsockState),
    Rng(RngState),
    Net(NetState),
}

impl VirtioDeviceState {
    /// `VIRTIO_ID_*` of the device kind the state belongs to.
    pub fn device_type(&self) -> u32 {
        match self {
            Self::Block(_) => VIRTIO_ID_BLOCK,
            Self::Vsock(_) => VIRTIO_ID_VSOCK,
            Self::Rng(_) => VIRTIO_ID_RNG,
            Self::Net(_) => VIRTIO_ID_NET,
        }
    }

    /// The device kind the state belongs to, as messages name it.
    pub fn kind(&self) -> &'static str {
        kind_of(self.device_type())
    }
}

/// The name messages give the device of type `device_type` (`VIRTIO_ID_*`).
pub fn kind_of(device_type: u32) -> &'static str {
    match device_type {
        VIRTIO_ID_BLOCK => blk::KIND,
        VIRTIO_ID_VSOCK => vsock::KIND,
        VIRTIO_ID_RNG => rng::KIND,
        VIRTIO_ID_NET => net::KIND,
        _ => "unknown virtio device",
    }
}

/// Why a device refused a saved [`VirtioDeviceState`].
#[derive(Debug, thiserror::Error)]
pub enum DeviceStateError {
    #[error("saved device type {saved} does not match device type {device}")]
    Kind {
        saved: &'static str,
        device: &'static str,
    },
    #[error(transparent)]
    Block(#[from] BlockStateError),
    #[error(transparent)]
    Vsock(#[from] VsockStateError),
    #[error(transparent)]
    Net(#[from] NetStateError),
}

impl DeviceStateError {
    /// `saved` was offered to a device of kind `device`.
    pub(crate) fn kind(saved: &VirtioDeviceState, device: &'static str) -> Self {
        Self::Kind {
            saved: saved.kind(),
            device,
        }
    }
}

/// A virtio device behind a transport.
///
/// The transport owns the queues; the device gets them lent on every kick, and on every
/// event of its [`VirtioDevice::backend_fd`] (see the module docs).
pub trait VirtioDevice: Send {
    /// Virtio device type (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;

    /// Maximum size of each virtqueue (each a power of two, at most 32768). The number of
    /// entries is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Device-specific feature bits. The transport adds `VIRTIO_F_VERSION_1`.
    fn features(&self) -> u64;

    /// The features the driver accepted (a subset of what was offered), at FEATURES_OK.
    fn ack_features(&mut self, _features: u64) {}

    /// Reads device config space at `offset`; bytes past the end of the config read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes device config space. The default ignores the write (read-only config).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// Called once when the driver sets DRIVER_OK and all queues are valid.
    fn activate(&mut self, _interrupt: Interrupt) -> Result<(), ActivateError> {
        Ok(())
    }

    /// Processes the available descriptors of queue `index` (always `< queues.len()`).
    /// Returns true if at least one used-ring entry was added (the transport then raises
    /// the used-ring interrupt).
    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool;

    /// An fd the event loop watches for readability on the device's behalf (e.g. an epoll
    /// fd over its host sockets). It must stay open and the same for the device's lifetime.
    fn backend_fd(&self) -> Option<RawFd> {
        None
    }

    /// [`VirtioDevice::backend_fd`] is readable. `queues` is None until the device is
    /// activated (and after a reset); the device must still consume the event. Returns true
    /// if used-ring entries were added.
    fn process_backend(&mut self, _queues: Option<&mut [Queue]>, _mem: &GuestMemoryMmap) -> bool {
        false
    }

    /// The driver reset the device (wrote 0 to Status). Drop any in-flight state.
    fn reset(&mut self) {}

    /// The device's own state for a snapshot, in its kind's variant (see
    /// [`VirtioDeviceState`]).
    fn save_state(&self) -> VirtioDeviceState;

    /// Applies what [`VirtioDevice::save_state`] returned, after the transport has acked
    /// the saved features and (if it ran) activated the device. The state comes from an
    /// untrusted file: a state of another kind is refused, and the device validates the
    /// rest ([`Persist::restore`](crate::devices::persist::Persist::restore)).
    fn restore_state(&mut self, state: &VirtioDeviceState) -> Result<(), DeviceStateError>;

    /// Called once on a restored, activated device before the VM runs again, before the
    /// transport processes every queue. Returns true if used-ring entries were added.
    fn after_restore(&mut self, _queues: &mut [Queue], _mem: &GuestMemoryMmap) -> bool {
        false
    }

    /// The device as a virtio-net, if it is one (rate limiter changes on a running VM).
    fn net(&mut self) -> Option<&mut Net> {
        None
    }

    /// The device as a virtio-blk, if it is one.
    fn block(&mut self) -> Option<&mut Block> {
        None
    }
}

/// The interrupt line of one device: the InterruptStatus register plus the irqfd.
#[derive(Clone, Debug)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    evt: Arc<EventFd>,
}

impl Interrupt {
    /// Creates a non-blocking irq eventfd with an empty status.
    pub fn new() -> io::Result<Self> {
        Ok(Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            evt: Arc::new(EventFd::new(EFD_NONBLOCK)?),
        })
    }

    /// Sets `cause` (`INT_USED_RING` / `INT_CONFIG`) in InterruptStatus and kicks the irqfd.
    pub fn trigger(&self, cause: u32) {
        self.status.fetch_or(cause, Ordering::SeqCst);
        self.kick();
    }

    /// Kicks the irqfd without changing InterruptStatus (re-raises a pending interrupt).
    pub(crate) fn kick(&self) {
        if let Err(e) = self.evt.write(1) {
            // EAGAIN means the counter is saturated: an interrupt is pending anyway.
            if e.kind() != io::ErrorKind::WouldBlock {
                tracing::error!("virtio: failed to signal irq eventfd: {e}");
            }
        }
    }

    /// Current InterruptStatus value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Sets InterruptStatus without kicking the irqfd (snapshot restore).
    pub(crate) fn set_status(&self, v: u32) {
        self.status.store(v, Ordering::SeqCst);
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears all pending causes (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// The irqfd to register with KVM.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Copies `src` (a little-endian config image) into `data` at `offset`; bytes outside the
/// image read as zero. Shared helper for device config spaces.
pub(crate) fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(avail) = src.get(start..) {
        let n = avail.len().min(data.len());
        data[..n].copy_from_slice(&avail[..n]);
    }
}
