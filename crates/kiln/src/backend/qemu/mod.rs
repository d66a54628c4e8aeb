//! The `qemu` backend: Debian's `qemu-system-x86_64 -M microvm`, driven over QMP.
//!
//! | module | owns |
//! | --- | --- |
//! | `cmdline` | QEMU's arguments and the guest command line it needs |
//! | `accel` | KVM or TCG (`KILN_QEMU_ACCEL`) |
//! | `launch` | start: QEMU, QMP up, relay, agent ping; cleanup on failure |
//! | `qmp` | the QMP client (pause/resume) |
//! | `relay`, `relay_proc` | the agent channel: the mux relay and its `kiln-relay` process |
//! | `files` | the sockets and logs in the sandbox folder |
//!
//! The host has no vhost-vsock, so the agent is reached over a virtio-console port
//! named [`PORT_NAME`], multiplexed ([`kiln_proto::mux`]); `kiln-relay` serves the
//! usual hybrid-vsock handshake on `<sandbox>/v.sock`. Pause and resume are QMP
//! `stop`/`cont`. There is no power-off request: microvm has no i8042 for
//! Ctrl-Alt-Del and our kernel no ACPI for the power button, so the stop escalation
//! goes from the agent's shutdown straight to SIGTERM. Snapshots are not offered.

mod accel;
mod cmdline;
mod files;
mod launch;
mod qmp;
pub mod relay;
pub mod relay_proc;

use std::process::Child;
use std::time::Duration;

use super::{escalate, Capabilities, GuestChannel, OnSpawn, VmBackend, VmRef};
use crate::error::{Error, Result};
use crate::state_dir::Dir;
use crate::vmm::GuestSpec;

/// The virtio-console port the agent serves on (see kiln-agent's `server::serial`).
pub const PORT_NAME: &str = "kiln.agent";
/// QMP's answer time.
const QMP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the relay may take to exit at each step of [`relay_proc::reap`].
const RELAY_STOP_GRACE: Duration = Duration::from_secs(2);

pub struct Qemu;

fn qmp_do(vm: &VmRef, command: &str) -> Result<()> {
    qmp::execute(&files::qmp_sock(vm.dir), command, None, QMP_TIMEOUT)
        .map(drop)
        .map_err(|e| Error::Vmm {
            id: vm.id.into(),
            message: e.to_string(),
        })
}

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
    fn start(&self, id: &str, dir: &Dir, spec: &GuestSpec, spawned: OnSpawn) -> Result<Child> {
        launch::start(id, dir, spec, spawned)
    }
    fn request_poweroff(&self, vm: &VmRef) -> Result<()> {
        Err(Error::Unsupported(format!(
            "sandbox {}: QEMU microvm has no i8042 (Ctrl-Alt-Del) and the guest kernel no \
             ACPI (power button): no power-off request is available",
            vm.id
        )))
    }
    /// The shared escalation, then the relay: it exits by itself once QEMU has.
    fn stop(&self, vm: &VmRef) -> Result<&'static str> {
        let how = escalate(self, vm);
        relay_proc::reap(vm.dir);
        how
    }
    fn pause(&self, vm: &VmRef) -> Result<()> {
        qmp_do(vm, "stop")
    }
    fn resume(&self, vm: &VmRef) -> Result<()> {
        qmp_do(vm, "cont")
    }
    fn guest_channel_info(&self, vm: &VmRef) -> GuestChannel {
        GuestChannel::Serial {
            uds: vm.dir.vsock(),
            port_name: PORT_NAME.into(),
            relay_pid: relay_proc::running_pid(vm.dir),
        }
    }
}
