//! VM-wide KVM state saved in a snapshot: the in-kernel irqchip (both PICs and the
//! IOAPIC), the PIT and the kvmclock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

/// Why the VM's state could not be captured or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmStateError {
    #[error("KVM {op}: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("irqchip {id} is saved as chip {saved}; the snapshot is damaged")]
    ChipId { id: u32, saved: u32 },
}

fn err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmStateError {
    move |source| VmStateError::Kvm { op, source }
}

fn get_chip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, VmStateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip).map_err(err("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

impl VmState {
    /// Captures the VM's state; every vCPU must be paused.
    pub fn capture(vm: &VmFd) -> Result<Self, VmStateError> {
        Ok(Self {
            pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: vm.get_pit2().map_err(err("KVM_GET_PIT2"))?,
            clock: vm.get_clock().map_err(err("KVM_GET_CLOCK"))?,
        })
    }

    /// Loads the state into a new VM (irqchip and PIT created, no vCPU running yet).
    /// The kvmclock continues from the saved value, so the guest's monotonic clock does
    /// not jump; the agent steps the wall clock after the restore.
    pub fn restore(&self, vm: &VmFd) -> Result<(), VmStateError> {
        let chips = [
            (&self.pic_master, KVM_IRQCHIP_PIC_MASTER),
            (&self.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
            (&self.ioapic, KVM_IRQCHIP_IOAPIC),
        ];
        for (chip, id) in chips {
            if chip.chip_id != id {
                return Err(VmStateError::ChipId {
                    id,
                    saved: chip.chip_id,
                });
            }
            vm.set_irqchip(chip).map_err(err("KVM_SET_IRQCHIP"))?;
        }
        vm.set_pit2(&self.pit).map_err(err("KVM_SET_PIT2"))?;
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            // No KVM_CLOCK_REALTIME: KVM would add the time since the snapshot.
            flags: 0,
            ..Default::default()
        };
        vm.set_clock(&clock).map_err(err("KVM_SET_CLOCK"))?;
        Ok(())
    }
}
