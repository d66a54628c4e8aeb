//! Snapshot save/restore of the virtio-mmio transport.
//!
//! [`TransportState`] is the register file, the virtqueues and the device's own part
//! ([`VirtioDeviceState`], from [`VirtioDevice::save_state`](super::VirtioDevice::save_state)).
//! A restore goes onto a freshly built transport for the same device and trusts nothing in
//! the state: it comes from a file on disk and describes a hostile guest's driver. Every field is checked against what the transport
//! itself could have reached (status bits in order, features a subset of what is offered,
//! queues valid per `virtio-queue` and, for a running device, inside guest memory) before
//! anything is applied; on error the transport is left reset, as after a driver reset.
//!
//! A running device is activated again without a new DRIVER_OK: the guest driver believes
//! it still runs. [`MmioTransport::after_restore`] then lets the device tell the guest
//! what did not survive (vsock's transport reset) and serves the queues once, since a
//! notification may have been pending when the snapshot was taken.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use virtio_queue::{Queue, QueueState, QueueT};

use super::{
    MmioTransport, INT_CONFIG, INT_USED_RING, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK,
    VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use crate::devices::persist::Persist;
use crate::devices::virtio::{kind_of, ActivateError, DeviceStateError, VirtioDeviceState};

/// Every bit the Status register can hold.
const STATUS_BITS: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_DRIVER_OK
    | VIRTIO_CONFIG_S_NEEDS_RESET
    | VIRTIO_CONFIG_S_FAILED;

/// One virtqueue: virtio-queue's own `QueueState`, as it is stored in `state.json`
/// (serde's remote derive: the field list is checked against virtio-queue's at compile
/// time).
#[derive(Serialize, Deserialize)]
#[serde(remote = "QueueState", deny_unknown_fields)]
struct QueueStateDef {
    max_size: u16,
    next_avail: u16,
    next_used: u16,
    event_idx_enabled: bool,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

/// `#[serde(with)]` for a list of [`QueueState`]s.
mod queue_list {
    use super::*;

    struct Saved<'a>(&'a QueueState);

    impl Serialize for Saved<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            QueueStateDef::serialize(self.0, s)
        }
    }

    #[derive(Deserialize)]
    struct Loaded(#[serde(with = "QueueStateDef")] QueueState);

    pub fn serialize<S: Serializer>(queues: &[QueueState], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(queues.iter().map(Saved))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<QueueState>, D::Error> {
        let queues = Vec::<Loaded>::deserialize(d)?;
        Ok(queues.into_iter().map(|q| q.0).collect())
    }
}

/// Saved state of one virtio-mmio transport and its device.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransportState {
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    /// The device was running (DRIVER_OK accepted).
    pub activated: bool,
    pub interrupt_status: u32,
    pub queue_config_error: Vec<bool>,
    #[serde(with = "queue_list")]
    pub queues: Vec<QueueState>,
    /// Device-specific part, tagged with the device's kind; a restore onto a device of
    /// another kind is refused.
    pub device: VirtioDeviceState,
}

/// Why a saved [`TransportState`] was refused. Every message starts with
/// "virtio-mmio restore".
#[derive(Debug, thiserror::Error)]
pub enum TransportStateError {
    #[error("virtio-mmio restore: invalid status {0:#x}")]
    Status(u32),
    #[error("virtio-mmio restore: status {status:#x} contradicts activated = {activated}")]
    Activated { status: u32, activated: bool },
    #[error(
        "virtio-mmio restore: accepted features {accepted:#x} are not a subset of the offered \
         {offered:#x} with VERSION_1"
    )]
    Features { accepted: u64, offered: u64 },
    #[error("virtio-mmio restore: bad interrupt status {0:#x}")]
    InterruptStatus(u32),
    #[error(
        "virtio-mmio restore: {queues} queues ({flags} config error flags) saved, the device \
         has {device}"
    )]
    QueueCount {
        queues: usize,
        flags: usize,
        device: usize,
    },
    #[error(
        "virtio-mmio restore: queue {index}: saved max size {saved} but the device's is {device}"
    )]
    QueueMaxSize {
        index: usize,
        saved: u16,
        device: u16,
    },
    #[error("virtio-mmio restore: queue {0}: EVENT_IDX was never offered")]
    EventIdx(usize),
    #[error("virtio-mmio restore: queue {index}: {source}")]
    Queue {
        index: usize,
        source: virtio_queue::Error,
    },
    #[error(
        "virtio-mmio restore: queue {0} of a running device is not ready or not in guest memory"
    )]
    QueueNotReady(usize),
    #[error("virtio-mmio restore: {0}")]
    Activate(ActivateError),
    #[error("virtio-mmio restore: {0}")]
    Device(DeviceStateError),
}

