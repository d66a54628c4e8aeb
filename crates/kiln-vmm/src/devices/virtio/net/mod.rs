//! virtio-net (virtio 1.1 §5.1) on a host TAP: device id 1, `VIRTIO_F_VERSION_1` and,
//! when a `guest_mac` is configured, `VIRTIO_NET_F_MAC`; no offloads, no mergeable rx
//! buffers, no control queue. Queue 0 is rx (host to guest), queue 1 tx.
//!
//! Every frame on both queues is a 12-byte `virtio_net_hdr_v1` and the Ethernet frame.
//! The TAP speaks the same header (`IFF_VNET_HDR`, `TUNSETVNETHDRSZ` 12), so a frame
//! moves with one copy each way through a buffer of [`MAX_FRAME`] bytes allocated once
//! per direction: rx reads the TAP into it and scatters it into the guest's writable
//! chain; tx gathers the guest's readable chain into it and writes it to the TAP. The
//! header is rewritten both ways (no offload was negotiated, so it carries nothing:
//! `num_buffers` 1 towards the guest, all zero towards the host), so the guest cannot
//! hand the host kernel GSO or checksum requests.
//!
//! Event loop: the device's [`backend_fd`](super::VirtioDevice::backend_fd) is an
//! epoll fd over the TAP (edge-triggered: the device reads until EAGAIN, or stops with a
//! frame kept back and resumes on the next rx kick or limiter timer) and the two rate
//! limiters' timerfds. A frame that waits for a guest buffer or the rx limiter stays in
//! the rx buffer; a tx chain refused by the tx limiter goes back on the queue.
//!
//! Hostile input: a tx chain with a write-only descriptor, shorter than the header,
//! longer than [`MAX_FRAME`] or outside guest memory is dropped and counted
//! (`tx_malformed`); an rx chain with a read-only descriptor, too small for the frame
//! or outside guest memory gets a used length of 0 and its frame is dropped
//! (`rx_malformed`). Descriptor loops end at the queue size (virtio-queue's chain
//! iterator). Nothing from the guest panics the VMM.

mod device;
mod frame;
pub mod tap;
#[cfg(test)]
pub(crate) mod tests;

pub use device::{Net, NetState, NetStateError};
pub use tap::{Tap, TapError};

/// The device kind, as snapshot messages name it.
pub const KIND: &str = "virtio-net";
/// Queue indexes.
pub const RXQ: usize = 0;
pub const TXQ: usize = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// `virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers.
pub const HDR_LEN: usize = 12;
/// The largest frame with its header (a 64 KiB frame plus headers, as Firecracker);
/// longer tx chains are dropped.
pub const MAX_FRAME: usize = 65562;
