//! kiln-vmm: the KVM virtual machine monitor.
