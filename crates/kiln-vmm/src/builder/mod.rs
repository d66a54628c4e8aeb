//! Turns a [`ValidConfig`] into a running VM: memory, KVM VM, kernel and boot
//! structures, devices, the device event loop and one thread per vCPU.
//!
//! Nothing here outlives a failure: every resource is owned by a local until the VM
//! starts, so an error drops them all (no thread is started before the last fallible
//! step but the vCPU spawns themselves).

mod legacy;
mod prepare;
mod restore;
mod virtio;

pub use prepare::{prepare, Prepared};
pub use restore::{restore, MemBackend, RestoreOptions};

use std::io::Write;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::{boot_params, layout, mptable};
use crate::config::{drive, ConfigError, ValidConfig};
use crate::devices::bus::Bus;
use crate::devices::control::BootTimes;
use crate::devices::i8042::I8042;
use crate::devices::serial::{ConsoleTail, SerialDevice};
use crate::devices::virtio::MmioTransport;
use crate::exit::{ExitReason, ExitSignal};
use crate::kernel::LoadError;
use crate::snapshot::uffd::UffdMemory;
use crate::vstate::control::{self, VcpuControl, Want};
use crate::vstate::memory;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vcpu::VcpuError;
use crate::vstate::vcpu_state::msr_index_list;
use crate::vstate::vm::KvmError;

/// Why `InstanceStart` failed. Each message says what to fix.
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
    #[error("cannot set up device {what}: {msg}")]
    Device { what: String, msg: String },
    #[error("cannot write boot structures to guest memory: {0}")]
    BootMemory(#[from] vm_memory::GuestMemoryError),
}

pub(crate) fn device_err<E: std::fmt::Display>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> StartError {
    let what = what.into();
    move |e| StartError::Device {
        what,
        msg: e.to_string(),
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

/// The KVM handles, guest memory and devices of a running VM: what pause, resume and
/// snapshots work on.
pub struct Machine {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub mem: GuestMemoryMmap,
    pub vcpus: Arc<VcpuControl>,
    pub transports: Vec<Arc<Mutex<MmioTransport>>>,
    pub serial: Arc<Mutex<SerialDevice>>,
    pub i8042: Arc<Mutex<I8042>>,
    /// The userfaultfd memory server of a VM restored with the Uffd backend.
    pub uffd: Option<UffdMemory>,
}

/// Starts the device event loop and one thread per vCPU (each after the previous
/// succeeded; a failure here leaves the started threads parked or running, and the
/// caller exits the process).
pub(crate) fn spawn_threads(
    vcpus: Vec<Vcpu>,
    pio: &Bus,
    mmio: &Bus,
    transports: &[Arc<Mutex<MmioTransport>>],
    exit: &Arc<ExitSignal>,
    ctl: &Arc<VcpuControl>,
    msrs: Vec<u32>,
) -> Result<(), StartError> {
    virtio::spawn_event_loop(transports.to_vec(), exit.clone())?;
    crate::metrics::METRICS.set_vcpu_count(vcpus.len());
    control::install_kick_handler().map_err(device_err("vCPU kick signal"))?;
    let msrs = Arc::new(msrs);
    for (i, vcpu) in vcpus.into_iter().enumerate() {
        std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn({
                let (pio, mmio, exit) = (pio.clone(), mmio.clone(), exit.clone());
                let (ctl, msrs) = (ctl.clone(), msrs.clone());
                move || vcpu.run(pio, mmio, exit, ctl, msrs)
            })
            .map_err(device_err(format!("vcpu{i} thread")))?;
    }
    Ok(())
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

    let mem_size = cfg.machine_config.mem_size_mib << 20;
    let Prepared {
        kvm,
        vm: vmfd,
        mem,
        kernel,
        initrd,
        vcpus,
        ..
    } = match prepared.filter(|p| p.matches(cfg)) {
        Some(p) => p,
        None => prepare(cfg)?,
    };
    tracing::debug!(
        us = start.elapsed().as_micros() as u64,
        "memory, VM, kernel, vCPUs ready"
    );

    let (exit, exit_rx) = ExitSignal::new();
    let exit = Arc::new(exit);
    let boot_times = Arc::new(Mutex::new(BootTimes::default()));
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let legacy = legacy::attach(&vmfd, &mut pio, console, start, &boot_times, &exit)?;
    let virtio = virtio::attach(&vmfd, &mem, &mut mmio, &drives, cfg.vsock.as_ref())?;

    let mut cmdline = boot.boot_args().to_string();
    for arg in &virtio.cmdline_args {
        cmdline.push(' ');
        cmdline.push_str(arg);
    }
    if let Some(root) = drives.first().filter(|d| d.is_root_device) {
        let mode = if root.is_read_only { "ro" } else { "rw" };
        cmdline.push_str(&format!(" root=/dev/vda {mode}"));
    }
    if cmdline.len() >= layout::CMDLINE_MAX_SIZE {
        return Err(ConfigError::new(format!(
            "the kernel command line with kiln's device arguments is {} bytes; the limit is {}: shorten boot_args",
            cmdline.len(),
            layout::CMDLINE_MAX_SIZE - 1
        ))
        .into());
    }
    let mut cmdline_bytes = cmdline.into_bytes();
    cmdline_bytes.push(0);
    mem.write_slice(&cmdline_bytes, GuestAddress(layout::CMDLINE_START))?;

    let count = cfg.machine_config.vcpu_count;
    mem.write_slice(
        &mptable::build(layout::MPTABLE_START, count),
        GuestAddress(layout::MPTABLE_START),
    )?;
    let zero_page = boot_params::build(
        mem_size,
        cmdline_bytes.len() - 1,
        initrd,
        kernel.setup_header,
    );
    mem.write_obj(zero_page, GuestAddress(layout::ZERO_PAGE_START))?;

    tracing::debug!(us = start.elapsed().as_micros() as u64, "devices ready");
    let msrs = msr_index_list(&kvm).map_err(device_err("MSR list"))?;
    let ctl = Arc::new(VcpuControl::new(vcpus.len(), Want::Run));
    spawn_threads(vcpus, &pio, &mmio, &virtio.transports, &exit, &ctl, msrs)?;

    tracing::debug!(us = start.elapsed().as_micros() as u64, "vCPUs started");
    Ok(RunningVm {
        exit_rx,
        console_tail: legacy.console_tail,
        boot_times,
        machine: Machine {
            kvm,
            vm: vmfd,
            mem,
            vcpus: ctl,
            transports: virtio.transports,
            serial: legacy.serial,
            i8042: legacy.i8042,
            uffd: None,
        },
    })
}
