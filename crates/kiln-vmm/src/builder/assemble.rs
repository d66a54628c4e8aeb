//! The assembly a boot and a restore share: the buses with the legacy and virtio devices
//! attached ([`Devices::attach`]), then the device event loop and the vCPU threads
//! started and the [`Machine`] handed out ([`launch`]).

use std::io::Write;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use super::legacy::{self, Legacy};
use super::virtio::{self, VirtioSet};
use super::{device_err, Machine, RunningVm, StartError};
use crate::config::{Drive, VmConfig};
use crate::devices::bus::Bus;
use crate::devices::control::BootTimes;
use crate::devices::virtio::MmioTransport;
use crate::exit::{ExitReason, ExitSignal};
use crate::vstate::control::{self, VcpuControl, Want};
use crate::vstate::uffd::UffdMemory;
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vcpu_state::msr_index_list;

/// A KVM VM with its guest memory and vCPUs, ready for devices: prepared from the config
/// at boot, or loaded from a snapshot at restore.
pub struct VmParts {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub mem: GuestMemoryMmap,
    pub vcpus: Vec<Vcpu>,
}

/// Every device of the VM on its bus, with the exit signal and boot timer they report to.
pub struct Devices {
    exit: Arc<ExitSignal>,
    exit_rx: Receiver<ExitReason>,
    boot_times: Arc<Mutex<BootTimes>>,
    pio: Bus,
    mmio: Bus,
    pub legacy: Legacy,
    pub virtio: VirtioSet,
}

impl Devices {
    /// Attaches the legacy devices (console, i8042, control port) and the virtio devices
    /// (the drives in device order, the rng and, if configured, vsock). `start` is the
    /// instant the boot timer measures from.
    pub fn attach(
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        console: Option<Box<dyn Write + Send>>,
        start: Instant,
        drives: &[&Drive],
        cfg: &VmConfig,
    ) -> Result<Self, StartError> {
        let (exit, exit_rx) = ExitSignal::new();
        let exit = Arc::new(exit);
        let boot_times = Arc::new(Mutex::new(BootTimes::default()));
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let legacy = legacy::attach(vm, &mut pio, console, start, &boot_times, &exit)?;
        let virtio = virtio::attach(vm, mem, &mut mmio, drives, cfg)?;
        Ok(Self {
            exit,
            exit_rx,
            boot_times,
            pio,
            mmio,
            legacy,
            virtio,
        })
    }
}

/// Starts the device event loop and the vCPU threads (running, or parked until the first
/// resume with [`Want::Pause`]) and hands out the machine. `uffd` is the memory server of
/// guest memory restored with the Uffd backend.
pub fn launch(
    vm: VmParts,
    devices: Devices,
    want: Want,
    uffd: Option<UffdMemory>,
) -> Result<RunningVm, StartError> {
    let msrs = msr_index_list(&vm.kvm).map_err(device_err("MSR list"))?;
    let ctl = Arc::new(VcpuControl::new(vm.vcpus.len(), want));
    let Devices {
        exit,
        exit_rx,
        boot_times,
        pio,
        mmio,
        legacy,
        virtio,
    } = devices;
    spawn_threads(vm.vcpus, &pio, &mmio, &virtio.transports, &exit, &ctl, msrs)?;
    Ok(RunningVm {
        exit_rx,
        console_tail: legacy.console_tail,
        boot_times,
        machine: Machine {
            kvm: vm.kvm,
            vm: vm.vm,
            mem: vm.mem,
            vcpus: ctl,
            transports: virtio.transports,
            serial: legacy.serial,
            i8042: legacy.i8042,
            uffd,
        },
    })
}

/// Starts the device event loop and one thread per vCPU (each after the previous
/// succeeded; a failure here leaves the started threads parked or running, and the
/// caller exits the process).
fn spawn_threads(
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
                move || {
                    // Before the first guest instruction: KVM_RUN comes after this.
                    crate::seccomp::enter("vcpu");
                    vcpu.run(pio, mmio, exit, ctl, msrs)
                }
            })
            .map_err(device_err(format!("vcpu{i} thread")))?;
    }
    Ok(())
}
