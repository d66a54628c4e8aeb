//! KVM state: the VM (memory slots, irqchip, PIT) and its vCPUs.

pub mod control;
pub mod memory;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
pub mod vm_state;
