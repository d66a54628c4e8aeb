//! The virtio-net device: features, config space, the event-loop glue and the rx and tx
//! paths (see the module docs).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::frame::{self, FrameError};
use super::tap::Tap;
use super::{HDR_LEN, MAX_FRAME, QUEUE_SIZE, RXQ, TXQ};
use crate::devices::persist::Persist;
use crate::devices::rate_limiter::{self, LimiterState, RateLimiter, RateLimiterConfig};
use crate::devices::virtio::{
    read_config_bytes, DeviceStateError, VirtioDevice, VirtioDeviceState,
};
use crate::metrics::{add, inc, NetMetrics};

const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];
/// Epoll tokens of the backend fds.
const TAP: u64 = 0;
const RX_TIMER: u64 = 1;
const TX_TIMER: u64 = 2;

/// The device-specific snapshot state (the transport saves the queues).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetState {
    pub iface_id: String,
    /// The MAC offered in config space (None: the guest chose its own).
    pub mac: Option<[u8; 6]>,
    pub rx_limiter: LimiterState,
    pub tx_limiter: LimiterState,
}

/// A saved [`NetState`] is of another interface than this device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "virtio-net '{iface_id}': the snapshot's interface is '{saved_id}' with MAC {saved_mac}, \
     this one has MAC {this_mac}; restore with the snapshot's network-interfaces"
)]
pub struct NetStateError {
    pub iface_id: String,
    pub saved_id: String,
    pub saved_mac: String,
    pub this_mac: String,
}

/// `aa:bb:cc:dd:ee:ff`, or "none".
pub fn mac_text(mac: Option<[u8; 6]>) -> String {
    match mac {
        Some(m) => m
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        None => "none".into(),
    }
}

/// virtio-net device on a TAP.
pub struct Net {
    iface_id: String,
    tap: Tap,
    mac: Option<[u8; 6]>,
    epoll: Epoll,
    rx_limiter: RateLimiter,
    tx_limiter: RateLimiter,
    /// One frame from the TAP; `rx_len` > 0 while it waits for the guest.
    rx_buf: Box<[u8]>,
    rx_len: usize,
    tx_buf: Box<[u8]>,
    metrics: Arc<NetMetrics>,
    /// The limiters' clock (nanoseconds; tests move their own).
    clock: fn() -> u64,
}

impl Net {
    /// A device on `tap` for interface `iface_id`, offering `mac` if given, with the two
    /// limiters (validated configs).
    pub fn new(
        iface_id: &str,
        tap: Tap,
        mac: Option<[u8; 6]>,
        rx: &RateLimiterConfig,
        tx: &RateLimiterConfig,
    ) -> std::io::Result<Net> {
        let now = rate_limiter::now();
        let net = Net {
            iface_id: iface_id.to_string(),
            tap,
            mac,
            epoll: Epoll::new()?,
            rx_limiter: RateLimiter::new(rx, now)?,
            tx_limiter: RateLimiter::new(tx, now)?,
            rx_buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
            rx_len: 0,
            tx_buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
            metrics: Arc::default(),
            clock: rate_limiter::now,
        };
        let ctl = |fd, events, token| {
            net.epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
        };
        ctl(
            net.tap.as_raw_fd(),
            EventSet::IN | EventSet::EDGE_TRIGGERED,
            TAP,
        )?;
        ctl(net.rx_limiter.timer_fd(), EventSet::IN, RX_TIMER)?;
        ctl(net.tx_limiter.timer_fd(), EventSet::IN, TX_TIMER)?;
        Ok(net)
    }

    pub fn iface_id(&self) -> &str {
        &self.iface_id
    }

    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    pub fn metrics(&self) -> &Arc<NetMetrics> {
        &self.metrics
    }

    /// Counts this interface in `m` (its entry in the metrics line).
    pub fn set_metrics(&mut self, m: Arc<NetMetrics>) {
        self.metrics = m;
    }

    /// Applies new limiter configs (PATCH on a running VM, already merged with the current
    /// ones: see [`RateLimiterConfig::patched`]); a throttled queue is woken.
    pub fn update_limiters(
        &mut self,
        rx: Option<&RateLimiterConfig>,
        tx: Option<&RateLimiterConfig>,
    ) {
        let now = (self.clock)();
        if let Some(rx) = rx {
            self.rx_limiter.update(rx, now);
        }
        if let Some(tx) = tx {
            self.tx_limiter.update(tx, now);
        }
    }

    #[cfg(test)]
    pub(super) fn set_clock(&mut self, clock: fn() -> u64) {
        self.clock = clock;
    }

    /// Moves frames from the TAP into the rx queue until the TAP is empty, the guest has
    /// no buffer or the rx limiter says stop.
    fn rx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut used = false;
        loop {
            if self.rx_len == 0 {
                match self.tap.read(&mut self.rx_buf) {
                    Ok(Some(n)) if n >= HDR_LEN => self.rx_len = n,
                    Ok(Some(_)) => {
                        inc(&self.metrics.rx_drops);
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("virtio-net {}: TAP read failed: {e}", self.iface_id);
                        break;
                    }
                }
            }
            let before = q.next_avail();
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let bytes = (self.rx_len - HDR_LEN) as u64;
            let was_blocked = self.rx_limiter.is_blocked();
            if !self.rx_limiter.consume(bytes, (self.clock)()) {
                q.set_next_avail(before);
                if !was_blocked {
                    inc(&self.metrics.rx_throttled);
                }
                break;
            }
            let frame = &mut self.rx_buf[..self.rx_len];
            frame[..HDR_LEN].fill(0);
            frame[10..HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
            let len = match frame::scatter(mem, chain, frame) {
                Ok(n) => {
                    inc(&self.metrics.rx_packets);
                    add(&self.metrics.rx_bytes, bytes);
                    n
                }
                Err(e) => {
                    tracing::debug!("virtio-net {}: rx chain dropped: {e}", self.iface_id);
                    inc(&self.metrics.rx_malformed);
                    inc(&self.metrics.rx_drops);
                    0
                }
            };
            self.rx_len = 0;
            used |= add_used(q, mem, head, len, &self.iface_id);
        }
        used
    }

