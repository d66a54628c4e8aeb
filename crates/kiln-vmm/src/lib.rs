//! kiln-vmm: the KVM virtual machine monitor.

pub mod devices;
