//! kiln-vmm: the KVM virtual machine monitor.

pub mod api;
pub mod arch;
pub mod boot_error;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod kernel;
pub mod metrics;
pub mod snapshot;
pub mod vmm;
pub mod vstate;
