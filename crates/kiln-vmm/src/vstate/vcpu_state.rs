//! A vCPU's complete architectural state, as saved in a snapshot: CPUID, every MSR KVM
//! can save (incl. TSC, TSC deadline and kvmclock), general and special registers,
//! FPU/SSE/AVX state (xsave), XCRs, debug registers, the local APIC, the MP state and
//! pending events. Restored in the order the KVM API needs (CPUID first, events last).

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// (index, value) of every MSR the host's KVM reported and let us read.
    pub msrs: Vec<(u32, u64)>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub vcpu_events: kvm_vcpu_events,
    /// The guest TSC frequency, when KVM reports it.
    pub tsc_khz: Option<u32>,
}

impl Clone for VcpuState {
    fn clone(&self) -> Self {
        Self {
            cpuid: self.cpuid.clone(),
            msrs: self.msrs.clone(),
            regs: self.regs,
            sregs: self.sregs,
            // kvm_xsave ends in a zero-length array, so it is not Clone; the 4 KiB region
            // is all KVM_GET_XSAVE fills.
            xsave: kvm_xsave {
                region: self.xsave.region,
                ..Default::default()
            },
            xcrs: self.xcrs,
            debug_regs: self.debug_regs,
            lapic: self.lapic,
            mp_state: self.mp_state,
            vcpu_events: self.vcpu_events,
            tsc_khz: self.tsc_khz,
        }
    }
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VcpuState {{ rip: {:#x}, .. }}", self.regs.rip)
    }
}

/// Why a vCPU's state could not be captured or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VcpuStateError {
    #[error("KVM {op}: {source}")]
    Kvm {
        op: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("{count} CPUID entries in the snapshot")]
    CpuidCount { count: usize },
    #[error("CPUID: {0:?}")]
    Cpuid(vmm_sys_util::fam::Error),
    #[error("{what}: {source:?}")]
    Msrs {
        what: &'static str,
        source: vmm_sys_util::fam::Error,
    },
}

fn err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuStateError {
    move |source| VcpuStateError::Kvm { op, source }
}

/// The MSRs to save: KVM's list of saved and emulated MSRs.
pub fn msr_index_list(kvm: &Kvm) -> Result<Vec<u32>, VcpuStateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(err("KVM_GET_MSR_INDEX_LIST"))?;
    Ok(list.as_slice().to_vec())
}

fn msr_batch(indexes: &[u32]) -> Result<Msrs, VcpuStateError> {
    let entries: Vec<kvm_msr_entry> = indexes
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|source| VcpuStateError::Msrs {
        what: "MSR list",
        source,
    })
}

/// Reads every MSR in `indexes` that KVM lets us read. KVM stops a batch at the first
/// MSR it refuses; that one is skipped and the rest are read again.
fn get_msrs(fd: &VcpuFd, indexes: &[u32]) -> Result<Vec<(u32, u64)>, VcpuStateError> {
    let mut out = Vec::with_capacity(indexes.len());
    let mut rest = indexes;
    while !rest.is_empty() {
        let mut batch = msr_batch(rest)?;
        let n = fd.get_msrs(&mut batch).map_err(err("KVM_GET_MSRS"))?;
        let n = n.min(rest.len());
        out.extend(batch.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        rest = rest.get(n + 1..).unwrap_or(&[]);
    }
    Ok(out)
}

impl VcpuState {
    /// Captures the state of a vCPU that is not running (its thread is parked or it has
    /// not started), with any pending I/O already completed.
    pub fn capture(fd: &VcpuFd, msr_indexes: &[u32]) -> Result<Self, VcpuStateError> {
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(err("KVM_GET_CPUID2"))?;
        Ok(Self {
            cpuid: cpuid.as_slice().to_vec(),
            // The MP state first: KVM_GET_MP_STATE settles pending APIC events.
            mp_state: fd.get_mp_state().map_err(err("KVM_GET_MP_STATE"))?,
            regs: fd.get_regs().map_err(err("KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(err("KVM_GET_SREGS"))?,
            xsave: fd.get_xsave().map_err(err("KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(err("KVM_GET_XCRS"))?,
            debug_regs: fd.get_debug_regs().map_err(err("KVM_GET_DEBUGREGS"))?,
            lapic: fd.get_lapic().map_err(err("KVM_GET_LAPIC"))?,
            msrs: get_msrs(fd, msr_indexes)?,
            vcpu_events: fd.get_vcpu_events().map_err(err("KVM_GET_VCPU_EVENTS"))?,
            tsc_khz: fd.get_tsc_khz().ok(),
        })
    }

    /// Loads this state into a freshly created vCPU.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), VcpuStateError> {
        if self.cpuid.is_empty() || self.cpuid.len() > KVM_MAX_CPUID_ENTRIES {
            return Err(VcpuStateError::CpuidCount {
                count: self.cpuid.len(),
            });
        }
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(VcpuStateError::Cpuid)?;
        fd.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
        if let Some(khz) = self.tsc_khz {
            if fd.get_tsc_khz().ok() != Some(khz) {
                // Best effort: hosts without TSC scaling keep their own rate.
                if let Err(e) = fd.set_tsc_khz(khz) {
                    tracing::warn!("restore: cannot set the guest TSC to {khz} kHz: {e}");
                }
            }
        }
        fd.set_mp_state(self.mp_state)
            .map_err(err("KVM_SET_MP_STATE"))?;
        fd.set_regs(&self.regs).map_err(err("KVM_SET_REGS"))?;
        fd.set_sregs(&self.sregs).map_err(err("KVM_SET_SREGS"))?;
        // SAFETY: the xsave area is a plain 4 KiB buffer of the size KVM_SET_XSAVE reads.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(err("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&self.xcrs).map_err(err("KVM_SET_XCRS"))?;
        fd.set_debug_regs(&self.debug_regs)
            .map_err(err("KVM_SET_DEBUGREGS"))?;
        fd.set_lapic(&self.lapic).map_err(err("KVM_SET_LAPIC"))?;
        self.restore_msrs(fd)?;
        fd.set_vcpu_events(&self.vcpu_events)
            .map_err(err("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }

    fn restore_msrs(&self, fd: &VcpuFd) -> Result<(), VcpuStateError> {
        let mut rest: &[(u32, u64)] = &self.msrs;
        while !rest.is_empty() {
            let entries: Vec<kvm_msr_entry> = rest
                .iter()
                .map(|&(index, data)| kvm_msr_entry {
                    index,
                    data,
                    ..Default::default()
                })
                .collect();
            let batch = Msrs::from_entries(&entries).map_err(|source| VcpuStateError::Msrs {
                what: "MSRs",
                source,
            })?;
            let n = fd.set_msrs(&batch).map_err(err("KVM_SET_MSRS"))?;
            if n < rest.len() {
                tracing::warn!("restore: KVM refused MSR {:#x}; skipped", rest[n].0);
            }
            rest = rest.get(n + 1..).unwrap_or(&[]);
        }
        Ok(())
    }
}
