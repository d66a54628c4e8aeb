//! The `firecracker` backend: the same Firecracker-API driver as `kiln`, pointed at a
//! `firecracker` binary (`$KILN_FIRECRACKER`, else `firecracker` on `PATH`). It uses only
//! Firecracker's own flags and API (metrics through `PUT /metrics`, readiness by agent
//! ping), so it is tested against `kiln-vmm`, which speaks the same API.
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
        fc_launch::launch(&f, dir, id, spec, spawned)
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
