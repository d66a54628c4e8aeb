//! The `firecracker` backend: the same Firecracker-API driver as `kiln`, pointed at a
//! `firecracker` binary (`$KILN_FIRECRACKER`, else `firecracker` on `PATH`). It uses only
//! Firecracker's own flags and API (metrics through `PUT /metrics`, readiness by agent
//! ping), so it is tested against `kiln-vmm`, which speaks the same API.
//!
//! Stop: Firecracker ignores kiln-vmm's power-off port (0x440) and the guest has no
//! ACPI, so a powered-off guest would only halt and the stop would wait for SIGTERM.
//! The guest is told to power off by rebooting (`kiln.poweroff=reboot`, the agent's
//! switch, as for QEMU) with `reboot=k`: the reset through the i8042 is what Firecracker
//! exits on. Its own log goes to `vmm.log` (`--log-path`, added by `fc_launch`), the
//! console to `console.log`.
//!
//! Snapshots are not offered: a restored sandbox needs its own vsock socket and disk
//! paths, which only kiln-vmm's load overrides provide.

use std::path::PathBuf;
use std::process::Child;

use super::fc_launch::{self, Flavor};
use super::kiln::{ctrl_alt_del, set_paused, vsock};
use super::{Capabilities, GuestChannel, OnSpawn, VmBackend, VmRef};
use crate::error::{Error, Result};
use crate::state_dir::Dir;
use crate::vmm::GuestSpec;

pub struct Firecracker;

/// `$KILN_FIRECRACKER`, else the first `firecracker` on `PATH`.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_FIRECRACKER") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("firecracker"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Unsupported(
                "backend firecracker: no `firecracker` binary on PATH; install one or set \
                 KILN_FIRECRACKER to its path"
                    .into(),
            )
        })
}

/// kiln's boot arguments for Firecracker: `reboot=k` (the i8042 reset Firecracker exits
/// on) and `kiln.poweroff=reboot` (power off by rebooting), replacing any given.
pub fn kernel_args(boot_args: Option<&str>) -> String {
    crate::vmm::poweroff_by_reboot(boot_args, "k")
}

impl VmBackend for Firecracker {
    fn name(&self) -> &'static str {
        "firecracker"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause_resume: true,
            snapshots: false,
            vsock: true,
            tap_networking: true,
            fork: false,
        }
    }
    fn start(&self, id: &str, dir: &Dir, spec: &GuestSpec, spawned: OnSpawn) -> Result<Child> {
        let f = Flavor {
            bin: binary()?,
            kiln: false,
        };
        let mut spec = spec.clone();
        spec.boot_args = Some(kernel_args(spec.boot_args.as_deref()));
        fc_launch::launch(&f, dir, id, &spec, spawned)
    }
    fn request_poweroff(&self, vm: &VmRef) -> Result<()> {
        ctrl_alt_del(vm)
    }
    fn pause(&self, vm: &VmRef) -> Result<()> {
        set_paused(vm, true)
    }
    fn resume(&self, vm: &VmRef) -> Result<()> {
        set_paused(vm, false)
    }
    fn guest_channel_info(&self, vm: &VmRef) -> GuestChannel {
        vsock(vm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_off_is_a_keyboard_controller_reboot() {
        let a = kernel_args(Some(
            "console=ttyS0 reboot=t panic=-1 kiln.poweroff=x kiln.hostname=h",
        ));
        assert_eq!(
            a,
            "console=ttyS0 panic=-1 kiln.hostname=h reboot=k kiln.poweroff=reboot"
        );
        let d = kernel_args(None);
        assert!(d.starts_with("console=ttyS0"), "{d}");
        assert!(d.ends_with(" reboot=k kiln.poweroff=reboot"), "{d}");
        assert_eq!(d.matches("reboot=").count(), 1, "{d}");
    }
}
