//! virtio-mmio transport, version 2 ("modern"), per virtio 1.1 §4.2.2.
//!
//! Registers below 0x100 are 32 bits wide and must be accessed with aligned 4-byte
//! accesses; anything else is ignored (reads return 0). Device config space starts at
//! 0x100 and accepts any access size.
//!
//! Status handling: the driver may only add bits, in the order ACKNOWLEDGE → DRIVER →
//! FEATURES_OK → DRIVER_OK; out-of-order writes are ignored. FEATURES_OK is refused
//! (not latched) if the driver accepted features we did not offer or dropped VERSION_1.
//! At DRIVER_OK every queue must be ready and valid in guest memory, otherwise the device
//! stays inactive and DEVICE_NEEDS_RESET is raised with a config interrupt. Writing 0
//! resets the device.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Interrupt, VirtioDevice, INT_CONFIG, INT_USED_RING, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;

// Snapshot save/restore of the transport (an `impl MmioTransport` kept apart).
mod state;
pub use state::{TransportState, TransportStateError};

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0;
const CONFIG_SPACE_OFFSET: u64 = 0x100;

// Register offsets (virtio 1.1 §4.2.2).
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = super::NOTIFY_REG_OFFSET;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;

/// Which ring address register pair a write targets.
#[derive(Clone, Copy)]
enum Ring {
    Desc,
    Driver,
    Device,
}

/// A virtio device behind a virtio-mmio (version 2) register window.
pub struct MmioTransport {
    pub(super) mem: GuestMemoryMmap,
    pub(super) device: Box<dyn VirtioDevice>,
    pub(super) queues: Vec<Queue>,
    /// Per queue: the driver wrote an invalid size or misaligned ring address.
    queue_config_error: Vec<bool>,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) interrupt: Interrupt,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    pub(super) activated: bool,
}

