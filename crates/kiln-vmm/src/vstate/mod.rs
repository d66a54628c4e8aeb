//! KVM state: the VM (memory slots, irqchip, PIT) and its vCPUs.

pub mod memory;
pub mod vcpu;
pub mod vm;
