//! `VmBackend`: one trait over the virtual machine monitors kiln can run a sandbox on.
//!
//! | backend | VMM | guest channel | pause | snapshot/restore/fork |
//! | --- | --- | --- | --- | --- |
//! | `kiln` (default) | `kiln-vmm` | vsock | yes | yes |
//! | `firecracker` | a `firecracker` binary (`$KILN_FIRECRACKER`), same API driver | vsock | yes | no |
//! | `qemu` | `qemu-system-x86_64 -M microvm` over QMP | virtio-console + relay | yes | no |
//!
//! A backend starts and stops one VM per sandbox folder ([`Dir`]); the sandbox's
//! lifecycle state lives in the state store, not here. Every backend exposes the guest
//! agent the same way: a unix socket that speaks Firecracker's hybrid-vsock handshake
//! (`CONNECT <port>\n` → `OK <n>\n`), so [`crate::agent::AgentAddr`] works unchanged.

mod escalate;
pub(crate) mod fc_launch;
pub mod firecracker;
pub mod jail;
pub mod kiln;
pub mod qemu;
pub(crate) mod switch;

use std::path::{Path, PathBuf};
use std::process::Child;

use serde::Serialize;

pub use escalate::{escalate, vm_alive, vmms_of};

use crate::error::{Error, Result};
use crate::state_dir::Dir;
use crate::vmm::GuestSpec;

/// What a backend can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub pause_resume: bool,
    pub snapshots: bool,
    pub vsock: bool,
    pub tap_networking: bool,
    pub fork: bool,
}

/// One VM a backend runs: the sandbox id, its folder and the VMM's pid.
#[derive(Debug, Clone, Copy)]
pub struct VmRef<'a> {
    pub id: &'a str,
    pub dir: &'a Dir,
    pub pid: u32,
}

/// Whether a VM's process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    Running,
    Exited,
}

/// Which log [`VmBackend::logs`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// The guest's serial console.
    Console,
    /// The VMM's own log (stderr).
    Vmm,
}

/// How the guest agent is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestChannel {
    /// The VMM's vsock device; `uds` is its host socket (hybrid-vsock handshake).
    Vsock { uds: PathBuf, port: u32 },
    /// A virtio-console port in the guest, multiplexed by a relay process that serves
    /// the same handshake on `uds`.
    Serial {
        uds: PathBuf,
        port_name: String,
        relay_pid: Option<u32>,
    },
}

/// How a restored VM's memory is backed (see `kiln_vmm::builder::MemBackend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryBackend {
    /// Private copy-on-write mapping of the memory file (the page cache is shared by
    /// every sandbox restored from it).
    #[default]
    File,
    /// userfaultfd, with the snapshot's recorded working set loaded first.
    Uffd,
}

/// What a restore reads and how its memory is backed.
#[derive(Debug, Clone)]
pub struct RestoreRequest<'a> {
    /// The snapshot's `state.json`.
    pub state_path: &'a Path,
    pub mem_path: &'a Path,
    /// Drive ids whose copies were placed in the sandbox folder ([`Dir::disk`]).
    pub drives: Vec<String>,
    pub memory: MemoryBackend,
    pub working_set: Option<&'a Path>,
    /// Record a working set (Uffd, none saved yet).
    pub record_working_set: bool,
    /// The network namespace the VMM runs in (the snapshot's NIC finds its TAP, of the
    /// same name in every sandbox, there).
    pub netns: Option<String>,
}

/// Called with the VMM's pid right after it is spawned, before it is configured or runs
/// the guest: the caller records it (with its start time), so a creator killed from then
/// on leaves a VMM that reconcile can find and end. If it fails, the VMM is killed and
/// the start fails with its error.
pub type OnSpawn<'a> = &'a mut dyn FnMut(u32) -> Result<()>;

/// One virtual machine monitor kiln can run sandboxes on.
pub trait VmBackend: Send + Sync {
    /// `kiln`, `firecracker` or `qemu`.
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;

    /// Boots `spec` for sandbox `id` in `dir`: the VMM runs in its own session with its
    /// log in `dir.vmm_log()` and the console in `dir.console_log()`, and this returns
    /// once the guest agent answers on [`VmBackend::guest_channel_info`]. On error
    /// everything it started is gone (the caller removes the folder), and the error is
    /// `BootFailed` with the stage from `dir.boot_error()` where the VMM wrote one.
    /// `spawned` is told the VMM's pid first ([`OnSpawn`]).
    fn start(&self, id: &str, dir: &Dir, spec: &GuestSpec, spawned: OnSpawn) -> Result<Child>;

    /// Asks the guest's kernel to power off without the agent (step 2 of the stop
    /// escalation): Ctrl-Alt-Del or the ACPI power button.
    fn request_poweroff(&self, vm: &VmRef) -> Result<()>;

    /// Stops the VM: agent shutdown → [`VmBackend::request_poweroff`] → SIGTERM →
    /// SIGKILL, each with a bounded wait; returns the step that ended it.
    fn stop(&self, vm: &VmRef) -> Result<&'static str> {
        escalate(self, vm)
    }

    fn pause(&self, vm: &VmRef) -> Result<()>;
    fn resume(&self, vm: &VmRef) -> Result<()>;

    /// Writes a full snapshot of the paused VM into `dest` (state.json, memory.bin and
    /// copies of the writable drives).
    fn snapshot(&self, vm: &VmRef, dest: &Path) -> Result<()> {
        let _ = dest;
        Err(unsupported(self.name(), "snapshots", vm.id))
    }

    /// Starts a VM for sandbox `id` in `dir` from a snapshot; returns once the VMM has
    /// loaded it (the caller then reidentifies the agent). `spawned` as for `start`.
    fn restore(
        &self,
        id: &str,
        dir: &Dir,
        req: &RestoreRequest,
        spawned: OnSpawn,
    ) -> Result<Child> {
        let _ = (dir, req, spawned);
        Err(unsupported(self.name(), "restore", id))
    }

    /// Whether the VM's process runs (pid alive, not a zombie, and its command line
    /// names this sandbox's folder, so a reused pid is not mistaken for it).
    fn status(&self, vm: &VmRef) -> VmStatus {
        if vm_alive(vm.pid, vm.dir) {
            VmStatus::Running
        } else {
            VmStatus::Exited
        }
    }

    fn logs(&self, vm: &VmRef, kind: LogKind) -> PathBuf {
        match kind {
            LogKind::Console => vm.dir.console_log(),
            LogKind::Vmm => vm.dir.vmm_log(),
        }
    }

    fn guest_channel_info(&self, vm: &VmRef) -> GuestChannel;
}

/// `Unsupported` naming the backend and the operation.
pub fn unsupported(backend: &str, what: &str, id: &str) -> Error {
    Error::UnsupportedByBackend {
        id: id.into(),
        backend: backend.into(),
        operation: what.into(),
    }
}

/// The names [`get`] accepts.
pub const NAMES: [&str; 3] = ["kiln", "firecracker", "qemu"];

/// The backend called `name`.
pub fn get(name: &str) -> Result<&'static dyn VmBackend> {
    match name {
        "kiln" => Ok(&kiln::KilnVmm),
        "firecracker" => Ok(&firecracker::Firecracker),
        "qemu" => Ok(&qemu::Qemu),
        other => Err(Error::InvalidInput(format!(
            "backend {other:?}: use one of {}",
            NAMES.join(", ")
        ))),
    }
}
