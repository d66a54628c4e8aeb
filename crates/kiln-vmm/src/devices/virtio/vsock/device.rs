//! The virtio-vsock device: features, config space, and moving packets between the
//! virtqueues and the [`Muxer`].

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::muxer::Muxer;
use super::packet::{self, HDR_LEN, MAX_PAYLOAD};
use super::VsockError;
use crate::devices::persist::Persist;
use crate::devices::virtio::{
    read_config_bytes, DeviceStateError, VirtioDevice, VirtioDeviceState,
};
use crate::metrics::{add, inc, METRICS};

/// Queue indexes (virtio 1.2 §5.10.2).
pub const RXQ: usize = 0;
pub const TXQ: usize = 1;
pub const EVQ: usize = 2;
/// Size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];
/// How long a host-initiated connection waits for the guest's answer, and a close for the
/// guest's RST.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
const EVENT_TRANSPORT_RESET: u32 = 0;

/// The device-specific snapshot state. Connections are not saved (their host sockets
/// cannot be): after a restore the guest gets a transport reset and drops them.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VsockState {
    /// The CID the guest driver read from config space.
    pub guest_cid: u64,
}

/// A saved [`VsockState`] has another guest CID than this device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "vsock: the snapshot's guest_cid is {saved}, this device's is {this}; restore with \
     guest_cid {saved}"
)]
pub struct VsockStateError {
    pub saved: u64,
    pub this: u64,
}

/// virtio-vsock device backed by unix sockets.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    muxer: Muxer,
    /// One packet's payload, both ways; allocated once.
    buf: Box<[u8]>,
    /// Tx processing stopped because RSTs wait for rx buffers.
    tx_throttled: bool,
}

impl Vsock {
    /// A device for the guest with CID `guest_cid`, listening on `uds_path` for host
    /// clients. The socket file is created now and removed when the device is dropped.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Vsock, VsockError> {
        Self::with_timeout(guest_cid, uds_path, TIMEOUT)
    }

    /// As [`Vsock::new`] with another connect/close timeout.
    pub fn with_timeout(
        guest_cid: u64,
        uds_path: &Path,
        timeout: Duration,
    ) -> Result<Vsock, VsockError> {
        if guest_cid < 3 || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::Cid(guest_cid));
        }
        let muxer =
            Muxer::new(guest_cid, uds_path, timeout).map_err(|source| VsockError::Bind {
                path: uds_path.to_path_buf(),
                source,
            })?;
        Ok(Vsock {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            muxer,
            buf: vec![0u8; MAX_PAYLOAD].into_boxed_slice(),
            tx_throttled: false,
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.muxer.len()
    }

    /// Drops every connection and posts `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` on the event
    /// queue, after which the guest driver drops its connections too (used after a snapshot
    /// restore, when the host side of every connection is gone). Returns true if the event
    /// was delivered (the transport should then raise the used-ring interrupt).
    pub fn send_transport_reset(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        self.muxer.reset_all();
        self.tx_throttled = false;
        inc(&METRICS.vsock.resets);
        let Some(evq) = queues.get_mut(EVQ) else {
            return false;
        };
        let Some(chain) = evq.pop_descriptor_chain(mem) else {
            tracing::warn!("vsock: no event buffer for the transport reset event");
            return false;
        };
        let head = chain.head_index();
        let event = EVENT_TRANSPORT_RESET.to_le_bytes();
        let len = match packet::writable_room(mem, &chain, event.len()) {
            Some(n) if n == event.len() => packet::scatter(mem, chain, [&event[..]]).unwrap_or(0),
            _ => {
                tracing::warn!("vsock: unusable event buffer");
                0
            }
        };
        add_used(evq, mem, head, len)
    }

    /// Runs both data queues until neither can make progress.
    fn run(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let [rxq, txq, _evq] = queues else {
            return false;
        };
        let mut used = false;
        loop {
            used |= self.process_tx(txq, mem);
            used |= self.process_rx(rxq, mem);
            // Tx resumes once rx buffers took the RST backlog.
            if !self.tx_throttled || self.muxer.rst_backlogged() {
                return used;
            }
        }
    }

    fn process_tx(&mut self, txq: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        self.tx_throttled = false;
        let mut used = false;
        loop {
            if self.muxer.rst_backlogged() {
                self.tx_throttled = true;
                return used;
            }
            let Some(chain) = txq.pop_descriptor_chain(mem) else {
                return used;
            };
            let head = chain.head_index();
            match packet::read_tx(mem, chain, &mut self.buf) {
                Ok(hdr) => {
                    inc(&METRICS.vsock.tx_packets);
                    self.muxer
                        .on_guest_packet(&hdr, &self.buf[..hdr.len as usize]);
                }
                Err(e) => {
                    tracing::warn!("vsock: dropping a malformed tx packet: {e}");
                    if let Some(hdr) = e.header() {
                        self.muxer.on_bad_packet(hdr);
                    }
                }
            }
            used |= add_used(txq, mem, head, 0);
        }
    }

    fn process_rx(&mut self, rxq: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut used = false;
        while self.muxer.has_rx_work() {
            let Some(chain) = rxq.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let room = match packet::writable_room(mem, &chain, HDR_LEN + MAX_PAYLOAD) {
                Some(room) if room >= HDR_LEN => room,
                _ => {
                    tracing::warn!(
                        "vsock: skipping an rx buffer that is too small or not in memory"
                    );
                    used |= add_used(rxq, mem, head, 0);
                    continue;
                }
            };
            let Some((hdr, len)) = self.muxer.next_rx(&mut self.buf[..room - HDR_LEN]) else {
                // Nothing to send after all: leave the buffer for later.
                rxq.go_to_previous_position();
                break;
            };
            let raw = hdr.to_bytes();
            let written = packet::scatter(mem, chain, [&raw[..], &self.buf[..len]]);
            let n = match written {
                Ok(n) if n == HDR_LEN + len => {
                    inc(&METRICS.vsock.rx_packets);
                    add(&METRICS.vsock.rx_bytes, len as u64);
                    n
                }
                other => {
                    // The guest changed the chain under us; its connection lost data.
                    tracing::warn!("vsock: rx buffer write failed: {other:?}");
                    self.muxer.on_bad_packet(&swap_ends(&hdr));
                    0
                }
            };
            used |= add_used(rxq, mem, head, n);
        }
        used
    }
}