impl Persist for MmioTransport {
    type State = TransportState;
    type Error = TransportStateError;

    fn save(&self) -> TransportState {
        TransportState {
            status: self.status,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            activated: self.activated,
            interrupt_status: self.interrupt.status(),
            queue_config_error: self.queue_config_error.clone(),
            queues: self.queues.iter().map(|q| q.state()).collect(),
            device: self.device.save_state(),
        }
    }

    /// Applies a saved state to a freshly built transport for the same device.
    ///
    /// Validates everything (device kind, queue count, each queue via `virtio-queue`'s own
    /// checks, every queue valid in guest memory if the device ran). If the device ran,
    /// acks the saved driver features, activates the device without a new DRIVER_OK, and
    /// then restores the device-specific part. InterruptStatus is restored but the irqfd
    /// is only kicked by [`MmioTransport::after_restore`]. On error the transport is left
    /// reset (not activated) and the error says what was wrong.
    fn restore(&mut self, state: &TransportState) -> Result<(), TransportStateError> {
        self.reset();
        let result = self.try_restore(state);
        if result.is_err() {
            self.reset();
        }
        result
    }
}

impl MmioTransport {
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

    fn try_restore(&mut self, s: &TransportState) -> Result<(), TransportStateError> {
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
                .map_err(TransportStateError::Activate)?;
            self.activated = true;
        }
        self.device
            .restore_state(&s.device)
            .map_err(TransportStateError::Device)
    }

    /// Checks `s` against this transport and its device; returns the restored queues.
    fn check_state(&self, s: &TransportState) -> Result<Vec<Queue>, TransportStateError> {
        // A state of another device kind is refused before anything else is looked at
        // (the device itself refuses it too, in `restore_state`).
        let ty = self.device.device_type();
        if s.device.device_type() != ty {
            return Err(TransportStateError::Device(DeviceStateError::kind(
                &s.device,
                kind_of(ty),
            )));
        }
        check_status(s.status, s.activated)?;
        if s.status & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.offered_features();
            let f = s.driver_features;
            if f & !offered != 0 || f & VIRTIO_F_VERSION_1 == 0 {
                return Err(TransportStateError::Features {
                    accepted: f,
                    offered,
                });
            }
        }
        if s.interrupt_status & !(INT_USED_RING | INT_CONFIG) != 0 {
            return Err(TransportStateError::InterruptStatus(s.interrupt_status));
        }
        let max_sizes = self.device.queue_max_sizes();
        if s.queues.len() != max_sizes.len() || s.queue_config_error.len() != max_sizes.len() {
            return Err(TransportStateError::QueueCount {
                queues: s.queues.len(),
                flags: s.queue_config_error.len(),
                device: max_sizes.len(),
            });
        }
        let mut queues = Vec::with_capacity(max_sizes.len());
        for (i, (qs, &max)) in s.queues.iter().zip(max_sizes).enumerate() {
            if qs.max_size != max {
                return Err(TransportStateError::QueueMaxSize {
                    index: i,
                    saved: qs.max_size,
                    device: max,
                });
            }
            // VIRTIO_RING_F_EVENT_IDX is never offered.
            if qs.event_idx_enabled {
                return Err(TransportStateError::EventIdx(i));
            }
            let q = Queue::try_from(*qs)
                .map_err(|source| TransportStateError::Queue { index: i, source })?;
            if s.activated && (s.queue_config_error[i] || !q.is_valid(&self.mem)) {
                return Err(TransportStateError::QueueNotReady(i));
            }
            queues.push(q);
        }
        Ok(queues)
    }
}

/// The Status register holds only known bits, set in handshake order, and `activated`
/// agrees with it (DRIVER_OK without NEEDS_RESET; NEEDS_RESET only after DRIVER_OK).
fn check_status(status: u32, activated: bool) -> Result<(), TransportStateError> {
    let has = |bit: u32| status & bit != 0;
    let in_order = status & !STATUS_BITS == 0
        && (!has(VIRTIO_CONFIG_S_DRIVER) || has(VIRTIO_CONFIG_S_ACKNOWLEDGE))
        && (!has(VIRTIO_CONFIG_S_FEATURES_OK) || has(VIRTIO_CONFIG_S_DRIVER))
        && (!has(VIRTIO_CONFIG_S_DRIVER_OK) || has(VIRTIO_CONFIG_S_FEATURES_OK))
        && (!has(VIRTIO_CONFIG_S_NEEDS_RESET) || has(VIRTIO_CONFIG_S_DRIVER_OK));
    if !in_order {
        return Err(TransportStateError::Status(status));
    }
    let running = has(VIRTIO_CONFIG_S_DRIVER_OK) && !has(VIRTIO_CONFIG_S_NEEDS_RESET);
    if running != activated {
        return Err(TransportStateError::Activated { status, activated });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
