//! The assembled machine: KVM handles, guest memory, the vCPU controls and the devices
//! of a VM that runs (or waits parked). The builder makes it; pause, resume and
//! snapshots work on it.

use std::sync::{Arc, Mutex};

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use super::control::VcpuControl;
use super::uffd::UffdMemory;
use crate::devices::i8042::I8042;
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::MmioTransport;

/// The KVM handles, guest memory and devices of a running VM: what pause, resume and
/// snapshots work on. Fields drop in order, so the userfaultfd server (last) outlives
/// every user of the guest memory it serves.
pub struct Machine {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub mem: GuestMemoryMmap,
    pub vcpus: Arc<VcpuControl>,
    /// The virtio-mmio transports in attach order (drives, rng, vsock).
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    /// The userfaultfd memory server of a VM restored with the Uffd backend.
    pub uffd: Option<UffdMemory>,
}
