//! Emulated devices: legacy PC pieces on the I/O bus and virtio-mmio devices.

pub mod bus;
pub mod virtio;
