//! Snapshot save/restore of the virtio-mmio transport.
//!
//! [`TransportState`] is the register file, the virtqueues and the device's own part
//! ([`VirtioDevice::save_device_state`](super::VirtioDevice::save_device_state)). A restore goes onto a freshly built transport
//! for the same device and trusts nothing in the state: it comes from a file on disk and
//! describes a hostile guest's driver. Every field is checked against what the transport
//! itself could have reached (status bits in order, features a subset of what is offered,
//! queues valid per `virtio-queue` and, for a running device, inside guest memory) before
//! anything is applied; on error the transport is left reset, as after a driver reset.
//!
//! A running device is activated again without a new DRIVER_OK: the guest driver believes
//! it still runs. [`MmioTransport::after_restore`] then lets the device tell the guest
//! what did not survive (vsock's transport reset) and serves the queues once, since a
//! notification may have been pending when the snapshot was taken.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::{
    MmioTransport, INT_CONFIG, INT_USED_RING, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};

/// Every bit the Status register can hold.
const STATUS_BITS: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_DRIVER_OK
    | VIRTIO_CONFIG_S_NEEDS_RESET
    | VIRTIO_CONFIG_S_FAILED;

/// One virtqueue: a serializable mirror of `virtio_queue::QueueState`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        QueueSnapshot {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> Self {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// Saved state of one virtio-mmio transport and its device.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransportState {
    /// `VIRTIO_ID_*` of the device; a restore onto another device type is refused.
    pub device_type: u32,
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    /// The device was running (DRIVER_OK accepted).
    pub activated: bool,
    pub interrupt_status: u32,
    pub queue_config_error: Vec<bool>,
    pub queues: Vec<QueueSnapshot>,
    /// Device-specific part (`VirtioDevice::save_device_state`).
    pub device: serde_json::Value,
}

impl MmioTransport {
    /// The transport's state, for a snapshot. Call with the VM paused.
    pub fn save_state(&self) -> TransportState {
        TransportState {
            device_type: self.device.device_type(),
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            activated: self.activated,
            interrupt_status: self.interrupt.status(),
            queue_config_error: self.queue_config_error.clone(),
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
            device: self.device.save_device_state(),
        }
    }

    /// Applies a saved state to a freshly built transport for the same device.
    ///
    /// Validates everything (device type, queue count, each queue via `virtio-queue`'s own
    /// checks, every queue valid in guest memory if the device ran). If the device ran,
    /// acks the saved driver features, activates the device without a new DRIVER_OK, and
    /// then restores the device-specific part. InterruptStatus is restored but the irqfd
    /// is only kicked by [`MmioTransport::after_restore`]. On error the transport is left
    /// reset (not activated) and the message says what was wrong.
    pub fn restore_state(&mut self, state: &TransportState) -> Result<(), String> {
        self.reset();
        let result = self.try_restore(state);
        if result.is_err() {
            self.reset();
        }
        result.map_err(|e| format!("virtio-mmio restore: {e}"))
    }

    /// Called once after a restore, when the VM is about to run again: lets the device do
    /// its post-restore work (vsock tells the guest its connections are gone) and processes
    /// every queue once, since a notification may have been pending at the snapshot. Kicks
    /// the irqfd if any interrupt is pending, so the guest sees it.
    pub fn after_restore(&mut self) {
        if self.activated {
            let mut used = self.device.after_restore(&mut self.queues, &self.mem);
            for i in 0..self.queues.len() {
                used |= self.device.process_queue(i, &mut self.queues, &self.mem);
            }
            if used {
                self.interrupt.trigger(INT_USED_RING);
                return;
            }
        }
        if self.interrupt.status() != 0 {
            self.interrupt.kick();
        }
    }

    fn try_restore(&mut self, s: &TransportState) -> Result<(), String> {
        let queues = self.check_state(s)?;
        self.queues = queues;
        self.queue_config_error.clone_from(&s.queue_config_error);
        self.status = s.status;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.queue_sel = s.queue_sel;
        self.interrupt.set_status(s.interrupt_status);
        if s.status & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            self.device.ack_features(s.driver_features);
        }
        if s.activated {
            self.device
                .activate(self.interrupt.clone())
                .map_err(|e| e.to_string())?;
            self.activated = true;
        }
        self.device.restore_device_state(&s.device)
    }

    /// Checks `s` against this transport and its device; returns the restored queues.
    fn check_state(&self, s: &TransportState) -> Result<Vec<Queue>, String> {
        let ty = self.device.device_type();
        if s.device_type != ty {
            return Err(format!(
                "saved device type {} does not match device type {ty}",
                s.device_type
            ));
        }
        check_status(s.status, s.activated)?;
        if s.status & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.offered_features();
            let f = s.driver_features;
            if f & !offered != 0 || f & VIRTIO_F_VERSION_1 == 0 {
                return Err(format!(
                    "accepted features {f:#x} are not a subset of the offered {offered:#x} \
                     with VERSION_1"
                ));
            }
        }
        if s.interrupt_status & !(INT_USED_RING | INT_CONFIG) != 0 {
            return Err(format!("bad interrupt status {:#x}", s.interrupt_status));
        }
        let max_sizes = self.device.queue_max_sizes();
        if s.queues.len() != max_sizes.len() || s.queue_config_error.len() != max_sizes.len() {
            return Err(format!(
                "{} queues ({} config error flags) saved, the device has {}",
                s.queues.len(),
                s.queue_config_error.len(),
                max_sizes.len()
            ));
        }
        let mut queues = Vec::with_capacity(max_sizes.len());
        for (i, (qs, &max)) in s.queues.iter().zip(max_sizes).enumerate() {
            if qs.max_size != max {
                return Err(format!(
                    "queue {i}: saved max size {} but the device's is {max}",
                    qs.max_size
                ));
            }
            // VIRTIO_RING_F_EVENT_IDX is never offered.
            if qs.event_idx_enabled {
                return Err(format!("queue {i}: EVENT_IDX was never offered"));
            }
            let q =
                Queue::try_from(QueueState::from(*qs)).map_err(|e| format!("queue {i}: {e}"))?;
            if s.activated && (s.queue_config_error[i] || !q.is_valid(&self.mem)) {
                return Err(format!(
                    "queue {i} of a running device is not ready or not in guest memory"
                ));
            }
            queues.push(q);
        }
        Ok(queues)
    }
}

/// The Status register holds only known bits, set in handshake order, and `activated`
/// agrees with it (DRIVER_OK without NEEDS_RESET; NEEDS_RESET only after DRIVER_OK).
fn check_status(status: u32, activated: bool) -> Result<(), String> {
    let has = |bit: u32| status & bit != 0;
    let in_order = status & !STATUS_BITS == 0
        && (!has(VIRTIO_CONFIG_S_DRIVER) || has(VIRTIO_CONFIG_S_ACKNOWLEDGE))
        && (!has(VIRTIO_CONFIG_S_FEATURES_OK) || has(VIRTIO_CONFIG_S_DRIVER))
        && (!has(VIRTIO_CONFIG_S_DRIVER_OK) || has(VIRTIO_CONFIG_S_FEATURES_OK))
        && (!has(VIRTIO_CONFIG_S_NEEDS_RESET) || has(VIRTIO_CONFIG_S_DRIVER_OK));
    if !in_order {
        return Err(format!("invalid status {status:#x}"));
    }
    let running = has(VIRTIO_CONFIG_S_DRIVER_OK) && !has(VIRTIO_CONFIG_S_NEEDS_RESET);
    if running != activated {
        return Err(format!(
            "status {status:#x} contradicts activated = {activated}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
