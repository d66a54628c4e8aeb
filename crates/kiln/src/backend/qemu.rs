//! The `qemu` backend (being built): `qemu-system-x86_64 -M microvm` over QMP.

use std::process::Child;

use super::{unsupported, Capabilities, GuestChannel, VmBackend, VmRef};
use crate::error::Result;
use crate::sandbox::state::Dir;
use crate::vmm::GuestSpec;

pub struct Qemu;

impl VmBackend for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause_resume: true,
            snapshots: false,
            vsock: false,
            tap_networking: false,
            fork: false,
        }
    }
    fn start(&self, id: &str, _dir: &Dir, _spec: &GuestSpec) -> Result<Child> {
        Err(unsupported("qemu", "start", id))
    }
    fn request_poweroff(&self, vm: &VmRef) -> Result<()> {
        Err(unsupported("qemu", "power-off", vm.id))
    }
    fn pause(&self, vm: &VmRef) -> Result<()> {
        Err(unsupported("qemu", "pause", vm.id))
    }
    fn resume(&self, vm: &VmRef) -> Result<()> {
        Err(unsupported("qemu", "resume", vm.id))
    }
    fn guest_channel_info(&self, vm: &VmRef) -> GuestChannel {
        GuestChannel::Serial {
            uds: vm.dir.vsock(),
            port_name: "kiln.agent".into(),
            relay_pid: None,
        }
    }
}
