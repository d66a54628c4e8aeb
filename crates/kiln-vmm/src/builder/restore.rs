//! Building a VM from a snapshot: guest memory mapped from the memory file (private
//! copy-on-write, or served by userfaultfd), KVM VM and vCPU state loaded, the same
//! devices attached as at boot and their saved state applied. The vCPU threads start
//! parked; the VM runs on the first resume.
//!
//! A restored VM gets its own vsock socket and drive files through the overrides (a
//! fork child must not share its parent's); everything else comes from the snapshot.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::assemble::{self, Devices, VmParts};
use super::{RunningVm, StartError};
use crate::config::{drive, ConfigError, VmConfig};
use crate::devices::i8042::I8042StateError;
use crate::devices::persist::Persist;
use crate::devices::serial::SerialStateError;
use crate::devices::virtio::TransportStateError;
use crate::snapshot::format::{DevicesState, SnapshotState};
use crate::vstate::control::Want;
use crate::vstate::mem_file::{map_private, MemFileError};
use crate::vstate::uffd::{map_uffd, UffdMemory};
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vcpu_state::VcpuStateError;
use crate::vstate::vm;
use crate::vstate::vm_state::VmStateError;

/// How guest memory is backed after the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemBackend {
    /// MAP_PRIVATE of the memory file: pages load lazily from the page cache, which every
    /// VM restored from the same file shares; writes are private copies.
    File,
    /// Anonymous memory filled by a userfaultfd handler from the file, after prefetching
    /// the recorded working set.
    Uffd {
        prefetch: Option<PathBuf>,
        record: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub mem_path: PathBuf,
    pub backend: MemBackend,
    /// A new vsock `uds_path` (required when the snapshot has vsock and its socket
    /// path is still in use).
    pub vsock_uds_path: Option<String>,
    /// New backing files by drive id.
    pub drives: BTreeMap<String, String>,
    /// New TAP names (`host_dev_name`) by iface_id (`network_overrides`).
    pub nets: BTreeMap<String, String>,
}

/// Why a snapshot's saved state could not be loaded into the new VM.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Memory(#[from] MemFileError),
    #[error(transparent)]
    Vm(#[from] VmStateError),
    #[error("vCPU {index}: {source}")]
    Vcpu {
        index: usize,
        source: VcpuStateError,
    },
    #[error(transparent)]
    Serial(#[from] SerialStateError),
    #[error(transparent)]
    I8042(#[from] I8042StateError),
    #[error("{saved} virtio devices saved, {configured} configured; the snapshot is damaged")]
    DeviceCount { saved: usize, configured: usize },
    #[error("virtio device {index}: {source}")]
    Virtio {
        index: usize,
        source: TransportStateError,
    },
}

/// The snapshot's configuration with the overrides applied and validated.
pub fn restored_config(
    state: &SnapshotState,
    opts: &RestoreOptions,
) -> Result<VmConfig, StartError> {
    let mut cfg = state.config.clone();
    for (id, path) in &opts.drives {
        let Some(d) = cfg.drives.iter_mut().find(|d| &d.drive_id == id) else {
            return Err(ConfigError::new(format!(
                "drive override for '{id}', which the snapshot does not have"
            ))
            .into());
        };
        d.path_on_host = path.clone();
    }
    for d in &cfg.drives {
        d.validate()?;
    }
    for (id, tap) in &opts.nets {
        let Some(n) = cfg
            .network_interfaces
            .iter_mut()
            .find(|n| &n.iface_id == id)
        else {
            return Err(ConfigError::new(format!(
                "network override for '{id}', which the snapshot does not have"
            ))
            .into());
        };
        n.host_dev_name = tap.clone();
    }
    for n in &cfg.network_interfaces {
        n.validate()?;
    }
    crate::config::net::check_unique(&cfg.network_interfaces)?;
    if let (Some(v), Some(path)) = (cfg.vsock.as_mut(), &opts.vsock_uds_path) {
        v.uds_path = path.clone();
    } else if opts.vsock_uds_path.is_some() {
        return Err(ConfigError::new("vsock override for a snapshot without vsock").into());
    }
    if let Some(v) = &cfg.vsock {
        v.validate()?;
    }
    Ok(cfg)
}

/// Builds the VM of `state` (see the module docs); the vCPUs wait for a resume.
pub fn restore(
    state: &SnapshotState,
    opts: &RestoreOptions,
    console: Option<Box<dyn Write + Send>>,
) -> Result<(RunningVm, VmConfig), StartError> {
    let start = Instant::now();
    let cfg = restored_config(state, opts)?;
    let (mem, uffd) = map_memory(state, opts)?;
    let vm = load_vm(state, mem)?;
    let drives = drive::device_order(&cfg.drives);
    let devices = Devices::attach(&vm.vm, &vm.mem, console, start, &drives, &cfg)?;
    load_devices(&devices, &state.devices)?;
    let running = assemble::launch(vm, devices, Want::Pause, uffd)?;
    tracing::debug!(us = start.elapsed().as_micros() as u64, "restored");
    Ok((running, cfg))
}

/// Maps the memory file as guest memory with the snapshot's layout, through the
/// requested backend.
fn map_memory(
    state: &SnapshotState,
    opts: &RestoreOptions,
) -> Result<(GuestMemoryMmap, Option<UffdMemory>), RestoreError> {
    let ranges: Vec<_> = state
        .memory_ranges
        .iter()
        .map(|&(a, l)| (GuestAddress(a), l as usize))
        .collect();
    Ok(match &opts.backend {
        MemBackend::File => (map_private(&opts.mem_path, &ranges)?, None),
        MemBackend::Uffd { prefetch, record } => {
            let (mem, u) = map_uffd(
                &opts.mem_path,
                &ranges,
                prefetch.as_deref(),
                record.as_deref(),
            )?;
            (mem, Some(u))
        }
    })
}

/// A new KVM VM over `mem` with the saved VM state and one vCPU per saved vCPU state.
fn load_vm(state: &SnapshotState, mem: GuestMemoryMmap) -> Result<VmParts, StartError> {
    let (kvm, vmfd) = vm::create(&mem)?;
    state.vm.restore(&vmfd).map_err(RestoreError::Vm)?;
    let mut vcpus = Vec::with_capacity(state.vcpus.len());
    for (index, s) in state.vcpus.iter().enumerate() {
        let vcpu = Vcpu::new(&vmfd, index as u8)?;
        s.restore(vcpu.fd())
            .map_err(|source| RestoreError::Vcpu { index, source })?;
        vcpus.push(vcpu);
    }
    Ok(VmParts {
        kvm,
        vm: vmfd,
        mem,
        vcpus,
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Applies the saved device states to the freshly attached devices (legacy first, then
/// each virtio transport in attach order), then lets every transport do its post-restore
/// work.
fn load_devices(devices: &Devices, saved: &DevicesState) -> Result<(), RestoreError> {
    lock(&devices.legacy.serial).restore(&saved.serial)?;
    lock(&devices.legacy.i8042).restore(&saved.i8042)?;
    let transports = &devices.virtio.transports;
    if transports.len() != saved.virtio.len() {
        return Err(RestoreError::DeviceCount {
            saved: saved.virtio.len(),
            configured: transports.len(),
        });
    }
    for (index, (t, s)) in transports.iter().zip(&saved.virtio).enumerate() {
        lock(t)
            .restore(s)
            .map_err(|source| RestoreError::Virtio { index, source })?;
    }
    for t in transports {
        lock(t).after_restore();
    }
    Ok(())
}