/// A header as if the guest had sent it (for resetting the connection it names).
fn swap_ends(hdr: &packet::Header) -> packet::Header {
    packet::Header {
        src_cid: hdr.dst_cid,
        dst_cid: hdr.src_cid,
        src_port: hdr.dst_port,
        dst_port: hdr.src_port,
        ..*hdr
    }
}

fn add_used(q: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: usize) -> bool {
    // Used lengths here are at most HDR_LEN + MAX_PAYLOAD.
    let len = u32::try_from(len).unwrap_or(0);
    match q.add_used(mem, head, len) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("vsock: cannot add used entry for head {head}: {e}");
            false
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        // Stream sockets only: no VIRTIO_VSOCK_F_SEQPACKET.
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        // Event buffers are only consumed by send_transport_reset.
        if index == EVQ {
            return false;
        }
        self.run(queues, mem)
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.muxer.fd())
    }

    fn process_backend(&mut self, queues: Option<&mut [Queue]>, mem: &GuestMemoryMmap) -> bool {
        self.muxer.process_host_events();
        match queues {
            Some(queues) => self.run(queues, mem),
            None => false,
        }
    }

    fn reset(&mut self) {
        self.muxer.reset_all();
        self.tx_throttled = false;
    }

    fn save_state(&self) -> VirtioDeviceState {
        VirtioDeviceState::Vsock(self.save())
    }

    fn restore_state(&mut self, state: &VirtioDeviceState) -> Result<(), DeviceStateError> {
        match state {
            VirtioDeviceState::Vsock(s) => Ok(self.restore(s)?),
            other => Err(DeviceStateError::kind(other, super::KIND)),
        }
    }

    /// Host sockets do not survive a snapshot: tell the guest to drop its connections.
    /// The listener and the muxer stay as they are, ready for new connections.
    fn after_restore(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        self.send_transport_reset(queues, mem)
    }
}

impl Persist for Vsock {
    type State = VsockState;
    type Error = VsockStateError;

    fn save(&self) -> VsockState {
        VsockState {
            guest_cid: self.guest_cid,
        }
    }

    /// The restored device must have the snapshot's CID: the guest learns a new CID only
    /// from a transport reset it might not receive (no event buffer posted), and until then
    /// the muxer would drop every packet it sends.
    fn restore(&mut self, saved: &VsockState) -> Result<(), VsockStateError> {
        if saved.guest_cid != self.guest_cid {
            return Err(VsockStateError {
                saved: saved.guest_cid,
                this: self.guest_cid,
            });
        }
        Ok(())
    }
}
