//! Emulated devices: legacy PC pieces on the I/O bus and virtio-mmio devices.

pub mod bus;
pub mod console_log;
pub mod control;
pub mod i8042;
pub mod irq;
pub mod persist;
pub mod rate_limiter;
pub mod serial;
pub mod virtio;
