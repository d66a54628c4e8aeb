//! vCPUs: boot state set-up and the run loop that turns exits into bus accesses.

use std::sync::Arc;

use kvm_bindings::CpuId;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::control::{self, CaptureError, VcpuControl, Want};
use super::vcpu_state::VcpuState;
use super::vm::{kvm_err, KvmError};
use crate::arch::{cpuid, msrs, regs};
use crate::devices::bus::Bus;
use crate::exit::{ExitReason, ExitSignal};
use crate::metrics::{self, VcpuMetrics, METRICS};

/// Error configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    BootMemory(#[from] regs::BootMemoryError),
    #[error("KVM accepted only {set} of {want} boot MSRs")]
    Msrs { set: usize, want: usize },
}

pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
}

impl Vcpu {
    pub fn new(vm: &VmFd, index: u8) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        Ok(Self { fd, index })
    }

    /// CPUID, MSRs, registers for a 64-bit entry at `entry`, FPU and LAPIC LINT pins.
    pub fn configure(
        &self,
        supported: &CpuId,
        count: u8,
        tsc_deadline: bool,
        mem: &GuestMemoryMmap,
        entry: u64,
    ) -> Result<(), VcpuError> {
        let mut cpuid = supported.clone();
        cpuid::configure(&mut cpuid, self.index, count, tsc_deadline);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(kvm_err("KVM_SET_CPUID2"))?;
        let boot_msrs = msrs::boot_msrs();
        let set = self
            .fd
            .set_msrs(&boot_msrs)
            .map_err(kvm_err("KVM_SET_MSRS"))?;
        if set != boot_msrs.as_slice().len() {
            return Err(VcpuError::Msrs {
                set,
                want: boot_msrs.as_slice().len(),
            });
        }
        self.fd
            .set_regs(&regs::boot_regs(entry))
            .map_err(kvm_err("KVM_SET_REGS"))?;
        let sregs = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        self.fd
            .set_sregs(&regs::boot_sregs(mem, sregs)?)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(kvm_err("KVM_SET_FPU"))?;
        let lapic = self.fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        self.fd
            .set_lapic(&regs::configure_lint(lapic))
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        Ok(())
    }

    /// The vCPU's KVM fd (state capture and restore).
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Completes a pending port/MMIO operation (KVM_RUN with immediate_exit set), then
    /// captures the state and parks until the VMM resumes the vCPUs.
    fn park(&mut self, ctl: &VcpuControl, msrs: &[u32]) {
        self.fd.set_kvm_immediate_exit(1);
        match self.fd.run() {
            Err(e) if e.errno() == libc::EINTR => {}
            other => tracing::warn!(vcpu = self.index, "completing pending I/O: {other:?}"),
        }
        self.fd.set_kvm_immediate_exit(0);
        let vcpu = usize::from(self.index);
        let state =
            VcpuState::capture(&self.fd, msrs).map_err(|source| CaptureError { vcpu, source });
        ctl.park(vcpu, state);
        // A kick that raced with the resume would make the next KVM_RUN return at once.
        self.fd.set_kvm_immediate_exit(0);
    }

    /// Runs until the guest stops the machine or KVM fails; reports through the exit
    /// signal. Port I/O and MMIO exits are dispatched to `pio` and `mmio`. `ctl` pauses
    /// and resumes the vCPU (see [`super::control`]).
    pub fn run(
        mut self,
        pio: Bus,
        mmio: Bus,
        exit: Arc<ExitSignal>,
        ctl: Arc<VcpuControl>,
        msrs: Arc<Vec<u32>>,
    ) {
        control::register_kvm_run(self.fd.get_kvm_run());
        ctl.register_thread(usize::from(self.index));
        let counters = METRICS.vcpu(usize::from(self.index));
        let reason = loop {
            if ctl.want() == Want::Pause {
                self.park(&ctl, &msrs);
                continue;
            }
            let exit = self.fd.run();
            count_exit(counters, &exit);
            match exit {
                Ok(VcpuExit::IoOut(port, data)) => {
                    pio.write(u64::from(port), data);
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    pio.read(u64::from(port), data);
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    mmio.read(addr, data);
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    mmio.write(addr, data);
                }
                // With the in-kernel LAPIC, HLT is handled by KVM; a stray one is harmless.
                Ok(VcpuExit::Hlt) => {}
                Ok(VcpuExit::Shutdown) => break ExitReason::Reset,
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    tracing::info!(vcpu = self.index, kind, "guest system event");
                    break ExitReason::Reset;
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    break ExitReason::Error(format!(
                        "vCPU {} could not enter the guest (hardware reason {reason:#x}, cpu {cpu})",
                        self.index
                    ))
                }
                Ok(VcpuExit::InternalError) => {
                    break ExitReason::Error(format!(
                        "KVM internal error on vCPU {} (the host's KVM may not be able to run this guest)",
                        self.index
                    ))
                }
                Ok(other) => {
                    break ExitReason::Error(format!(
                        "unhandled exit on vCPU {}: {other:?}",
                        self.index
                    ))
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                }
                Err(e) => break ExitReason::Error(format!("KVM_RUN on vCPU {}: {e}", self.index)),
            }
        };
        control::register_kvm_run(std::ptr::null_mut());
        exit.exit(reason);
    }
}

/// Counts one exit by kind (a relaxed add); an interrupted KVM_RUN is not an exit.
fn count_exit(m: &VcpuMetrics, exit: &Result<VcpuExit<'_>, kvm_ioctls::Error>) {
    let counter = match exit {
        Ok(VcpuExit::IoIn(..)) => &m.io_in,
        Ok(VcpuExit::IoOut(..)) => &m.io_out,
        Ok(VcpuExit::MmioRead(..)) => &m.mmio_read,
        Ok(VcpuExit::MmioWrite(..)) => &m.mmio_write,
        Ok(VcpuExit::Hlt) => &m.hlt,
        Ok(_) => &m.other,
        Err(_) => return,
    };
    metrics::inc(counter);
}

/// KVM's supported CPUID set, queried once per VM.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, KvmError> {
    kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))
}