    /// Sends the tx queue's frames to the TAP until the queue is empty or the tx limiter
    /// says stop.
    fn tx(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut used = false;
        while !self.tx_limiter.is_blocked() {
            let before = q.next_avail();
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            match frame::gather(mem, chain, &mut self.tx_buf) {
                Ok(len) if len >= HDR_LEN => {
                    if !self
                        .tx_limiter
                        .consume((len - HDR_LEN) as u64, (self.clock)())
                    {
                        q.set_next_avail(before);
                        inc(&self.metrics.tx_throttled);
                        break;
                    }
                    self.send(len);
                }
                Ok(_) => self.malformed(FrameError::TooShort),
                Err(e) => self.malformed(e),
            }
            used |= add_used(q, mem, head, 0, &self.iface_id);
        }
        used
    }

    /// Writes the gathered frame of `len` bytes to the TAP, with a zeroed header.
    fn send(&mut self, len: usize) {
        self.tx_buf[..HDR_LEN].fill(0);
        match self.tap.write(&self.tx_buf[..len]) {
            Ok(true) => {
                inc(&self.metrics.tx_packets);
                add(&self.metrics.tx_bytes, (len - HDR_LEN) as u64);
            }
            Ok(false) => inc(&self.metrics.tx_drops),
            Err(e) => {
                tracing::debug!("virtio-net {}: TAP write failed: {e}", self.iface_id);
                inc(&self.metrics.tx_drops);
            }
        }
    }

    fn malformed(&self, e: FrameError) {
        tracing::debug!("virtio-net {}: tx chain dropped: {e}", self.iface_id);
        inc(&self.metrics.tx_malformed);
        inc(&self.metrics.tx_drops);
    }

    /// Runs tx then rx as `want` says.
    fn run(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap, rx: bool, tx: bool) -> bool {
        let [rxq, txq] = queues else {
            return false;
        };
        let mut used = false;
        if tx {
            used |= self.tx(txq, mem);
        }
        if rx {
            used |= self.rx(rxq, mem);
        }
        used
    }
}

fn add_used(q: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32, id: &str) -> bool {
    match q.add_used(mem, head, len) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("virtio-net {id}: cannot add used entry for head {head}: {e}");
            false
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        if self.mac.is_some() {
            1 << VIRTIO_NET_F_MAC
        } else {
            0
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.mac.unwrap_or_default(), offset, data);
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        match index {
            RXQ => self.run(queues, mem, true, false),
            TXQ => self.run(queues, mem, false, true),
            _ => false,
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn process_backend(&mut self, queues: Option<&mut [Queue]>, mem: &GuestMemoryMmap) -> bool {
        let mut events = [EpollEvent::default(); 4];
        let (mut rx, mut tx) = (false, false);
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-net {}: epoll_wait: {e}", self.iface_id);
                    0
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TAP => rx = true,
                    RX_TIMER => {
                        self.rx_limiter.on_timer();
                        rx = true;
                    }
                    TX_TIMER => {
                        self.tx_limiter.on_timer();
                        tx = true;
                    }
                    _ => {}
                }
            }
            if n < events.len() {
                break;
            }
        }
        match queues {
            Some(q) => self.run(q, mem, rx, tx),
            None => false,
        }
    }

    fn reset(&mut self) {
        self.rx_len = 0;
    }

    fn save_state(&self) -> VirtioDeviceState {
        VirtioDeviceState::Net(self.save())
    }

    fn restore_state(&mut self, state: &VirtioDeviceState) -> Result<(), DeviceStateError> {
        match state {
            VirtioDeviceState::Net(s) => Ok(self.restore(s)?),
            other => Err(DeviceStateError::kind(other, super::KIND)),
        }
    }

    fn after_restore(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        self.run(queues, mem, true, true)
    }

    fn net(&mut self) -> Option<&mut Net> {
        Some(self)
    }
}

impl Persist for Net {
    type State = NetState;
    type Error = NetStateError;

    fn save(&self) -> NetState {
        NetState {
            iface_id: self.iface_id.clone(),
            mac: self.mac,
            rx_limiter: self.rx_limiter.save(),
            tx_limiter: self.tx_limiter.save(),
        }
    }

    /// Refuses another interface or MAC (the guest has the old MAC cached); applies the
    /// limiters' fill levels (clamped by [`RateLimiter::restore`]).
    fn restore(&mut self, saved: &NetState) -> Result<(), NetStateError> {
        if saved.iface_id != self.iface_id || saved.mac != self.mac {
            return Err(NetStateError {
                iface_id: self.iface_id.clone(),
                saved_id: saved.iface_id.clone(),
                saved_mac: mac_text(saved.mac),
                this_mac: mac_text(self.mac),
            });
        }
        let now = (self.clock)();
        self.rx_limiter.restore(&saved.rx_limiter, now);
        self.tx_limiter.restore(&saved.tx_limiter, now);
        Ok(())
    }
}