impl MmioTransport {
    /// Wraps `device`; creates one non-blocking eventfd per queue and the irq eventfd.
    pub fn new(mem: GuestMemoryMmap, device: Box<dyn VirtioDevice>) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut queue_evts = Vec::new();
        for &max in device.queue_max_sizes() {
            let q = Queue::new(max).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("virtio queue max size {max}: {e}"),
                )
            })?;
            queues.push(q);
            queue_evts.push(EventFd::new(EFD_NONBLOCK)?);
        }
        Ok(MmioTransport {
            mem,
            device,
            queue_config_error: vec![false; queues.len()],
            queues,
            queue_evts,
            interrupt: Interrupt::new()?,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            activated: false,
        })
    }

    /// The device behind the transport (e.g. to change a running device's rate limiter).
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// One eventfd per queue, in queue order (register as ioeventfds, datamatch = index).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The interrupt eventfd (register as an irqfd on the device's GSI).
    pub fn irq_evt(&self) -> &EventFd {
        self.interrupt.eventfd()
    }

    /// The device's interrupt line (status register + irqfd).
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// True once the driver set DRIVER_OK and the device started.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Current device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Processes queue `index` if the device is running; raises the used-ring interrupt if
    /// the device added used entries. Out-of-range indexes are ignored.
    pub fn process_queue(&mut self, index: usize) {
        if !self.activated || index >= self.queues.len() {
            return;
        }
        if self
            .device
            .process_queue(index, &mut self.queues, &self.mem)
        {
            self.interrupt.trigger(INT_USED_RING);
        }
    }

    /// The device's backend fd is readable: lets the device serve it (with the queues once
    /// it runs) and raises the used-ring interrupt if it used buffers.
    pub fn process_backend(&mut self) {
        let queues = if self.activated {
            Some(&mut self.queues[..])
        } else {
            None
        };
        if self.device.process_backend(queues, &self.mem) {
            self.interrupt.trigger(INT_USED_RING);
        }
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<(&mut Queue, &mut bool)> {
        let i = usize::try_from(self.queue_sel).ok()?;
        // Queue configuration is frozen once the driver has set DRIVER_OK.
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            return None;
        }
        Some((self.queues.get_mut(i)?, self.queue_config_error.get_mut(i)?))
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let queue = usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get(i));
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES => self.write_driver_features(v),
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM => {
                if let Some((q, err)) = self.selected_queue() {
                    let size = u16::try_from(v).unwrap_or(0);
                    *err |= q.try_set_size(size).is_err();
                }
            }
            REG_QUEUE_READY => {
                if let Some((q, _)) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            REG_QUEUE_NOTIFY => self.process_queue(v as usize),
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.write_status(v),
            REG_QUEUE_DESC_LOW => self.write_ring_addr(Ring::Desc, Some(v), None),
            REG_QUEUE_DESC_HIGH => self.write_ring_addr(Ring::Desc, None, Some(v)),
            REG_QUEUE_DRIVER_LOW => self.write_ring_addr(Ring::Driver, Some(v), None),
            REG_QUEUE_DRIVER_HIGH => self.write_ring_addr(Ring::Driver, None, Some(v)),
            REG_QUEUE_DEVICE_LOW => self.write_ring_addr(Ring::Device, Some(v), None),
            REG_QUEUE_DEVICE_HIGH => self.write_ring_addr(Ring::Device, None, Some(v)),
            _ => tracing::debug!("virtio-mmio: ignored write {v:#x} to register {offset:#x}"),
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        let negotiating = self.status & VIRTIO_CONFIG_S_DRIVER != 0
            && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        if !negotiating {
            tracing::warn!("virtio-mmio: DriverFeatures written outside negotiation");
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
            _ => {}
        }
    }

    fn write_ring_addr(&mut self, ring: Ring, low: Option<u32>, high: Option<u32>) {
        let Some((q, err)) = self.selected_queue() else {
            return;
        };
        let old = match ring {
            Ring::Desc => q.desc_table(),
            Ring::Driver => q.avail_ring(),
            Ring::Device => q.used_ring(),
        };
        let low = low.map_or(old & 0xffff_ffff, u64::from);
        let high = high.map_or(old >> 32, u64::from);
        let addr = GuestAddress((high << 32) | low);
        let res = match ring {
            Ring::Desc => q.try_set_desc_table_address(addr),
            Ring::Driver => q.try_set_avail_ring_address(addr),
            Ring::Device => q.try_set_used_ring_address(addr),
        };
        if let Err(e) = res {
            tracing::warn!("virtio-mmio: bad ring address {:#x}: {e}", addr.0);
            *err = true;
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // The driver cannot set DEVICE_NEEDS_RESET; it is ours.
        let v = v & 0xff & !VIRTIO_CONFIG_S_NEEDS_RESET;
        let old = self.status & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if v & VIRTIO_CONFIG_S_FAILED != 0 {
            tracing::warn!("virtio-mmio: driver gave up on the device (FAILED)");
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return;
        }
        if v & old != old {
            tracing::warn!("virtio-mmio: driver cleared status bits ({old:#x} -> {v:#x})");
            return;
        }
        let has = |bit: u32| v & bit != 0;
        let in_order = (!has(VIRTIO_CONFIG_S_DRIVER) || has(VIRTIO_CONFIG_S_ACKNOWLEDGE))
            && (!has(VIRTIO_CONFIG_S_FEATURES_OK) || has(VIRTIO_CONFIG_S_DRIVER))
            && (!has(VIRTIO_CONFIG_S_DRIVER_OK) || has(VIRTIO_CONFIG_S_FEATURES_OK));
        if !in_order {
            tracing::warn!("virtio-mmio: out-of-order status write {v:#x}");
            return;
        }
        let mut v = v;
        let new = v & !old;
        if new & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.offered_features();
            let f = self.driver_features;
            if f & !offered != 0 || f & VIRTIO_F_VERSION_1 == 0 {
                tracing::warn!("virtio-mmio: refusing features {f:#x} (offered {offered:#x})");
                // Not latching FEATURES_OK tells the driver the subset is unusable.
                v &= !(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
            } else {
                self.device.ack_features(f);
            }
        }
        self.status = v | (self.status & VIRTIO_CONFIG_S_NEEDS_RESET);
        if new & VIRTIO_CONFIG_S_DRIVER_OK != 0 && v & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let bad = self
            .queues
            .iter()
            .zip(&self.queue_config_error)
            .position(|(q, &err)| err || !q.is_valid(&self.mem));
        let result = match bad {
            Some(i) => Err(format!("queue {i} is not ready or not valid")),
            None => self
                .device
                .activate(self.interrupt.clone())
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => self.activated = true,
            Err(e) => {
                tracing::error!("virtio-mmio: cannot activate device: {e}");
                self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                self.interrupt.trigger(INT_CONFIG);
            }
        }
    }

    fn reset(&mut self) {
        if self.activated || self.status != 0 {
            self.device.reset();
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_config_error.fill(false);
        self.interrupt.clear();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.activated = false;
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        data.fill(0);
        if data.len() != 4 || !offset.is_multiple_of(4) {
            tracing::debug!(
                "virtio-mmio: ignored {}-byte read at {offset:#x}",
                data.len()
            );
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::debug!(
                "virtio-mmio: ignored {}-byte write at {offset:#x}",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests;
