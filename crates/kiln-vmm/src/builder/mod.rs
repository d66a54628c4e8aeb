//! Turns a [`ValidConfig`] into a running VM: memory, KVM VM, kernel and boot
//! structures, devices, the device event loop and one thread per vCPU; or, from a
//! snapshot, the same machine with its saved state loaded ([`restore`]).
//!
//! Both read as a short list of steps over the same assembly ([`assemble`]): the buses
//! with the legacy and virtio devices attached, then the threads started and the
//! [`Machine`] handed out.
//!
//! Nothing here outlives a failure: every resource is owned by a local until the VM
//! starts, so an error drops them all (no thread is started before the last fallible
//! step but the vCPU spawns themselves).

mod assemble;
mod boot;
mod legacy;
mod prepare;
mod restore;
mod virtio;

pub use crate::vstate::machine::Machine;
pub use prepare::{prepare, Prepared};
pub use restore::{restore, MemBackend, RestoreError, RestoreOptions};

use std::io::Write;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::{drive, ConfigError, ValidConfig};
use crate::devices::bus::BusError;
use crate::devices::control::BootTimes;
use crate::devices::serial::ConsoleTail;
use crate::devices::virtio::{BlockError, TapError, VsockError};
use crate::exit::ExitReason;
use crate::kernel::LoadError;
use crate::vstate::control::Want;
use crate::vstate::memory;
use crate::vstate::vcpu::VcpuError;
use crate::vstate::vcpu_state::VcpuStateError;
use crate::vstate::vm::KvmError;

/// Why `InstanceStart` (or a snapshot load) failed. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error("{0}; is /dev/kvm present and readable and writable by this user?")]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot set up vCPU: {0}")]
    Vcpu(#[from] VcpuError),
    /// A drive could not be attached: its image, or the virtio transport it sits on.
    #[error("cannot set up device {what}: {source}")]
    Drive {
        drive_id: String,
        what: String,
        source: DeviceError,
    },
    /// Any other device (or the threads that serve them).
    #[error("cannot set up device {what}: {source}")]
    Device { what: String, source: DeviceError },
    #[error("cannot write boot structures to guest memory: {0}")]
    BootMemory(#[from] vm_memory::GuestMemoryError),
    /// The snapshot's saved state was refused or could not be loaded.
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// What went wrong setting up one device (see [`StartError::Device`]).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Kvm(#[from] kvm_ioctls::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(transparent)]
    Vsock(#[from] VsockError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Msrs(#[from] VcpuStateError),
    #[error("{0:?}")]
    EventLoop(event_manager::Error),
    #[error("too many devices: at most {max} virtio devices fit")]
    TooMany { max: u32 },
}

/// Maps a setup error of device `what` to [`StartError::Device`].
pub(crate) fn device_err<E: Into<DeviceError>>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> StartError {
    let what = what.into();
    move |e| StartError::Device {
        what,
        source: e.into(),
    }
}

/// A started VM: what the API and the exit monitor need to reach.
pub struct RunningVm {
    pub exit_rx: Receiver<ExitReason>,
    pub console_tail: ConsoleTail,
    pub boot_times: Arc<Mutex<BootTimes>>,
    /// Must live as long as the VM runs.
    pub machine: Machine,
}

/// Builds and starts the VM described by `cfg` (validated once, by the caller). `start`
/// is the InstanceStart instant the boot timer measures from; `console` receives the
/// serial output (None: discarded, but the last bytes are still kept for panic reports).
pub fn start(
    cfg: &ValidConfig,
    prepared: Option<Prepared>,
    console: Option<Box<dyn Write + Send>>,
    start: Instant,
) -> Result<RunningVm, StartError> {
    let boot = cfg.boot_source();
    let drives = drive::device_order(&cfg.drives);

    let p = match prepared.filter(|p| p.matches(cfg)) {
        Some(p) => p,
        None => prepare(cfg)?,
    };
    tracing::debug!(
        us = start.elapsed().as_micros() as u64,
        "memory, VM, kernel, vCPUs ready"
    );
    let devices = assemble::Devices::attach(&p.vm, &p.mem, console, start, &drives, cfg)?;
    boot::write(cfg, boot, &drives, &devices.virtio.cmdline_args, &p)?;
    tracing::debug!(us = start.elapsed().as_micros() as u64, "devices ready");

    let vm = assemble::launch(p.into_vm(), devices, Want::Run, None)?;
    tracing::debug!(us = start.elapsed().as_micros() as u64, "vCPUs started");
    Ok(vm)
}
