//! Interrupt lines backed by KVM irqfds.

use vmm_sys_util::eventfd::EventFd;

/// An edge on a GSI: writing the eventfd makes KVM inject the interrupt without a
/// trip through the VMM.
pub struct IrqLine(pub EventFd);

impl IrqLine {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self(EventFd::new(libc::EFD_NONBLOCK)?))
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
